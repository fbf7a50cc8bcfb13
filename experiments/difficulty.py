"""Compute-optimal strategy per question difficulty (Snell et al. 2024, §3.2 and §5.3).

Problems are binned by difficulty: the dataset's level where it has one, else the first
policy's pass@1 over its sampled solutions, cut into 5 equal-count bins. For every bin, each
(model, method, budget) setting has a mean cost (paper FLOPs) and an accuracy on that bin's
problems. Choosing one setting per bin, the cheapest way to reach every accuracy is a
multiple-choice knapsack; its exact Pareto frontier is the Minkowski sum of the bins' own
frontiers, pruned after each bin. That curve, beside the frontier of single settings used
for every problem, shows what knowing a question's difficulty is worth. The bins use the true
difficulty (the level, or pass@1 measured on the problem itself), as in Snell et al.'s
"oracle difficulty" experiments: an upper bound on what a predicted difficulty could give.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

from .facts import MethodFacts, facts_for
from .records import Record

Setting = tuple[str, str, int]  # (model, method, budget)
N_BINS = 5


def difficulty_bins(records: Sequence[Record], n_bins: int = N_BINS,
                    facts: Mapping[str, MethodFacts] | None = None) -> tuple[dict[str, str], str]:
    """problem id -> bin label, and how the bins were made ("level", or "pass@1 of MODEL", measured on the
    records of methods whose candidates are independent samples, as ``facts`` say)."""
    levels = {r.problem_id: r.level for r in records}
    if levels and all(v is not None for v in levels.values()):
        return {p: f"level {lv}" for p, lv in levels.items()}, "level"
    hits: dict[str, list[bool]] = defaultdict(list)
    facts = facts_for(records, facts)
    sampled = [r for r in records if facts[r.method].independent_samples]
    model = sampled[0].model if sampled else None
    for r in sampled:
        if r.model == model and not r.derived_from:
            hits[r.problem_id].extend(c.correct for c in r.candidates if c.correct is not None)
    if not hits:
        return {}, "none (no levels, and no sampled solutions with per-candidate verdicts)"
    rate = {p: sum(h) / len(h) for p, h in hits.items() if h}
    order = sorted(rate, key=lambda p: (-rate[p], p))  # easiest first
    size = math.ceil(len(order) / n_bins)
    return ({p: f"quantile {i // size + 1}" for i, p in enumerate(order)},
            f"pass@1 of {model}'s samples, {n_bins} equal-count bins, 1 = easiest")




@dataclass(frozen=True)
class Point:
    """A choice of one setting per bin: mean paper FLOPs per problem and accuracy over all problems."""

    flops: float
    accuracy: float
    choice: tuple[Setting, ...]  # one per bin, in bin order


def per_bin(records: Sequence[Record], bins: dict[str, str], rule: str,
            settings: set[Setting] | None = None) -> dict[str, dict[Setting, tuple[float, int, int]]]:
    """bin -> setting -> (total paper FLOPs, right answers, problem-seed pairs)."""
    out: dict[str, dict[Setting, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0, 0]))
    for r in records:
        key = (r.model, r.method, r.budget)
        c = r.verdict(rule)
        b = bins.get(r.problem_id)
        if c is None or b is None or (settings is not None and key not in settings):
            continue
        acc = out[b][key]
        acc[0] += r.ledger.paper_flops
        acc[1] += int(c)
        acc[2] += 1
    return {b: {k: (v[0], v[1], v[2]) for k, v in s.items()} for b, s in out.items()}


def _frontier(points: list[Point]) -> list[Point]:
    """Points no other point beats with less or equal FLOPs (sorted by FLOPs)."""
    best, out = -1.0, []
    for p in sorted(points, key=lambda p: (p.flops, -p.accuracy)):
        if p.accuracy > best + 1e-12:
            out.append(p)
            best = p.accuracy
    return out


def compute_optimal_frontier(table: dict[str, dict[Setting, tuple[float, int, int]]], total: int) -> list[Point]:
    """The exact frontier of one-setting-per-bin choices (FLOPs and accuracy averaged over ``total``)."""
    frontier = [Point(0.0, 0.0, ())]
    for b in sorted(table):
        # A bin's FLOPs and right answers, summed over its (problem, seed) pairs, over all pairs: its share.
        options = [Point(f / total, right / total, (key,)) for key, (f, right, _) in table[b].items()]
        frontier = _frontier([Point(a.flops + o.flops, a.accuracy + o.accuracy, a.choice + o.choice)
                              for a in frontier for o in options])
    return frontier


def single_frontier(table: dict[str, dict[Setting, tuple[float, int, int]]], total: int) -> list[Point]:
    """The frontier of settings used for every problem (only settings run on every bin)."""
    keys = set.intersection(*(set(s) for s in table.values())) if table else set()
    pts = [Point(sum(table[b][k][0] for b in table) / total, sum(table[b][k][1] for b in table) / total,
                 tuple(k for _ in table)) for k in keys]
    return _frontier(pts)


def cheapest(frontier: Sequence[Point], accuracy: float) -> Point | None:
    """The least-FLOPs point reaching ``accuracy`` (no interpolation: a real choice of settings)."""
    return next((p for p in frontier if p.accuracy >= accuracy - 1e-12), None)


@dataclass
class DifficultyStudy:
    bins: list[str]
    how: str
    sizes: dict[str, int]
    optimal: list[Point]
    single: list[Point]

    def savings(self) -> list[tuple[Point, Point]]:
        """For each point of the single-setting frontier, the cheapest per-bin choice as accurate."""
        out = []
        for s in self.single:
            c = cheapest(self.optimal, s.accuracy)
            if c is not None:
                out.append((s, c))
        return out


def difficulty_study(records: Sequence[Record], rule: str, settings: set[Setting],
                     facts: Mapping[str, MethodFacts] | None = None) -> DifficultyStudy | None:
    """Both frontiers over ``settings`` (those a user could pick; reference verifiers left out)."""
    bins, how = difficulty_bins(records, facts=facts)
    if not bins:
        return None
    # One (problem, seed) population for every setting: the pairs the settings all share.
    table = per_bin(records, bins, rule, settings)
    common = set.intersection(*(set(s) for s in table.values())) if table else set()
    if not common:
        return None
    table = {b: {k: v for k, v in s.items() if k in common} for b, s in table.items()}
    counts = {b: next(iter(s.values()))[2] for b, s in table.items()}
    if any(v[2] != counts[b] for b, s in table.items() for v in s.values()):
        return None  # settings ran on different problems: no fair per-bin comparison
    total = sum(counts.values())
    return DifficultyStudy(sorted(table), how, counts, compute_optimal_frontier(table, total),
                           single_frontier(table, total))
