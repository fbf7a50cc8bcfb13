"""How reasoning steps are delimited and where the final answer sits."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class StepFormat:
    """Step delimiter and answer patterns.

    A sampled step ends right after ``delimiter``; a step matching any of
    ``answer_patterns`` (group 1 = the answer) is terminal.
    """

    delimiter: str = "\n"
    answer_patterns: tuple[str, ...] = (r"The answer is:?\s*(.+?)\s*(?:ки)?\s*\.?\s*$",)

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ValueError("StepFormat.delimiter must be a non-empty string")
        compiled = []
        for p in self.answer_patterns:
            try:
                compiled.append(re.compile(p, re.MULTILINE))
            except re.error as e:
                raise ValueError(f"answer pattern {p!r} is not a valid regex: {e}") from e
            if compiled[-1].groups < 1:
                raise ValueError(f"answer pattern {p!r} needs a capturing group for the answer")
        # compiled once: the decode loop checks every finished step (re.search's cache lookup costs more)
        object.__setattr__(self, "_compiled", tuple(compiled))

    def extract_answer(self, step_text: str) -> str | None:
        text = step_text.strip()
        for pattern in self._compiled:
            m = pattern.search(text)
            if m:
                return m.group(1).strip()
        return None

    @classmethod
    def preset(cls, name: str) -> StepFormat:
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown step format {name!r}; choose one of {sorted(PRESETS)}") from None


_BOXED = r"\\boxed\{(.+)\}"
PRESETS: dict[str, StepFormat] = {
    # The paper's (Math-Shepherd / MetaMath) format: "Step k: ... ки" lines, last "The answer is: X ки".
    "paper": StepFormat("\n", (r"The answer is:?\s*(.+?)\s*(?:ки)?\s*\.?\s*$",)),
    # One step per line (the built-in task).
    "newline": StepFormat("\n", (r"The answer is:?\s*(.+?)\s*\.?\s*$",)),
    # Paragraph steps, as instruct models write them; "The answer is" or \boxed{} ends a solution.
    "paragraph": StepFormat("\n\n", (r"[Tt]he (?:final )?answer is:?\s*(.+?)\s*\.?\s*$", _BOXED)),
}
