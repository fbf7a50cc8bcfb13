"""The paper's findings, decided from a study's numbers and their intervals, never written by hand.

Each claim of Wu et al. that a study can test becomes a verdict: "holds" (every comparison
significant in the claimed direction: paired test p < 0.05; for a FLOPs ratio, its 95 % interval
above 1), "holds at some budgets" (some significant in the claimed direction, none against
it), "does not hold" (some significant against it), or "not significant at this size". Policies are told apart by parameter count (the smallest is "small",
the largest "large"); methods by algorithm, leaving out reference verifiers (the exact checker).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from . import efficiency, uncertainty
from .facts import BASELINE_ALGORITHM, MethodFacts, facts_for, method_for
from .records import Record
from .uncertainty import ProblemMatrix

HOLDS = "holds"
PARTLY = "holds at some budgets"
FAILS = "does not hold"
UNSURE = "not significant at this size"


@dataclass(frozen=True)
class Finding:
    key: str  # a, a2, b, c, v: the same claim across studies and splits
    claim: str
    subject: str  # the policy or settings it was tested on
    verdict: str
    evidence: str  # the numbers behind the verdict


def policies_by_size(records: Sequence[Record]) -> list[str]:
    size: dict[str, float] = {}
    for r in records:
        size.setdefault(r.model, r.ledger.policy_params)
    return sorted(size, key=lambda m: (size[m], m))


def _verdict(diffs: Sequence[uncertainty.Difference], sign: int) -> str:
    """Several comparisons of one claim: ``sign`` +1 claims a > b, -1 claims a < b."""
    signs = [d.verdict * sign for d in diffs]
    if any(s < 0 for s in signs):
        return FAILS
    if signs and all(s > 0 for s in signs):
        return HOLDS
    return PARTLY if any(s > 0 for s in signs) else UNSURE


def _eq(d: uncertainty.Difference) -> str:
    return d.p_text if d.p_text.startswith("<") else f"= {d.p_text}"


def _comparisons_text(pairs: Sequence[efficiency.Comparison]) -> str:
    return "; ".join(f"b={p.budget}: {p.diff.text} (p {_eq(p.diff)})" for p in pairs)


def findings(records: Sequence[Record], headline: Sequence[efficiency.RatioRow],
             sweep: Sequence[efficiency.SweepPoint], matrix: ProblemMatrix, order: Sequence[str] = (),
             facts: Mapping[str, MethodFacts] | None = None) -> list[Finding]:
    """Every finding this study can test (``headline``: the ratio rows at the baseline's best accuracy).
    Methods are told apart by algorithm, reference verifiers left out (as ``facts`` say)."""
    out: list[Finding] = []
    models = policies_by_size(records)
    facts = facts_for(records, facts)
    sampling, rebase, mcts = (method_for(facts, a, order) for a in (BASELINE_ALGORITHM, "rebase", "mcts"))
    if sampling is None:
        return out
    # (a) REBASE reaches sampling's best accuracy with fewer FLOPs.
    heads = {(r.model, r.method): r for r in headline}
    for model in models:
        r = heads.get((model, rebase))
        if r is None or r.interval is None:
            continue
        ci = r.interval
        verdict = HOLDS if ci.low > 1 else FAILS if ci.high < 1 else UNSURE
        point = "not reached" if r.ratio != r.ratio else f"{r.ratio:.2f}x"
        out.append(Finding("a", f"{rebase} reaches {sampling}'s best accuracy with fewer FLOPs", model, verdict,
                           f"{point} fewer FLOPs to {100 * r.target:.1f} % [{r.interval_text}]"))
    # (a2) Weaker models gain more from REBASE (paired gains over sampling at equal FLOPs).
    if rebase is not None and len(models) >= 2:
        gap = _gain_gap(matrix, models[0], models[-1], rebase, sampling)
        if gap is not None:
            d, budgets = gap
            out.append(Finding("a2", f"the smaller policy gains more from {rebase} over {sampling} at equal FLOPs",
                               f"{models[0]} vs {models[-1]}", {1: HOLDS, -1: FAILS, 0: UNSURE}[d.verdict],
                               f"gain difference {d.text} points (p {_eq(d)}), averaged over "
                               f"budgets {', '.join(map(str, budgets))}"))
    # (b) The small policy with REBASE beats the large one with sampling at equal FLOPs.
    if rebase is not None and len(models) >= 2:
        pairs = efficiency.compare(matrix, models[0], rebase, models[-1], sampling)
        if pairs:
            out.append(Finding("b", f"{models[0]} with {rebase} beats {models[-1]} with {sampling} at equal FLOPs",
                               f"{models[0]} vs {models[-1]}", _verdict([p.diff for p in pairs], +1),
                               _comparisons_text(pairs)))
    # (c) MCTS is below sampling at equal FLOPs.
    for model in models if mcts is not None else []:
        pairs = efficiency.compare(matrix, model, mcts, model, sampling)
        if pairs:
            out.append(Finding("c", f"{mcts} is less accurate than {sampling} at equal FLOPs", model,
                               _verdict([p.diff for p in pairs], -1), _comparisons_text(pairs)))
    # (v) A worse verifier lowers accuracy (the reference checker against its noisiest version).
    out += _verifier_findings(matrix, sweep)
    return out


def _gain_gap(matrix: ProblemMatrix, small: str, large: str, method: str, baseline: str
              ) -> tuple[uncertainty.Difference, list[int]] | None:
    """Per problem, the small policy's gain over its baseline minus the large one's, averaged
    over the budgets both ran."""
    budgets = sorted({k[2] for k in matrix.keys if k[:2] == (small, method)}
                     & {k[2] for k in matrix.keys if k[:2] == (large, method)})
    total, used = np.zeros(len(matrix.problems)), []
    mask = np.ones(len(matrix.problems), bool)
    for b in budgets:
        gains = []
        for model in (small, large):
            got = efficiency.paired_diffs(matrix, (model, method, b), model, baseline)
            if got is None:
                break
            full = np.full(len(matrix.problems), np.nan)
            full[got[0]] = got[1]
            gains.append(full)
        if len(gains) < 2:
            continue
        used.append(b)
        total = total + gains[0] - gains[1]
        mask &= ~np.isnan(gains[0]) & ~np.isnan(gains[1])
    if not used or not mask.any():
        return None
    return uncertainty.difference(total[mask] / len(used)), used


def _verifier_findings(matrix: ProblemMatrix, sweep: Sequence[efficiency.SweepPoint]) -> list[Finding]:
    out = []
    groups: dict[tuple[str, str, int], list[efficiency.SweepPoint]] = {}
    for p in sweep:
        groups.setdefault((p.model, p.algorithm, p.budget), []).append(p)
    for (model, algorithm, budget), pts in sorted(groups.items()):
        pts = sorted(pts, key=lambda p: p.flip_rate)
        best, worst = pts[0], pts[-1]
        a, b = (model, best.method, budget), (model, worst.method, budget)
        if a not in matrix.keys or b not in matrix.keys:
            continue
        d = uncertainty.difference(matrix.paired(a, b))
        out.append(Finding("v", f"{algorithm} is more accurate with the exact checker than with "
                                f"{100 * worst.flip_rate:.0f} % of its verdicts flipped", f"{model}, budget {budget}",
                           {1: HOLDS, -1: FAILS, 0: UNSURE}[d.verdict],
                           f"{d.text} points (p {_eq(d)}); accuracy at flip rates "
                           + ", ".join(f"{100 * p.flip_rate:.0f} %: {100 * p.accuracy:.1f}" for p in pts)))
    return out


def format_findings(found: Sequence[Finding]) -> str:
    lines = ["Findings (95 % intervals from a paired bootstrap over problems; Δ in accuracy points):"]
    for f in found:
        lines.append(f"  ({f.key}) {f.claim} [{f.subject}]: {f.verdict.upper()}")
        lines.append(f"      {f.evidence}")
    return "\n".join(lines)


def replication(splits: Sequence[tuple[str, Sequence[Finding]]]) -> list[tuple[Finding, list[Finding | None], str]]:
    """For every finding of the first split: the same finding in each split (None: not tested there)
    and whether it replicates, i.e. every split reaches the same verdict."""
    rows = []
    for f in splits[0][1]:
        same = [next((g for g in found if (g.key, g.subject, g.claim) == (f.key, f.subject, f.claim)), None)
                for _, found in splits]
        verdicts = {g.verdict if g is not None else None for g in same}
        rows.append((f, same, "yes" if len(verdicts) == 1 else "no"))
    return rows


def format_replication(splits: Sequence[tuple[str, Sequence[Finding]]]) -> str:
    names = [name for name, _ in splits]
    lines = ["Findings on each split (" + " | ".join(names) + "), and whether they replicate:"]
    for f, same, replicates in replication(splits):
        verdicts = [g.verdict if g is not None else "not tested" for g in same]
        lines.append(f"  ({f.key}) {f.claim} [{f.subject}]: " + " | ".join(verdicts) + f" -> replicates: {replicates}")
    return "\n".join(lines)
