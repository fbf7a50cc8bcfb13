"""How sure a study's numbers are: Wilson intervals for accuracies, and a paired bootstrap over
problems for everything read off curves (FLOPs ratios, differences at equal FLOPs).

The unit of resampling is the problem. A problem's verdicts are first averaged over its seeds,
so an interval covers the choice of problems, with the seed-to-seed variation of each problem
inside its average; a second seed narrows nothing by itself. Every comparison is paired: the
settings compared share the resampled problems, which is what makes differences of a few
points measurable on a few hundred problems.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .records import Record

LEVEL = 0.95
Z = 1.959963984540054  # the two-sided 95 % normal quantile
RESAMPLES = 2000
SEED = 0  # the bootstrap's own seed: the same records always give the same intervals
SIGN_FLIPS = 20000  # draws of the randomization test when differences are not all -1, 0 or 1

Key = tuple[str, str, int]  # (model, method, budget)


def wilson(successes: float, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of a proportion: never zero-width, never outside [0, 1], right at 0/n and n/n."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if p <= 0 else max(0.0, centre - half)), (1.0 if p >= 1 else min(1.0, centre + half))


@dataclass(frozen=True)
class ProblemMatrix:
    """Per setting (model, method, budget): each problem's accuracy (its verdicts averaged over
    seeds) and paper FLOPs; NaN where the setting did not run the problem."""

    problems: tuple[str, ...]
    keys: tuple[Key, ...]
    correct: np.ndarray  # (settings, problems)
    flops: np.ndarray

    def index(self, key: Key) -> int:
        return self.keys.index(key)

    def paired(self, a: Key, b: Key) -> np.ndarray:
        """Per problem that both settings ran: a's accuracy minus b's (the input of ``difference``)."""
        rows = self.correct[[self.index(a), self.index(b)]]
        both = ~np.isnan(rows).any(axis=0)
        return rows[0][both] - rows[1][both]


def problem_matrix(records: Sequence[Record], rule: str) -> ProblemMatrix:
    sums: dict[tuple[Key, str], list[float]] = {}
    for r in records:
        c = r.verdict(rule)
        if c is None:
            continue
        acc = sums.setdefault(((r.model, r.method, r.budget), r.problem_id), [0.0, 0.0, 0.0])
        acc[0] += float(c)
        acc[1] += r.ledger.paper_flops
        acc[2] += 1
    keys = sorted({k for k, _ in sums})
    problems = sorted({p for _, p in sums})
    row, col = {k: i for i, k in enumerate(keys)}, {p: j for j, p in enumerate(problems)}
    correct = np.full((len(keys), len(problems)), np.nan)
    flops = np.full_like(correct, np.nan)
    for (k, p), (c, f, n) in sums.items():
        correct[row[k], col[p]] = c / n
        flops[row[k], col[p]] = f / n
    return ProblemMatrix(tuple(problems), tuple(keys), correct, flops)


def resample_weights(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n): how often each problem is drawn in each bootstrap resample."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.arange(resamples)[:, None], idx), 1.0)
    return weights


def percentiles(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_p_value(diffs: np.ndarray, draws: int = SIGN_FLIPS, seed: int = SEED) -> float:
    """Two-sided test that paired per-problem differences are symmetric about 0.

    Differences all in {-1, 0, 1} (one seed, right/wrong): the exact McNemar test on the
    discordant problems. Otherwise (seed averages, interpolated curves) a sign-flip
    randomization test with ``draws`` random flips (p resolution 1/draws)."""
    d = np.asarray(diffs, float)
    if np.all(np.isin(d, (-1.0, 0.0, 1.0))):
        return mcnemar_p(int((d > 0).sum()), int((d < 0).sum()))
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum())
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(draws, d.size))
    extreme = int((np.abs(signs @ d) >= observed - 1e-12).sum())
    return (1 + extreme) / (1 + draws)


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: P(a binomial(n, 1/2) is at least as far from n/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Difference:
    """The mean of paired per-problem differences, its bootstrap interval and a paired test."""

    delta: float
    low: float
    high: float
    p_value: float
    n: int

    @property
    def verdict(self) -> int:
        """+1: significantly above 0 (the paired test's p < 0.05), -1: below, 0: not significant.

        The test decides rather than the interval: near the edge a percentile bootstrap on a few
        hundred problems is slightly too narrow."""
        if self.p_value >= 1 - LEVEL:
            return 0
        return 1 if self.delta > 0 else -1 if self.delta < 0 else 0

    @property
    def text(self) -> str:
        """In percentage points: "+1.5 [-4.0, +7.0]"."""
        return f"{100 * self.delta + 0.0:+.1f} [{100 * self.low + 0.0:+.1f}, {100 * self.high + 0.0:+.1f}]"

    @property
    def p_text(self) -> str:
        """The p-value to two digits; below 1e-4 (the randomization test's floor is 5e-5) as "< 1e-4"."""
        return "< 1e-4" if self.p_value < 1e-4 else f"{self.p_value:.2g}"


def difference(diffs: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> Difference:
    d = np.asarray(diffs, float)
    boot = resample_weights(d.size, resamples, seed) @ d / d.size
    lo, hi = percentiles(boot)
    return Difference(float(d.mean()), lo, hi, paired_p_value(d, seed=seed), int(d.size))
