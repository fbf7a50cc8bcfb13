"""The paper's headline quantities from a study's curves: FLOPs to reach an accuracy, their ratio
between two methods, paired tests on the same problems, and accuracy against verifier error.

Wu et al.'s "7B + REBASE beats 7B sampling with 6.8x fewer FLOPs" compares the FLOPs where
two accuracy-vs-FLOPs curves reach the same accuracy. Here a curve is read with linear
interpolation in log FLOPs between measured budgets and never extrapolated: an accuracy
below a curve's first point is reached "at most" at that point's FLOPs; one above its best
is not reached.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .records import Record

if TYPE_CHECKING:
    from .report import Row


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof=1, over sqrt(n)); SE is 0 for one value."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0
    return float(a.mean()), se


@dataclass(frozen=True)
class Reach:
    flops: float  # NaN when not reached
    bound: bool  # True: reached already at the first budget, so flops is an upper bound


def flops_to_reach(points: Sequence[tuple[float, float]], target: float) -> Reach:
    """First FLOPs at which a curve of (flops, accuracy) points, sorted by FLOPs, reaches ``target``."""
    pts = sorted(points)
    if not pts:
        return Reach(math.nan, False)
    if pts[0][1] >= target:
        return Reach(pts[0][0], True)
    for (f1, a1), (f2, a2) in zip(pts, pts[1:]):
        if a1 < target <= a2:
            t = (target - a1) / (a2 - a1)
            return Reach(10 ** (math.log10(f1) + t * (math.log10(f2) - math.log10(f1))), False)
    return Reach(math.nan, False)


def curve(rows: Sequence[Row], model: str, method: str, rule: str) -> list[tuple[float, float]]:
    return sorted((r.paper_flops, r.accuracy) for r in rows
                  if r.model == model and r.method == method and r.rule == rule and r.paper_flops > 0)


@dataclass(frozen=True)
class RatioRow:
    """At ``target`` accuracy (the baseline's at ``budget``): each method's FLOPs and baseline / method."""

    model: str
    method: str
    baseline: str
    budget: int  # the baseline's budget that set the target
    target: float
    baseline_flops: float
    method_flops: Reach

    @property
    def ratio(self) -> float:
        return self.baseline_flops / self.method_flops.flops if self.method_flops.flops == self.method_flops.flops \
            else math.nan


def ratio_rows(rows: Sequence[Row], rule: str, method: str, baseline: str) -> list[RatioRow]:
    """For every model with both curves: at each accuracy the baseline reaches (its budgets), the FLOPs
    ``method`` needs for it. The headline is the row of the baseline's best accuracy."""
    out = []
    for model in sorted({r.model for r in rows}):
        base = [r for r in rows if r.model == model and r.method == baseline and r.rule == rule and r.paper_flops > 0]
        mine = curve(rows, model, method, rule)
        if not base or not mine:
            continue
        best = -1.0
        for r in sorted(base, key=lambda r: r.paper_flops):
            if r.accuracy <= best:  # the baseline's own first arrival at an accuracy is what it costs
                continue
            best = r.accuracy
            out.append(RatioRow(model, method, baseline, r.budget, r.accuracy, r.paper_flops,
                                flops_to_reach(mine, r.accuracy)))
    return out


# ---------------------------------------------------------------------------------------------
# Paired comparison on the same problems
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Paired:
    model: str
    a: str
    b: str
    budget: int
    budget_b: int
    n: int  # (problem, seed) pairs with both
    a_only: int  # a right, b wrong
    b_only: int
    p_value: float  # exact two-sided McNemar (binomial on the discordant pairs)
    flops_ratio: float = math.nan  # a's mean paper FLOPs / b's

    @property
    def delta(self) -> float:
        return (self.a_only - self.b_only) / self.n if self.n else math.nan


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: P(a binomial(n, 1/2) is at least as far from n/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(records: Sequence[Record], model: str, a: str, b: str, budget: int, rule: str,
           budget_b: int | None = None) -> Paired | None:
    """Method ``a`` at ``budget`` vs ``b`` at ``budget_b`` (default the same) on the problems both ran."""
    budget_b = budget if budget_b is None else budget_b

    def verdicts(method: str, bud: int) -> dict[tuple[str, int], bool]:
        out = {}
        for r in records:
            if r.model == model and r.method == method and r.budget == bud:
                c = r.verdict(rule)
                if c is not None:
                    out[(r.problem_id, r.seed)] = c
        return out

    va, vb = verdicts(a, budget), verdicts(b, budget_b)
    both = sorted(set(va) & set(vb))
    if not both:
        return None
    a_only = sum(va[k] and not vb[k] for k in both)
    b_only = sum(vb[k] and not va[k] for k in both)
    return Paired(model, a, b, budget, budget_b, len(both), a_only, b_only, mcnemar_p(a_only, b_only))


def paired_at_equal_flops(records: Sequence[Record], rows: Sequence[Row], rule: str, a: str,
                          b: str) -> list[Paired]:
    """Every budget of ``a`` against the budget of ``b`` nearest to it in log paper FLOPs, per model.

    Equal budgets are not equal compute across methods (an MCTS expansion is one step, a
    sample a whole solution), so the pairing goes by FLOPs."""
    out = []
    for model in sorted({r.model for r in rows}):
        flops_a = {r.budget: r.paper_flops for r in rows if r.model == model and r.method == a and r.rule == rule}
        flops_b = {r.budget: r.paper_flops for r in rows if r.model == model and r.method == b and r.rule == rule}
        if not flops_b:
            continue
        for bud, fa in sorted(flops_a.items()):
            if fa <= 0:
                continue
            near = min((x for x in flops_b if flops_b[x] > 0), key=lambda x: abs(math.log(flops_b[x] / fa)), default=None)
            p = paired(records, model, a, b, bud, rule, near) if near is not None else None
            if p is not None:
                out.append(dataclasses.replace(p, flops_ratio=fa / flops_b[near]))
    return out


# ---------------------------------------------------------------------------------------------
# Verifier quality
# ---------------------------------------------------------------------------------------------
def flip_rate_of(verifier: dict[str, Any] | None) -> float | None:
    """The error rate of a reference verifier (the exact checker: 0), or None for any other PRM."""
    if not verifier:
        return None
    if "flip_rate" in verifier:
        return float(verifier["flip_rate"])
    if verifier.get("type") == "builtin_oracle":
        return 0.0
    if verifier.get("type") == "noisy_oracle":
        return 0.2  # the registered default
    return None


@dataclass(frozen=True)
class SweepPoint:
    model: str
    algorithm: str
    budget: int
    flip_rate: float
    accuracy: float
    stderr: float
    n: int


def verifier_sweep(records: Sequence[Record], rule: str) -> list[SweepPoint]:
    """Accuracy per (model, algorithm, budget) at each reference-verifier error rate in the records."""
    groups: dict[tuple[str, str, int, float], list[bool]] = defaultdict(list)
    for r in records:
        rate = flip_rate_of(r.verifier)
        c = r.verdict(rule)
        if rate is not None and c is not None:
            groups[(r.model, r.algorithm, r.budget, rate)].append(c)
    # Only settings measured at two error rates or more make a sweep.
    rates: dict[tuple[str, str, int], set[float]] = defaultdict(set)
    for m, alg, bud, rate in groups:
        rates[(m, alg, bud)].add(rate)
    out = []
    for (m, alg, bud, rate), cs in sorted(groups.items()):
        if len(rates[(m, alg, bud)]) >= 2:
            acc, se = mean_se([float(c) for c in cs])
            out.append(SweepPoint(m, alg, bud, rate, acc, se, len(cs)))
    return out
