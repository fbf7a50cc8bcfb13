"""Adaptive sampling: independent solutions in rounds, stopping once the leading answer is decisive.

Like its_hub's adaptive self-consistency: solutions are completed ``batch`` at a time, up to
the cap ``n`` (the same budget units as ``Sampling.n``), and the search stops early when the
answers so far make the vote a foregone conclusion. Two stopping rules:

* ``"supermajority"``: the leading answer holds at least ``threshold`` of the answered samples
  and at least ``min_samples`` samples were drawn;
* ``"beta"``: with a uniform Beta(1, 1) prior on the share p of the leader among the votes of
  the two front-runners, a = 1 + the leader's votes and b = 1 + the runner-up's (the second
  most frequent answer; 0 if none); stop when P(p > 1/2) under Beta(a, b) is at least
  ``confidence``. It needs no ``min_samples``: at confidence 0.95 even a unanimous vote needs
  4 samples (P = 1 - 2^-(votes + 1)).

Answers are compared with ``treesearch.voting.normalized_equal`` (case-, space- and
trailing-period-insensitive string equality): the algorithm has no grader, so "1/2" and "0.5"
are two answers here even where the grader would call them equal: such a split stops the search
later than a grader's count would when it splits the leader's votes, earlier when it splits the
runner-up's. A sample without an answer (a depth or token cap) counts as drawn but votes for nothing.

The records carry exactly the solutions completed, and the Runner's ledger counts the tokens
really generated, so the FLOPs of a record are what the search spent. The number of solutions
depends on the answers, so the first b of a run at cap n are not a run at cap b (the run at
cap n may have gone on where the one at cap b would have stopped at b, or stopped before b):
``independent_samples`` is False and a sweep runs each budget itself.

Each round expands the root again for its own first steps with ``redraw``: the Runner then
seeds the expansion by the children the root already has, so a round's samples are new draws,
not copies of the first round's (which would make any answer look decisive). Nothing of a
round that never happens is generated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..tree import Node, Tree
from ..voting import Equal, memoized, normalized_equal
from ..work import Search, complete, expand

STOPPING_RULES = ("supermajority", "beta")


def beta_leader_probability(leader_votes: int, runner_up_votes: int) -> float:
    """P(p > 1/2) for p ~ Beta(1 + leader_votes, 1 + runner_up_votes), exactly.

    For integers a, b the Beta CDF is a binomial tail: P(p <= x) = P(Binomial(a + b - 1, x) >= a),
    so P(p > 1/2) = P(Binomial(a + b - 1, 1/2) <= a - 1) = P(Binomial(a + b - 1, 1/2) >= b)
    (the binomial at 1/2 is symmetric): a sum of binomial coefficients over 2^(a + b - 1).
    """
    for field, v in (("leader_votes", leader_votes), ("runner_up_votes", runner_up_votes)):
        if v < 0:
            raise ValueError(f"{field} must be >= 0, got {v}")
    a, b = 1 + leader_votes, 1 + runner_up_votes
    m = a + b - 1
    return sum(math.comb(m, k) for k in range(b, m + 1)) / 2 ** m  # int / int: a correctly rounded float


def vote_counts(answers: Sequence[str | None], equal: Equal = normalized_equal) -> list[int]:
    """Votes per distinct answer, most first; ``None`` (no answer) votes for nothing."""
    equal = memoized(equal)
    reps: list[str] = []
    counts: list[int] = []
    for a in answers:
        if a is None:
            continue
        for i, r in enumerate(reps):
            if a == r or equal(a, r):
                counts[i] += 1
                break
        else:
            reps.append(a)
            counts.append(1)
    return sorted(counts, reverse=True)


def decisive(answers: Sequence[str | None], rule: str, threshold: float = 0.75, confidence: float = 0.95,
             min_samples: int = 4, equal: Equal = normalized_equal) -> bool:
    """Whether the samples drawn so far (their answers, ``None`` for none) settle the vote by ``rule``."""
    counts = vote_counts(answers, equal)
    if not counts:
        return False
    if rule == "supermajority":
        return len(answers) >= min_samples and counts[0] >= threshold * sum(counts)
    if rule == "beta":
        return beta_leader_probability(counts[0], counts[1] if len(counts) > 1 else 0) >= confidence
    raise ValueError(f"rule must be one of {STOPPING_RULES}, got {rule!r}")


@dataclass(frozen=True)
class AdaptiveSampling:
    """Up to ``n`` independent solutions, ``batch`` a round, until the leader is decisive by ``rule``."""

    n: int = 16
    batch: int = 4
    rule: str = "supermajority"
    threshold: float = 0.75
    confidence: float = 0.95
    min_samples: int = 4
    budget_param: ClassVar[str | None] = "n"
    needs_prm: ClassVar[bool] = False  # no PRM while searching; weighted / best-of-N voting may still use one
    independent_samples: ClassVar[bool] = False  # how many are drawn depends on the answers
    name: str = "adaptive_sampling"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"AdaptiveSampling.n must be >= 1, got {self.n}")
        if self.batch < 1:
            raise ValueError(f"AdaptiveSampling.batch must be >= 1, got {self.batch}")
        if self.rule not in STOPPING_RULES:
            raise ValueError(f"AdaptiveSampling.rule must be one of {STOPPING_RULES}, got {self.rule!r}")
        if not 0.5 < self.threshold <= 1:
            raise ValueError(f"AdaptiveSampling.threshold must be in (0.5, 1], got {self.threshold}")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"AdaptiveSampling.confidence must be in (0.5, 1), got {self.confidence}")
        if self.min_samples < 1:
            raise ValueError(f"AdaptiveSampling.min_samples must be >= 1, got {self.min_samples}")

    def __call__(self, tree: Tree) -> Search:
        finished: list[Node] = []
        equal = memoized(normalized_equal)  # one memo for every round's count
        for start in range(0, self.n, self.batch):
            # Each round draws its own first steps (redraw: the root's seed counts the children it has).
            (first,) = yield from expand([tree.root], min(self.batch, self.n - start), redraw=True)
            finished.extend((yield from complete(first)))
            if decisive([c.answer for c in finished], self.rule, self.threshold, self.confidence,
                        self.min_samples, equal):
                break
        return finished
