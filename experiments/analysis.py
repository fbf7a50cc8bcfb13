"""Analyse: records into rows and the numbers drawn from them (no drawing, no text files).

One place computes what every table, figure and finding reads, so the report, the plots and the
tests agree on the numbers: per-setting accuracy rows with intervals, saturating fits, the Pareto
frontier, the paper's reference points and the compute-efficiency quantities.

Accuracy is averaged over problems per seed, then over seeds; its standard error is over
seeds (sample std / sqrt(k)) when there are several, else over problems. FLOPs are means
per problem, recomputed from each record's ledger token counts (``ComputeLedger``), so the
paper-convention and full-cost numbers cannot drift from the tokens actually counted.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import efficiency, uncertainty
from .facts import BASELINE_ALGORITHM, MethodFacts, facts_for, method_for
from .records import PASS_AT_N, Record

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    model: str
    method: str
    rule: str
    budget: int
    paper_flops: float
    full_flops: float
    accuracy: float  # fraction
    low: float  # 95 % Wilson interval, n = problems (see experiments.uncertainty)
    high: float
    n_problems: int
    n_seeds: int
    derived: bool  # some records derived by subsampling a larger run
    prm_flops: float = 0.0  # the PRM's part of full_flops


def rules_in(records: Iterable[Record]) -> list[str]:
    keys: set[str] = set()
    for r in records:
        keys.update(r.votes)
    order = {"majority": 0, "best_of_n": 1, "weighted": 2}
    return sorted(keys, key=lambda k: (order.get(k.split("/")[0], 9), k))


def resolve_rule(rule: str, available: Sequence[str]) -> str:
    """"weighted" -> "weighted/last" (or the first weighted key present); exact keys pass through."""
    if rule in available or rule == PASS_AT_N:
        return rule
    matches = [k for k in available if k.split("/")[0] == rule]
    if not matches:
        raise ValueError(f"no voting rule {rule!r} in these records; they have {list(available) + [PASS_AT_N]}")
    return next((k for k in matches if k.endswith("/last")), matches[0])


def summarize(records: Sequence[Record], rules: Sequence[str] | None = None,
              order: tuple[Sequence[str], Sequence[str]] | None = None) -> list[Row]:
    """One row per (model, method, rule, budget); ``order`` = (models, methods) as the config lists them."""
    groups: dict[tuple[str, str, int], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.model, r.method, r.budget)].append(r)
    rules = list(rules) if rules is not None else rules_in(records) + [PASS_AT_N]
    rows = []
    for (model, method, budget), recs in sorted(groups.items()):
        ledgers = [r.ledger for r in recs]
        paper = float(np.mean([lg.paper_flops for lg in ledgers]))
        full = float(np.mean([lg.full_flops for lg in ledgers]))
        prm = float(np.mean([lg.prm_flops for lg in ledgers]))
        derived = any(r.derived_from for r in recs)
        for rule in rules:
            by_seed: dict[int, list[bool]] = defaultdict(list)
            for r in recs:
                c = r.verdict(rule)
                if c is not None:
                    by_seed[r.seed].append(c)
            if not by_seed:
                continue
            acc = float(np.mean([np.mean(v) for v in by_seed.values()]))
            n = len({r.problem_id for r in recs if r.verdict(rule) is not None})
            rows.append(Row(model, method, rule, budget, paper, full, acc, *uncertainty.wilson(acc * n, n), n,
                            len(by_seed), derived, prm))
    return _ordered(rows, records, rules, order)


def _ordered(rows: list[Row], records: Sequence[Record], rules: Sequence[str],
             order: tuple[Sequence[str], Sequence[str]] | None = None) -> list[Row]:
    """Models and methods in config order when known (else smaller models first, cheaper methods
    first), then budget, then rule: the same order on every run."""
    if order is not None:
        models, methods = ({m: i for i, m in enumerate(names)} for names in order)
        rank = {rule: i for i, rule in enumerate(rules)}
        return sorted(rows, key=lambda r: (models.get(r.model, len(models)), r.model, methods.get(r.method, len(methods)),
                                           r.method, r.budget, rank.get(r.rule, len(rank))))
    size: dict[str, float] = {}
    for r in records:
        size.setdefault(r.model, r.ledger.policy_params)
    cost: dict[str, float] = {}
    for r in rows:
        cost[r.method] = min(cost.get(r.method, math.inf), r.paper_flops)
    rank = {rule: i for i, rule in enumerate(rules)}
    return sorted(rows, key=lambda r: (size.get(r.model, 0), r.model, cost[r.method], r.method, r.budget,
                                       rank.get(r.rule, len(rank))))


_N_NAMES = {"non_embedding": "non-embedding parameters", "total": "total parameters",
            "configured": "the configured parameter count"}


def parameter_conventions(records: Sequence[Record]) -> str:
    """What N is in these records' FLOPs, per model when they differ ("N = non-embedding parameters")."""
    by_model: dict[str, str] = {}
    for r in records:
        by_model.setdefault(r.model, r.parameter_count)
    kinds = set(by_model.values())
    if len(kinds) == 1:
        return f"N = {_N_NAMES.get(next(iter(kinds)), next(iter(kinds)))}"
    return "N = " + "; ".join(f"{m}: {_N_NAMES.get(k, k)}" for m, k in by_model.items())


# ---------------------------------------------------------------------------------------------
# Saturating fit: acc = a - b * exp(-c * (log10 F - log10 F0)), numpy only
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SaturatingFit:
    """a: the asymptote; b: the gap to it at F0 (the smallest FLOPs fitted); c: rate per decade."""

    a: float
    b: float
    c: float
    f0: float
    rmse: float
    n: int

    def predict(self, flops: float | np.ndarray) -> float | np.ndarray:
        return self.a - self.b * np.exp(-self.c * (np.log10(flops) - math.log10(self.f0)))


def fit_saturating(flops: Sequence[float], acc: Sequence[float]) -> SaturatingFit | None:
    """Least squares with 0 <= a <= 1 and b >= 0 (a rising curve under a ceiling an accuracy can
    reach). For each rate c the model is linear in (a, b), solved exactly (on the boundary when
    the free optimum breaks a bound); c comes from a log-spaced grid refined by golden section.
    Needs 3 distinct FLOPs."""
    x, y = np.log10(np.asarray(flops, float)), np.asarray(acc, float)
    if len(np.unique(x)) < 3:
        return None
    x0 = float(x.min())

    def solve(c: float) -> tuple[float, np.ndarray]:
        e = np.exp(-c * (x - x0))
        design = np.stack([np.ones_like(x), -e], axis=1)
        free, *_ = np.linalg.lstsq(design, y, rcond=None)
        options = [free] if 0 <= free[0] <= 1 and free[1] >= 0 else [
            np.array([1.0, max(0.0, float(e @ (1 - y)) / float(e @ e))]),  # ceiling at 1
            np.array([min(max(float(y.mean()), 0.0), 1.0), 0.0])]  # flat
        best = None
        for coef in options:
            resid = y - design @ coef
            if best is None or resid @ resid < best[0]:
                best = (float(resid @ resid), coef)
        return best

    grid = np.geomspace(1e-3, 30.0, 241)
    sse = np.array([solve(c)[0] for c in grid])
    i = int(np.argmin(sse))
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if solve(math.exp(m1))[0] <= solve(math.exp(m2))[0]:
            hi = m2
        else:
            lo = m1
    c = math.exp((lo + hi) / 2)
    err, (a, b) = solve(c)
    if sse[i] < err:  # the grid point was better (flat valley): keep it
        c = float(grid[i])
        err, (a, b) = solve(c)
    return SaturatingFit(float(a), float(b), float(c), 10 ** x0, math.sqrt(err / len(x)), len(x))


@dataclass(frozen=True)
class FitRow:
    model: str
    method: str
    rule: str
    fit: SaturatingFit
    max_flops: float

    @property
    def extrapolated(self) -> float:
        """Predicted accuracy at 10x the largest budget's FLOPs."""
        return float(self.fit.predict(10 * self.max_flops))


def fit_curves(rows: Sequence[Row], rule: str) -> list[FitRow]:
    out = []
    for (model, method), pts in _curves(rows, rule).items():
        fit = fit_saturating([p.paper_flops for p in pts], [p.accuracy for p in pts])
        if fit is not None:
            out.append(FitRow(model, method, rule, fit, max(p.paper_flops for p in pts)))
    return out


def _curves(rows: Sequence[Row], rule: str) -> dict[tuple[str, str], list[Row]]:
    curves: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if r.rule == rule and r.paper_flops > 0:
            curves[(r.model, r.method)].append(r)
    return {k: sorted(v, key=lambda r: r.paper_flops) for k, v in sorted(curves.items())}


# ---------------------------------------------------------------------------------------------
# Pareto frontier and compute-optimal model
# ---------------------------------------------------------------------------------------------
def pareto(rows: Sequence[Row], rule: str) -> list[Row]:
    """Points no other point beats with fewer or equal FLOPs: the compute-optimal choices."""
    pts = sorted((r for r in rows if r.rule == rule and r.paper_flops > 0), key=lambda r: (r.paper_flops, -r.accuracy))
    front, best = [], -math.inf
    for r in pts:
        if r.accuracy > best:
            front.append(r)
            best = r.accuracy
    return front


def best_per_model(rows: Sequence[Row], rule: str, budgets: Sequence[float]) -> dict[str, list[float]]:
    """For each model, the best accuracy any of its settings reaches within each FLOPs budget."""
    out = {}
    for model in sorted({r.model for r in rows}):
        mine = [r for r in rows if r.model == model and r.rule == rule and r.paper_flops > 0]
        out[model] = [max((r.accuracy for r in mine if r.paper_flops <= c), default=math.nan) for c in budgets]
    return out


# ---------------------------------------------------------------------------------------------
# Reference points (the paper)
# ---------------------------------------------------------------------------------------------
def load_reference(name: str) -> list[dict[str, Any]]:
    """``<family>-<dataset>``, e.g. llemma-math500 (Llemma-7B and -34B) or paper-gsm8k (every model)."""
    family, _, dataset = name.rpartition("-")
    with open(REFERENCE_DIR / "llemma.json", encoding="utf-8") as f:
        doc = json.load(f)
    pts = [p for p in doc["points"] if p["dataset"] == dataset
           and (family == "paper" or p["model"].lower().startswith(family.lower()))]
    if not pts:
        datasets = sorted({p["dataset"] for p in doc["points"]})
        raise ValueError(f"no reference points for {name!r}; use <family>-<dataset> with family llemma, mistral, "
                         f"llama3 or paper and dataset one of {datasets}")
    return pts


# ---------------------------------------------------------------------------------------------
# Compute efficiency against the sampling baseline
# ---------------------------------------------------------------------------------------------
@dataclass
class Efficiency:
    """The paper's headline quantities: FLOPs ratios to reach the baseline's accuracy and paired
    differences at equal FLOPs, each with its interval; and accuracy against verifier error."""

    ratios: list[efficiency.RatioRow]
    paired: list[efficiency.Comparison]
    sweep: list[efficiency.SweepPoint]
    baseline: str | None = None  # the method the others are measured against

    def headline(self) -> list[efficiency.RatioRow]:
        """Per (model, method): the row at the baseline's best accuracy."""
        best: dict[tuple[str, str], efficiency.RatioRow] = {}
        for r in self.ratios:
            k = (r.model, r.method)
            if k not in best or r.target > best[k].target:
                best[k] = r
        return list(best.values())


def compute_efficiency(records: Sequence[Record], rows: Sequence[Row], rule: str, baseline: str | None = None,
                       matrix: uncertainty.ProblemMatrix | None = None,
                       facts: Mapping[str, MethodFacts] | None = None, order: Sequence[str] = ()) -> Efficiency:
    """Against ``baseline`` (default: the study's sampling method with a real verifier, first in ``order``)."""
    facts = facts_for(records, facts)
    baseline = baseline or method_for(facts, BASELINE_ALGORITHM, order)
    if baseline is None:
        return Efficiency([], [], efficiency.verifier_sweep(records, rule, facts))
    matrix = matrix if matrix is not None else uncertainty.problem_matrix(records, rule)
    settings = sorted({(r.model, r.method) for r in rows if r.method != baseline and r.rule == rule
                       and len({x.budget for x in rows if x.method == r.method and x.model == r.model}) >= 2})
    methods = sorted({m for _, m in settings})
    ratios = [x for m in methods for x in efficiency.ratio_rows(rows, rule, m, baseline, matrix)]
    pairs = [x for model, m in settings for x in efficiency.compare(matrix, model, m, model, baseline)]
    return Efficiency(ratios, pairs, efficiency.verifier_sweep(records, rule, facts), baseline)


# ---------------------------------------------------------------------------------------------
# The study's order
# ---------------------------------------------------------------------------------------------
def config_order(results_dir: Path) -> tuple[list[str], list[str]] | None:
    """(policy names, method names) in the order of the run's resolved.yaml, if it has one."""
    import yaml

    path = results_dir / "resolved.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return [p["name"] for p in data["policies"]], [m["name"] for m in data["methods"]]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
