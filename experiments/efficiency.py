"""The paper's headline quantities from a study's curves: FLOPs to reach an accuracy, their ratio
between two methods, paired tests on the same problems, and accuracy against verifier error.

Wu et al.'s "7B + REBASE beats 7B sampling with 6.8x fewer FLOPs" compares the FLOPs where
two accuracy-vs-FLOPs curves reach the same accuracy. Here a curve is read with linear
interpolation in log FLOPs between measured budgets and never extrapolated: an accuracy
below a curve's first point is reached "at most" at that point's FLOPs; one above its best
is not reached.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from . import uncertainty
from .facts import MethodFacts, facts_for
from .records import Record
from .uncertainty import ProblemMatrix

if TYPE_CHECKING:
    from .analysis import Row


@dataclass(frozen=True)
class Reach:
    flops: float  # NaN when not reached
    bound: bool  # True: reached already at the first budget, so flops is an upper bound


def flops_to_reach(points: Sequence[tuple[float, float]], target: float) -> Reach:
    """First FLOPs at which a curve of (flops, accuracy) points, sorted by FLOPs, reaches ``target``."""
    pts = sorted(points)
    if not pts:
        return Reach(math.nan, False)
    flops, acc = (np.array([[x[i] for x in pts]]) for i in (0, 1))
    return Reach(float(reach_many(flops, acc, np.array([target]))[0]), pts[0][1] >= target)


def reach_many(flops: np.ndarray, acc: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`flops_to_reach` for many curves at once (rows: bootstrap resamples), NaN where not
    reached; columns ordered by budget."""
    out = np.where(acc[:, 0] >= target, flops[:, 0], np.nan)
    for j in range(acc.shape[1] - 1):
        a1, a2, f1, f2 = acc[:, j], acc[:, j + 1], flops[:, j], flops[:, j + 1]
        cross = np.isnan(out) & (a1 < target) & (target <= a2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (target - a1) / (a2 - a1)
            at = 10 ** (np.log10(f1) + t * (np.log10(f2) - np.log10(f1)))
        out = np.where(cross, at, out)
    return out


def curve(rows: Sequence[Row], model: str, method: str, rule: str) -> list[tuple[float, float]]:
    return sorted((r.paper_flops, r.accuracy) for r in rows
                  if r.model == model and r.method == method and r.rule == rule and r.paper_flops > 0)




@dataclass(frozen=True)
class RatioInterval:
    """The paired problem bootstrap of a FLOPs ratio: resample the problems, recompute both curves
    and the interpolated ratio. A resample where the method does not reach the target counts as
    ratio 0 (no FLOPs measured suffice), so an end of the interval can be "not reached"."""

    low: float  # 0: not reached at this end
    high: float
    not_reached: float  # share of resamples where the method does not reach the target
    resamples: int


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
    interval: RatioInterval | None = None

    @property
    def ratio(self) -> float:
        return self.baseline_flops / self.method_flops.flops if self.method_flops.flops == self.method_flops.flops \
            else math.nan

    @property
    def interval_text(self) -> str:
        """"1.80x to 5.00x" / "not reached to 4.40x", and the share of resamples that miss the target."""
        ci = self.interval
        if ci is None:
            return "–"
        end = lambda x: "not reached" if x == 0 else f"{x:.2f}x"  # noqa: E731
        text = f"{end(ci.low)} to {end(ci.high)}" if ci.low != ci.high else end(ci.low)
        share = f"{100 * ci.not_reached:.0f}" if ci.not_reached >= 0.01 else "under 1"
        return text + (f" (not reached in {share} % of resamples)" if ci.not_reached > 0 else "")


def ratio_rows(rows: Sequence[Row], rule: str, method: str, baseline: str,
               matrix: ProblemMatrix | None = None) -> list[RatioRow]:
    """For every model with both curves: at each accuracy the baseline reaches (its budgets), the FLOPs
    ``method`` needs for it. The headline is the row of the baseline's best accuracy. With the
    per-problem ``matrix`` each row carries its bootstrap interval."""
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
            interval = ratio_interval(matrix, model, method, baseline, r.budget) if matrix is not None else None
            out.append(RatioRow(model, method, baseline, r.budget, r.accuracy, r.paper_flops,
                                flops_to_reach(mine, r.accuracy), interval))
    return out


def _curve_keys(matrix: ProblemMatrix, model: str, method: str) -> list[tuple[str, str, int]]:
    """A setting's budgets with positive FLOPs, in budget order (FLOPs rise with the budget)."""
    keys = [k for k in matrix.keys if k[:2] == (model, method)]
    return sorted((k for k in keys if np.nanmean(matrix.flops[matrix.index(k)]) > 0), key=lambda k: k[2])


def ratio_interval(matrix: ProblemMatrix, model: str, method: str, baseline: str, budget: int,
                   resamples: int = uncertainty.RESAMPLES) -> RatioInterval | None:
    base, mine = _curve_keys(matrix, model, baseline), _curve_keys(matrix, model, method)
    if (model, baseline, budget) not in base or not mine:
        return None
    rows = [matrix.index(k) for k in base + mine]
    cols = ~np.isnan(matrix.correct[rows]).any(axis=0)
    n = int(cols.sum())
    if n == 0:
        return None
    weights = uncertainty.resample_weights(n, resamples)
    acc = weights @ matrix.correct[rows][:, cols].T / n  # (resamples, settings)
    flops = weights @ matrix.flops[rows][:, cols].T / n
    nb = len(base)
    target = acc[:, base.index((model, baseline, budget))]
    base_at = reach_many(flops[:, :nb], acc[:, :nb], target)
    mine_at = reach_many(flops[:, nb:], acc[:, nb:], target)
    ratio = np.where(np.isnan(mine_at), 0.0, base_at / np.where(np.isnan(mine_at), 1.0, mine_at))
    lo, hi = uncertainty.percentiles(ratio)
    return RatioInterval(lo, hi, float(np.isnan(mine_at).mean()), resamples)


# ---------------------------------------------------------------------------------------------
# Paired comparison on the same problems at equal FLOPs
# ---------------------------------------------------------------------------------------------
MAX_FLOPS_GAP = 1.25  # a setting may be compared with the end of a curve at most this far beyond it


@dataclass(frozen=True)
class Comparison:
    """Setting ``a`` against curve ``b`` read at a's FLOPs, on the problems both ran.

    b is interpolated per problem, linearly in log FLOPs between the two budgets around a's
    FLOPs (the same reading as the curves), so the mean difference is the gap between the two
    curves at equal compute; beyond b's last budget (by at most 1.25x) b's end is used."""

    model: str
    method: str
    budget: int
    b_model: str
    b_method: str
    b_budgets: tuple[int, int]  # the budgets of b around a's FLOPs (equal: read at one budget)
    flops: float  # a's mean paper FLOPs
    flops_ratio: float  # a's FLOPs / the FLOPs b is read at
    diff: uncertainty.Difference

    @property
    def b_label(self) -> str:
        lo, hi = self.b_budgets
        return f"{self.b_method} b={lo}" if lo == hi else f"{self.b_method} b={lo}-{hi}"


def paired_diffs(matrix: ProblemMatrix, a: tuple[str, str, int], b_model: str, b_method: str
                 ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float] | None:
    """Per problem a − (b at a's FLOPs): (problem mask, differences, b's budgets, FLOPs ratio), or
    None when a's FLOPs lie outside b's curve."""
    b = _curve_keys(matrix, b_model, b_method)
    if a not in matrix.keys or not b:
        return None
    fa = float(np.nanmean(matrix.flops[matrix.index(a)]))
    fb = [float(np.nanmean(matrix.flops[matrix.index(k)])) for k in b]
    if fa <= 0:
        return None
    if fa <= fb[0] or fa >= fb[-1]:
        j = 0 if fa <= fb[0] else len(b) - 1
        if abs(math.log(fa / fb[j])) > math.log(MAX_FLOPS_GAP):
            return None
        lo = hi = j
        t = 0.0
    else:
        hi = next(j for j, f in enumerate(fb) if f >= fa)
        lo = hi - 1
        t = math.log(fa / fb[lo]) / math.log(fb[hi] / fb[lo])
        if t == 1.0:
            lo = hi
    rows = [matrix.index(a), matrix.index(b[lo]), matrix.index(b[hi])]
    mask = ~np.isnan(matrix.correct[rows]).any(axis=0)
    if not mask.any():
        return None
    ca, clo, chi = (matrix.correct[i][mask] for i in rows)
    at = fb[lo] ** (1 - t) * fb[hi] ** t
    return mask, ca - ((1 - t) * clo + t * chi), (b[lo][2], b[hi][2]), fa / at


def compare(matrix: ProblemMatrix, a_model: str, a_method: str, b_model: str, b_method: str) -> list[Comparison]:
    """Every budget of (a_model, a_method) against (b_model, b_method) at equal FLOPs."""
    out = []
    for key in _curve_keys(matrix, a_model, a_method):
        got = paired_diffs(matrix, key, b_model, b_method)
        if got is not None:
            _, d, budgets, ratio = got
            out.append(Comparison(a_model, a_method, key[2], b_model, b_method, budgets,
                                  float(np.nanmean(matrix.flops[matrix.index(key)])), ratio, uncertainty.difference(d)))
    return out


# ---------------------------------------------------------------------------------------------
# Verifier quality
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPoint:
    """One reference-verifier error rate: accuracy with its Wilson interval (n = problems)."""

    model: str
    algorithm: str
    budget: int
    flip_rate: float
    accuracy: float
    low: float
    high: float
    n: int
    method: str = ""  # the study's method name for this rate


def verifier_sweep(records: Sequence[Record], rule: str,
                   facts: Mapping[str, MethodFacts] | None = None) -> list[SweepPoint]:
    """Accuracy per (model, algorithm, budget) at each reference-verifier error rate in the records
    (which methods had a reference verifier, with what error, is what ``facts`` say)."""
    groups: dict[tuple[str, str, int, float], dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    methods: dict[tuple[str, str, int, float], str] = {}
    facts = facts_for(records, facts)
    for r in records:
        rate = facts[r.method].reference_error
        c = r.verdict(rule)
        # Right-only flips (a judge that never accepts a wrong step) are another axis than the sweep's.
        if rate is not None and c is not None and facts[r.method].reference_flip == "both":
            groups[(r.model, r.algorithm, r.budget, rate)][r.problem_id].append(c)
            methods.setdefault((r.model, r.algorithm, r.budget, rate), r.method)
    # Only settings measured at two error rates or more make a sweep.
    rates: dict[tuple[str, str, int], set[float]] = defaultdict(set)
    for m, alg, bud, rate in groups:
        rates[(m, alg, bud)].add(rate)
    out = []
    for key, by_problem in sorted(groups.items()):
        m, alg, bud, rate = key
        if len(rates[(m, alg, bud)]) >= 2:
            per_problem = [float(np.mean(v)) for v in by_problem.values()]
            n = len(per_problem)
            out.append(SweepPoint(m, alg, bud, rate, sum(per_problem) / n, *uncertainty.wilson(sum(per_problem), n), n,
                                  methods[key]))
    return out
