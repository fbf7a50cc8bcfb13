"""How reasoning steps are delimited and which answer markers end a solution."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .answers import check_markers, extract_answer


@dataclass(frozen=True)
class StepFormat:
    """Step delimiter and answer markers.

    A sampled step ends right after ``delimiter``; a step in which ``treesearch.answers`` finds
    an answer stated with one of ``answer_markers`` is terminal, and that is its answer. The
    extractor is the grader's too, so both read the same answer from the same text.
    """

    delimiter: str = "\n"
    answer_markers: tuple[str, ...] = ("answer_is",)

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ValueError("StepFormat.delimiter must be a non-empty string")
        object.__setattr__(self, "answer_markers", tuple(self.answer_markers))
        check_markers(self.answer_markers)

    def extract_answer(self, step_text: str) -> str | None:
        return _step_answer(step_text, self.answer_markers)

    @classmethod
    def preset(cls, name: str) -> StepFormat:
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown step format {name!r}; choose one of {sorted(PRESETS)}") from None


PRESETS: dict[str, StepFormat] = {
    # The paper's (Math-Shepherd / MetaMath) format: "Step k: ... ки" lines, last "The answer is: X ки".
    "paper": StepFormat("\n", ("answer_is",)),
    # One step per line (the built-in task).
    "newline": StepFormat("\n", ("answer_is",)),
    # Paragraph steps, as instruct models write them; "The answer is", "Final Answer:" or \boxed{} ends a solution.
    "paragraph": StepFormat("\n\n", ("answer_is", "final_answer", "boxed")),
}


@lru_cache(maxsize=1 << 16)
def _step_answer(text: str, markers: tuple[str, ...]) -> str | None:
    """Memoised: the policy reads a sampled step's answer, the Runner the same step's again, and
    a trained policy's siblings often repeat a step."""
    return extract_answer(text, markers)
