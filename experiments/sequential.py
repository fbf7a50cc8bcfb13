"""Sequential revisions against parallel sampling, per difficulty (Snell et al. 2024, §5.2-5.3).

At a fixed budget of N attempts, ``revisions`` can run them as N chains of 1 (all parallel: plain
sampling), 1 chain of N (all sequential), or anything between. This module reads every such
setting of a study (records of the ``revisions`` algorithm; the chain length L = n / chains comes
from the record's parameters) and answers Snell's questions:

* the accuracy of each ratio per difficulty bin (the dataset's level, else pass@1 bins:
  ``difficulty.difficulty_bins``), with Wilson intervals;
* the compute-optimal ratio per bin: the chain length with the best accuracy on that bin. Choosing
  it on the problems it is then scored on flatters it, so the choice is **cross-validated**: the
  problems are split in two folds (alternating, in id order); each fold is scored with the lengths
  chosen on the other. The in-sample choice is reported too, as the upper bound;
* what that is worth: against the best single ratio (one L for every problem, chosen the same
  cross-validated way) and against all-parallel sampling with the same verifier, the FLOPs the
  compute-optimal curve needs to reach each baseline accuracy (``efficiency.ratio_interval``:
  paired bootstrap over problems), and the paired difference at equal budget.

The compute-optimal and best-single curves are built per problem (each problem takes the setting
chosen for its bin and fold), so they join the study's ``ProblemMatrix`` as settings of their own
and every interval machine of the report applies to them unchanged.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from . import efficiency, uncertainty
from .difficulty import difficulty_bins
from .facts import MethodFacts, facts_for
from .records import Record
from .uncertainty import Difference, ProblemMatrix

ALGORITHM = "revisions"
CHAIN_RULE = "hierarchical"
RULE = f"{CHAIN_RULE}/last"  # Snell's selection across revision chains: the verifier's best per chain, weighted across
OPTIMAL = "compute-optimal ratio"
SINGLE = "best single ratio"
PARALLEL = "all parallel"
FOLDS = 2


@dataclass(frozen=True)
class Setting:
    """One ratio: ``budget`` attempts as ``budget // length`` chains of ``length``."""

    model: str
    method: str
    budget: int
    length: int

    @property
    def key(self) -> tuple[str, str, int]:
        return self.model, self.method, self.budget

    @property
    def share(self) -> float:
        """The sequential share, log-scaled: 0 all parallel (L = 1), 1 all sequential (L = N)."""
        return float(np.log2(self.length) / np.log2(self.budget)) if self.budget > 1 else 0.0


@dataclass(frozen=True)
class Cell:
    """A setting's accuracy on one difficulty bin."""

    setting: Setting
    bin: str
    right: float  # problems right (seeds averaged)
    n: int

    @property
    def accuracy(self) -> float:
        return self.right / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return uncertainty.wilson(self.right, self.n)


@dataclass(frozen=True)
class Choice:
    """The chain length chosen for a bin at a budget: in-sample, and on each fold from the other."""

    model: str
    budget: int
    bin: str
    in_sample: int
    per_fold: tuple[int, ...]


@dataclass
class SequentialStudy:
    rule: str
    how: str  # how the bins were made
    settings: list[Setting]
    cells: list[Cell]
    choices: list[Choice]
    matrix: ProblemMatrix  # the study's settings plus the compute-optimal and best-single curves
    policy_flops: dict[tuple[str, str, int], float]  # per setting: mean FLOPs of every token the policy processed
    savings: list[efficiency.RatioRow] = field(default_factory=list)
    differences: dict[tuple[str, int, str], Difference] = field(default_factory=dict)  # (model, budget, vs) -> d

    @property
    def models(self) -> list[str]:
        return sorted({s.model for s in self.settings})

    def budgets(self, model: str) -> list[int]:
        return sorted({s.budget for s in self.settings if s.model == model})

    def bins(self) -> list[str]:
        return sorted({c.bin for c in self.cells})


def ratio_settings(records: Sequence[Record], facts: Mapping[str, MethodFacts] | None = None) -> list[Setting]:
    """Every (model, method, budget) of the revisions algorithm with its chain length."""
    facts = facts_for(records, facts)
    out = {}
    for r in records:
        if facts[r.method].algorithm != ALGORITHM or r.derived_from is not None:
            continue
        n, chains = int(r.params.get("n", r.budget)), int(r.params.get("chains", 1))
        out[(r.model, r.method, r.budget)] = Setting(r.model, r.method, r.budget, n // chains)
    return sorted(out.values(), key=lambda s: (s.model, s.budget, s.length))


def _folds(problems: Sequence[str]) -> np.ndarray:
    """Fold of each problem: alternating in id order (ids are the matrix's sorted problems)."""
    return np.arange(len(problems)) % FOLDS


def _best(matrix: ProblemMatrix, settings: Sequence[Setting], cols: np.ndarray) -> Setting:
    """The setting with the most right answers on ``cols`` (ties: the more parallel, which is cheaper)."""
    scores = [np.nansum(matrix.correct[matrix.index(s.key), cols]) for s in settings]
    return settings[int(np.argmax(np.round(scores, 9)))]  # argmax keeps the first (shortest L) of a tie


def sequential_study(records: Sequence[Record], rule: str = RULE,
                     facts: Mapping[str, MethodFacts] | None = None) -> SequentialStudy | None:
    """The ratio study of every model with at least two chain lengths at a budget; None without any."""
    facts = facts_for(records, facts)
    settings = ratio_settings(records, facts)
    groups: dict[tuple[str, int], list[Setting]] = defaultdict(list)
    for s in settings:
        groups[(s.model, s.budget)].append(s)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return None
    # All-parallel chains (L = 1) are independent samples: where the dataset has no levels, their hit rate bins
    # the problems by pass@1, as Snell et al. binned by the base model's samples.
    parallel = {s.method for s in settings if s.length == 1}
    sampled = {m: dataclasses.replace(f, independent_samples=f.independent_samples or m in parallel)
               for m, f in facts.items()}
    bins, how = difficulty_bins(records, facts=sampled)
    if not bins:
        return None
    matrix = uncertainty.problem_matrix(records, rule)
    settings = [s for v in groups.values() for s in v]
    # Only problems every ratio ran (and that have a bin), so each choice compares like with like.
    rows = [matrix.index(s.key) for s in settings if s.key in matrix.keys]
    if len(rows) < len(settings):
        return None
    shared = ~np.isnan(matrix.correct[rows]).any(axis=0) & np.array([p in bins for p in matrix.problems])
    problems = [p for p, keep in zip(matrix.problems, shared) if keep]
    if not problems:
        return None
    labels = sorted({bins[p] for p in problems})
    of_bin = np.array([bins.get(p) for p in matrix.problems])
    fold = np.full(len(matrix.problems), -1)
    fold[shared] = _folds(problems)

    cells = []
    for s in settings:
        row = matrix.correct[matrix.index(s.key)]
        for b in labels:
            cols = shared & (of_bin == b)
            cells.append(Cell(s, b, float(np.nansum(row[cols])), int(cols.sum())))

    def blank() -> dict[str, np.ndarray]:
        """A new curve's row: NaN (not run) on every problem until ``take`` fills it."""
        return {name: np.full(len(matrix.problems), np.nan) for name in ("correct", "flops")}

    def take(into: dict[str, np.ndarray], s: Setting, cols: np.ndarray) -> None:
        """Setting ``s``'s verdicts and FLOPs on the problems ``cols``."""
        into["correct"][cols] = matrix.correct[matrix.index(s.key), cols]
        into["flops"][cols] = matrix.flops[matrix.index(s.key), cols]

    choices, extra = [], {}
    for (model, budget), group in sorted(groups.items()):
        optimal, single = blank(), blank()
        for b in labels:
            in_bin = shared & (of_bin == b)
            per_fold = []
            for f in range(FOLDS):
                chosen = _best(matrix, group, in_bin & (fold != f))
                per_fold.append(chosen.length)
                take(optimal, chosen, in_bin & (fold == f))
            choices.append(Choice(model, budget, b, _best(matrix, group, in_bin).length, tuple(per_fold)))
        for f in range(FOLDS):
            take(single, _best(matrix, group, shared & (fold != f)), shared & (fold == f))
        extra[(model, OPTIMAL, budget)] = optimal
        extra[(model, SINGLE, budget)] = single
        parallel = next((s for s in group if s.length == 1), None)
        if parallel is not None:
            take(extra.setdefault((model, PARALLEL, budget), blank()), parallel, shared)
    matrix = _with_settings(matrix, extra)
    keys = {s.key for s in settings}
    spent: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in records:
        if (r.model, r.method, r.budget) in keys and r.problem_id in problems:
            spent[(r.model, r.method, r.budget)].append(r.ledger.policy_flops)
    study = SequentialStudy(rule, how, settings, cells, choices, matrix,
                            {k: float(np.mean(v)) for k, v in spent.items()})
    _compare(study)
    return study


def _with_settings(matrix: ProblemMatrix, extra: Mapping[tuple[str, str, int], Mapping[str, np.ndarray]]) -> ProblemMatrix:
    keys = matrix.keys + tuple(extra)
    correct = np.vstack([matrix.correct, *(v["correct"][None] for v in extra.values())])
    flops = np.vstack([matrix.flops, *(v["flops"][None] for v in extra.values())])
    return ProblemMatrix(matrix.problems, keys, correct, flops)


def curve(matrix: ProblemMatrix, model: str, method: str) -> list[tuple[int, float, float]]:
    """(budget, mean paper FLOPs, accuracy) of a setting family, over the problems it has."""
    out = []
    for key in sorted((k for k in matrix.keys if k[:2] == (model, method)), key=lambda k: k[2]):
        i = matrix.index(key)
        out.append((key[2], float(np.nanmean(matrix.flops[i])), float(np.nanmean(matrix.correct[i]))))
    return out


def _compare(study: SequentialStudy) -> None:
    """The compute-optimal curve against each baseline curve: FLOPs to reach the baseline's accuracy at
    each of its budgets (with the paired bootstrap), and the paired difference at equal budget."""
    m = study.matrix
    for model in study.models:
        mine = [(f, a) for _, f, a in curve(m, model, OPTIMAL)]
        for baseline in (SINGLE, PARALLEL):
            for budget, f, a in curve(m, model, baseline):
                reach = efficiency.flops_to_reach(mine, a)
                study.savings.append(efficiency.RatioRow(
                    model, OPTIMAL, baseline, budget, a, f, reach,
                    efficiency.ratio_interval(m, model, OPTIMAL, baseline, budget)))
                study.differences[(model, budget, baseline)] = uncertainty.difference(
                    m.paired((model, OPTIMAL, budget), (model, baseline, budget)))
