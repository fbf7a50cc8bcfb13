"""How good is a PRM? Sibling pairwise accuracy, step-level ROC AUC, and the accuracy it buys when picking answers.

Sibling accuracy answers "given one prefix, does it prefer the right next step to a wrong
one", which is the decision REBASE and beam search make at every node, with the problem's
difficulty held fixed; AUC answers "does it rank good steps above bad ones" across
problems (Monte-Carlo labels can make it high for a PRM that only knows which problems are
hard); selection accuracy (best-of-N,
weighted voting, next to majority voting and pass@N as references) answers "does that
help the search", which is what the scaling curves depend on. Answer selection uses
:mod:`treesearch.voting`, so these numbers match what the harness reports.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from treesearch.protocols import Chain, ProcessRewardModel
from treesearch.voting import normalized_equal, vote

from .training import LabelledChain


def roc_auc(scores: Sequence[float], labels: Sequence[float | bool]) -> float:
    """Area under the ROC curve: P(score of a random positive > random negative), ties count 1/2.

    Computed as the Mann-Whitney U statistic from average ranks (tied scores share the
    mean of their ranks), in O(n log n).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D and equally long, got {s.shape} and {y.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes; got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average rank per run of equal scores (ranks are 1-based).
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def step_auc(prm: ProcessRewardModel, chains: Sequence[LabelledChain], threshold: float = 0.5,
             batch_size: int = 256) -> float:
    """ROC AUC of the PRM's step scores against step labels (soft labels: positive if >= threshold)."""
    scores: list[float] = []
    labels: list[bool] = []
    for i in range(0, len(chains), batch_size):
        part = chains[i:i + batch_size]
        out = prm.score([Chain(c.question, tuple(c.steps)) for c in part])
        for c, r in zip(part, out):
            if len(r.scores) != len(c.labels):
                raise ValueError(f"PRM gave {len(r.scores)} scores for {len(c.labels)} labelled steps")
            scores.extend(r.scores)
            labels.extend(lab >= threshold for lab in c.labels)
    return roc_auc(scores, labels)


@dataclass(frozen=True)
class SiblingGroup:
    """Next steps sampled from one prefix, each judged right or wrong (the prefix itself is right)."""

    question: str
    prefix: tuple[str, ...]
    children: tuple[str, ...]
    right: tuple[bool, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", tuple(self.prefix))
        object.__setattr__(self, "children", tuple(self.children))
        object.__setattr__(self, "right", tuple(bool(r) for r in self.right))
        if len(self.children) != len(self.right):
            raise ValueError(f"{len(self.right)} verdicts for {len(self.children)} children")

    @property
    def depth(self) -> int:
        """1 for the first step of a solution."""
        return len(self.prefix) + 1

    @property
    def mixed(self) -> bool:
        return any(self.right) and not all(self.right)


@dataclass(frozen=True)
class PairStats:
    """(right, wrong) sibling pairs and the share the PRM orders correctly (ties count 1/2)."""

    pairs: int
    wins: float

    @property
    def accuracy(self) -> float:
        return self.wins / self.pairs if self.pairs else float("nan")


def sibling_scores(prm: ProcessRewardModel, groups: Sequence[SiblingGroup], batch_size: int = 256) -> list[list[float]]:
    """The PRM's score of each child (its chain's last step score), per group."""
    chains = [Chain(g.question, g.prefix + (c,)) for g in groups for c in g.children]
    flat: list[float] = []
    for i in range(0, len(chains), batch_size):
        flat.extend(r.scores[-1] for r in prm.score(chains[i:i + batch_size]))
    it = iter(flat)
    return [[next(it) for _ in g.children] for g in groups]


def sibling_pairs(groups: Sequence[SiblingGroup], scores: Sequence[Sequence[float]]) -> PairStats:
    """Every (right child, wrong child) pair of a group counts once: samples keep their multiplicity,
    so a wrong step the policy writes often weighs as often as it is written."""
    pairs, wins = 0, 0.0
    for g, s in zip(groups, scores):
        good = [x for x, r in zip(s, g.right) if r]
        bad = [x for x, r in zip(s, g.right) if not r]
        for a in good:
            for b in bad:
                pairs += 1
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return PairStats(pairs, wins)


@dataclass(frozen=True)
class SampledSolution:
    """One sampled solution of a problem, graded; ``step_scores`` empty until scored."""

    question: str
    steps: tuple[str, ...]
    answer: str | None
    correct: bool
    step_scores: tuple[float, ...] = ()


def score_solutions(prm: ProcessRewardModel, problems: Sequence[Sequence[SampledSolution]],
                    batch_size: int = 256) -> list[list[SampledSolution]]:
    """The same solutions with the PRM's step scores filled in."""
    flat = [s for sols in problems for s in sols]
    scored: list[SampledSolution] = []
    for i in range(0, len(flat), batch_size):
        part = flat[i:i + batch_size]
        out = prm.score([Chain(s.question, tuple(s.steps)) for s in part])
        scored.extend(replace(s, step_scores=tuple(r.scores)) for s, r in zip(part, out))
    it = iter(scored)
    return [[next(it) for _ in sols] for sols in problems]


def selection_accuracy(problems: Sequence[Sequence[SampledSolution]], agg: str = "last",
                       n: int | None = None,
                       equal: Callable[[str, str], bool] = normalized_equal) -> dict[str, float]:
    """Accuracy over problems of majority, best-of-N and weighted voting, plus pass@N.

    ``n`` keeps the first n solutions of each problem (for accuracy-vs-N curves); a
    problem whose chosen answer is None (no solution has one) counts as wrong.
    """
    if not problems:
        raise ValueError("no problems to evaluate")
    hits = {"majority": 0, "best_of_n": 0, "weighted": 0, "pass_at_n": 0}
    for sols in problems:
        sols = list(sols)[:n] if n is not None else list(sols)
        correct_of = {}
        for s in sols:
            if s.answer is not None:
                correct_of.setdefault(s.answer, s.correct)
        for rule in ("majority", "best_of_n", "weighted"):
            chosen = vote(sols, rule=rule, agg=agg, equal=equal)  # a SampledSolution is what voting reads
            hits[rule] += bool(chosen is not None and correct_of.get(chosen, False))
        hits["pass_at_n"] += any(s.correct for s in sols)
    return {k: v / len(problems) for k, v in hits.items()}
