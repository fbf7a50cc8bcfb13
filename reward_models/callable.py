"""Any Python function as a PRM: ``CallablePRM(lambda question, steps: [...])``.

For heuristics, graders, remote services, or a model you drive yourself. The function
gets the question and the list of steps and returns one float per step; the adapter
checks that, so a wrong-length answer fails at its source, not deep inside a search.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from treesearch.imports import import_path
from treesearch.protocols import Chain, ChainScores

from .registry import register_prm

StepScorer = Callable[[str, list[str]], Sequence[float]]


@dataclass
class CallablePRM:
    """Wraps ``fn(question, steps) -> list[float]``.

    ``num_parameters`` is 0 (no model FLOPs) unless given; ``tokens_per_chain`` can report
    what a wrapped model processed, for the compute ledger.
    """

    fn: StepScorer
    num_parameters: int = 0
    tokens_per_chain: Callable[[Chain], int] | None = None

    def score(self, chains: Sequence[Chain]) -> list[ChainScores]:
        out = []
        for c in chains:
            if not c.steps:
                raise ValueError("a chain must have at least one step to score (got 0 steps)")
            scores = [float(s) for s in self.fn(c.question, list(c.steps))]
            if len(scores) != len(c.steps):
                raise ValueError(f"{_name(self.fn)} returned {len(scores)} scores for {len(c.steps)} steps")
            if any(math.isnan(s) for s in scores):
                raise ValueError(f"{_name(self.fn)} returned NaN for question {c.question[:60]!r}")
            tokens = self.tokens_per_chain(c) if self.tokens_per_chain else 0
            out.append(ChainScores(scores, processed_tokens=tokens))
        return out


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _check(fn: StepScorer | str | None = None, **_: object) -> None:
    """The function an import path names must import (``fn: ...`` names the key in the error)."""
    if fn is None:
        raise ValueError("fn: required (a function, or an import path 'pkg.module:function')")
    if isinstance(fn, str):
        try:
            import_path(fn)
        except ValueError as e:
            raise ValueError(f"fn: {e}") from None


@register_prm("callable", check=_check)
def _callable(fn: StepScorer | str, **kwargs) -> CallablePRM:
    """``fn`` may be an import path ``"pkg.module:function"`` (for YAML configs)."""
    return CallablePRM(import_path(fn) if isinstance(fn, str) else fn, **kwargs)
