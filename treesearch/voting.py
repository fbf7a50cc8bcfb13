"""Choosing one answer among candidate solutions: step-score aggregation and voting rules.

Pure functions over anything with an ``answer`` and ``step_scores``: the Runner's
``Candidate`` and a stored record's candidates alike, so re-voting a record needs no engine.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Protocol, Sequence, TypeVar

Equal = Callable[[str, str], bool]


class Scored(Protocol):
    """What voting reads of a solution: its final answer (None if it has none) and PRM step scores."""

    @property
    def answer(self) -> str | None: ...

    @property
    def step_scores(self) -> Sequence[float]: ...


S = TypeVar("S", bound=Scored)
AGGREGATIONS = ("last", "min", "mean", "prod")
RULES = ("majority", "best_of_n", "weighted")
#: Rules over sequential chains (revisions): recorded only for candidates that carry a ``chain``.
CHAIN_RULES = ("hierarchical",)


def aggregate(step_scores: Sequence[float], how: str = "last") -> float:
    """One score per solution from its step scores; an unscored solution counts 0."""
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    raise ValueError(f"unknown aggregation {how!r}; choose one of {AGGREGATIONS}")


def normalized_equal(a: str, b: str) -> bool:
    """Default answer equivalence: case-, space- and trailing-period-insensitive string equality."""
    return _norm(a) == _norm(b)


def _norm(s: str) -> str:
    return re.sub(r"\s+", "", s).rstrip(".").lower()


class Memoized:
    """An answer equality that grades each distinct (a, b) pair once: voting and judging compare
    the same few answers again and again, and a symbolic grader is slow. The one memo for answer
    comparisons (the sweep and the CLI wrap their grader in it too)."""

    def __init__(self, equal: Equal) -> None:
        self.equal = equal
        self._memo: dict[tuple[str, str], bool] = {}

    def __call__(self, a: str, b: str) -> bool:
        key = (a, b)
        if key not in self._memo:
            self._memo[key] = bool(self.equal(a, b))
        return self._memo[key]


def memoized(equal: Equal) -> Memoized:
    """``equal`` behind a memo (itself if it already is one, so callers can share a memo)."""
    return equal if isinstance(equal, Memoized) else Memoized(equal)


def answer_classes(candidates: Sequence[S], equal: Equal = normalized_equal) -> list[list[S]]:
    """Group answered candidates into equivalence classes (first-seen order).

    Each new answer is compared with one representative per class, and each distinct
    string pair is graded once (``memoized``), so a slow symbolic grader is called few times.
    """
    classes: list[list[S]] = []
    equal = memoized(equal)
    for c in candidates:
        if c.answer is None:
            continue
        for cls in classes:
            if c.answer == cls[0].answer or equal(c.answer, cls[0].answer):
                cls.append(c)
                break
        else:
            classes.append([c])
    return classes


def vote(candidates: Sequence[Scored], rule: str = "weighted", agg: str = "last",
         equal: Equal = normalized_equal) -> str | None:
    """The chosen answer, or None when no candidate has one.

    majority: the largest class; best_of_n: the single best-scored answer; weighted:
    the class with the largest sum of aggregated scores. Ties go to the class seen first.
    """
    if rule not in RULES:
        raise ValueError(f"unknown voting rule {rule!r}; choose one of {RULES}")
    answered = [c for c in candidates if c.answer is not None]
    if not answered:
        return None
    if rule == "best_of_n":
        best = max(answered, key=lambda c: aggregate(c.step_scores, agg))  # max keeps the first on ties
        return best.answer
    classes = answer_classes(answered, equal)
    if rule == "majority":
        weight = len
    else:
        def weight(cls: list[Scored]) -> float:
            return sum(aggregate(c.step_scores, agg) for c in cls)
    return max(classes, key=weight)[0].answer


def hierarchical_vote(candidates: Sequence[Scored], agg: str = "last", equal: Equal = normalized_equal) -> str | None:
    """Snell et al.'s hierarchical selection over revision chains: within each chain (a candidate's
    ``chain``) the verifier's best-scored answered attempt, then weighted voting across chains, each
    chain's pick weighing its own aggregated score. None when no candidate has an answer.

    Why two levels: a chain's attempts are not independent (each revises the last), so counting
    them all as votes would let one long chain outvote the rest."""
    best: dict[object, Scored] = {}
    for c in candidates:
        if c.answer is None:
            continue
        key = getattr(c, "chain", None)
        if key not in best or aggregate(c.step_scores, agg) > aggregate(best[key].step_scores, agg):
            best[key] = c  # strictly better only: the first on ties
    return vote(list(best.values()), "weighted", agg, equal)


def confidence_vote(candidates: Sequence[S], equal: Equal = normalized_equal) -> str | None:
    """DeepConf's confidence-weighted majority: the answer class with the largest sum of its
    candidates' ``confidence`` (the policy's own confidence in the solution, no verifier's score).
    Ties go to the class seen first; None when no candidate has an answer."""
    classes = answer_classes(candidates, equal)
    return max(classes, key=class_confidence)[0].answer if classes else None


def class_confidence(cls: Sequence[Any]) -> float:
    """The summed ``confidence`` of an answer class: its weight in ``confidence_vote``."""
    return math.fsum(c.confidence for c in cls)


def has_confidences(candidates: Sequence[object]) -> bool:
    """Whether every candidate carries a confidence (a DeepConf search), so ``confidence_vote`` applies."""
    return bool(candidates) and all(getattr(c, "confidence", None) is not None for c in candidates)


def has_chains(candidates: Sequence[object]) -> bool:
    """Whether every candidate carries a chain index (a revisions search), so the chain rules apply."""
    return bool(candidates) and all(getattr(c, "chain", None) is not None for c in candidates)


def picks(candidates: Sequence[Scored], rules: Sequence[tuple[str, str, str]], aggregations: Sequence[str],
          equal: Equal = normalized_equal) -> dict[str, str | None]:
    """The answer every rule picks, by key: ``rules`` as (key, rule, aggregation) triples, then the rules the
    candidates bring: the hierarchical rule per aggregation where they carry chains (revisions), the
    confidence vote where they carry the policy's confidence (DeepConf). What a record votes, what
    ``treesearch solve`` prints and what the viewer's vote table shows."""
    out = {key: vote(candidates, rule, agg, equal=equal) for key, rule, agg in rules}
    if has_chains(candidates):
        for rule in CHAIN_RULES:
            out.update({f"{rule}/{agg}": hierarchical_vote(candidates, agg, equal=equal) for agg in aggregations})
    if has_confidences(candidates):
        out["confidence"] = confidence_vote(candidates, equal)
    return out
