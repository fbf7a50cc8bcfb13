"""A scripted policy and PRM: deterministic stand-ins for models, for tests and docs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .protocols import Chain, ChainScores, ExpandOutput, ExpandRequest, StepSample
from .step_format import StepFormat

#: (question, steps so far, sample index within the request, request seed) -> next step text
StepScript = Callable[[str, tuple[str, ...], int, int], str]


@dataclass
class ScriptedPolicy:
    """Samples steps from a Python function; one token per character.

    Records every request it served in ``calls`` so tests can check batching.
    """

    script: StepScript
    step_format: StepFormat = field(default_factory=lambda: StepFormat.preset("newline"))
    num_parameters: int = 1000
    calls: list[list[ExpandRequest]] = field(default_factory=list)

    def widths(self) -> list[list[int]]:
        """The width of every request, call by call: how a search spent its expansions."""
        return [[r.width for r in call] for call in self.calls]

    def encode_prompt(self, question: str) -> tuple[int, ...]:
        return _ids(question + self.step_format.delimiter)

    def encode_text(self, text: str) -> tuple[int, ...]:
        return _ids(text)

    def expand(self, requests: Sequence[ExpandRequest]) -> list[ExpandOutput]:
        self.calls.append(list(requests))
        outs = []
        for r in requests:
            question, steps = self._parse(r.prefix_ids)
            samples = []
            for k in range(r.width):
                text = self.script(question, steps, 0 if r.greedy else k, r.seed)
                if not text.endswith(self.step_format.delimiter):
                    text += self.step_format.delimiter
                ids = _ids(text)
                reason = "delimiter"
                if len(ids) > r.max_new_tokens:
                    ids, reason = ids[: r.max_new_tokens], "step_cap"
                    text = "".join(map(chr, ids))
                samples.append(StepSample(text, ids, reason))
            outs.append(ExpandOutput(samples, len(r.prefix_ids) + sum(len(s.token_ids) for s in samples)))
        return outs

    def _parse(self, prefix_ids: tuple[int, ...]) -> tuple[str, tuple[str, ...]]:
        d = self.step_format.delimiter
        question, _, rest = "".join(map(chr, prefix_ids)).partition(d)
        steps = tuple(s + d for s in rest.split(d)[:-1])
        return question, steps


@dataclass
class ScriptedPRM:
    """Scores each step with ``fn(question, steps_up_to_it)``; counts the chains it scored."""

    fn: Callable[[str, tuple[str, ...]], float]
    num_parameters: int = 100
    chains_scored: int = 0

    def score(self, chains: Sequence[Chain]) -> list[ChainScores]:
        self.chains_scored += len(chains)
        return [ChainScores([self.fn(c.question, c.steps[: i + 1]) for i in range(len(c.steps))],
                            processed_tokens=sum(len(s) for s in c.steps))
                for c in chains]


def depth_script(answer_at: int, finished: Callable[[int], bool] = lambda k: False) -> StepScript:
    """Steps 'Step d k'; at depth ``answer_at`` (or when ``finished(k)`` at depth 1) the step answers k."""
    def script(question: str, steps: tuple[str, ...], k: int, seed: int) -> str:
        d = len(steps) + 1
        if d >= answer_at or (d == 1 and finished(k)):
            return f"The answer is {k}"
        return f"Step {d} {k}"
    return script


def _ids(text: str) -> tuple[int, ...]:
    return tuple(ord(ch) for ch in text)
