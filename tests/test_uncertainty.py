"""Intervals and findings against hand-computed values (bootstraps at their fixed seed, within
Monte-Carlo error)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.efficiency import RatioRow, Reach, ratio_interval
from experiments.findings import FAILS, HOLDS, PARTLY, UNSURE, _verdict, findings
from experiments.records import Record, Vote
from experiments.uncertainty import Difference, difference, mcnemar_p, paired_p_value, problem_matrix, wilson
from treesearch.ledger import ComputeLedger

RULE = "weighted/last"


def rec(problem: int, method: str, budget: int, correct: bool, flops: int, model: str = "m", params: int = 1,
        seed: int = 0) -> Record:
    return Record(problem_id=f"p{problem}", model=model, method=method, budget=budget, seed=seed,
                  algorithm=method, votes={RULE: Vote("1", correct)}, pass_at_n=correct,
                  ledger=ComputeLedger(policy_params=params, generated_tokens=flops // (2 * params)))


def test_wilson_intervals_by_hand_and_never_zero_width():
    assert wilson(2, 5) == (pytest.approx(0.1176, abs=1e-4), pytest.approx(0.7693, abs=1e-4))
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))  # 0/n: still uncertain
    assert wilson(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)  # n/n too
    lo, hi = wilson(50, 100)
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_two_seeds_that_agree_still_have_an_interval():
    records = [rec(i, "greedy", 1, i < 3, 100, seed=s) for i in range(4) for s in (0, 1)]
    from experiments.analysis import summarize

    [row] = [r for r in summarize(records) if r.rule == RULE]
    assert (row.accuracy, row.n_seeds) == (0.75, 2)
    assert (row.low, row.high) == wilson(3, 4) and row.high - row.low > 0.3


def test_paired_difference_matches_normal_theory():
    """400 problems: a right and b wrong on 60, the reverse on 20. Mean 0.1, per-problem variance
    0.2 - 0.01 = 0.19, so the 95 % interval is 0.1 ± 1.96 · sqrt(0.19 / 400) = [0.0573, 0.1427]."""
    d = np.array([1.0] * 60 + [-1.0] * 20 + [0.0] * 320)
    diff = difference(d)
    assert diff.delta == pytest.approx(0.1)
    assert diff.low == pytest.approx(0.0573, abs=0.008) and diff.high == pytest.approx(0.1427, abs=0.008)
    assert diff.p_value == mcnemar_p(60, 20) and diff.verdict == 1
    assert diff.text == "+10.0 [" + f"{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]"


def test_sign_flip_test_on_fractional_differences():
    # Differences of seed averages: all of one sign on 12 problems -> p = 2 / 2^12 exactly, within MC error.
    p = paired_p_value(np.array([0.5] * 12 + [0.0] * 5))
    assert p == pytest.approx(2 / 4096, abs=2e-3)
    assert paired_p_value(np.array([0.5, -0.5] * 10)) == pytest.approx(1.0, abs=0.01)
    assert paired_p_value(np.zeros(5)) == 1.0


def _curves(method_right: set[int], n: int = 200) -> list[Record]:
    """sampling: budget 1 (100 FLOPs) all wrong, budget 2 (200 FLOPs) right on problems 0-99;
    rebase: one budget at 50 FLOPs, right on ``method_right``."""
    out = [rec(i, "sampling", 1, False, 100) for i in range(n)]
    out += [rec(i, "sampling", 2, i < 100, 200) for i in range(n)]
    out += [rec(i, "rebase", 1, i in method_right, 50) for i in range(n)]
    return out


def test_ratio_interval_when_the_method_always_reaches_the_target():
    """Right wherever sampling is, and more: in every resample rebase's first point is at or above
    the target, so the ratio is 200 / 50 = 4 in all of them."""
    ci = ratio_interval(problem_matrix(_curves(set(range(120))), RULE), "m", "rebase", "sampling", 2)
    assert (ci.low, ci.high, ci.not_reached) == (pytest.approx(4.0), pytest.approx(4.0), 0.0)


def test_ratio_interval_reports_the_share_of_resamples_not_reaching_the_target():
    """rebase right on 0-89 and 100-113: 14 problems it alone gets, 10 only sampling gets, so it
    misses the target in a resample when the bootstrap sum of the differences (+1 x 14, -1 x 10,
    mean 0.02, variance 0.1196 per problem) falls below 0: P ≈ Φ((-0.5 - 4) / sqrt(200 · 0.1196)) = 0.179."""
    right = set(range(90)) | set(range(100, 114))
    ci = ratio_interval(problem_matrix(_curves(right), RULE), "m", "rebase", "sampling", 2)
    assert ci.not_reached == pytest.approx(0.179, abs=0.03)
    assert ci.low == 0.0 and ci.high == pytest.approx(4.0)  # "not reached" to 4x
    row = RatioRow("m", "rebase", "sampling", 2, 0.5, 200.0, Reach(50.0, True), ci)
    assert row.interval_text.startswith("not reached to 4.00x (not reached in 1")


def test_verdicts_of_several_comparisons():
    up, down, flat = Difference(0.1, 0.05, 0.15, 0.001, 100), Difference(-0.1, -0.15, -0.05, 0.001, 100), \
        Difference(0.01, -0.05, 0.07, 0.6, 100)
    assert _verdict([up, up], +1) == HOLDS
    assert _verdict([up, flat], +1) == PARTLY
    assert _verdict([up, down], +1) == FAILS
    assert _verdict([flat], +1) == UNSURE
    assert _verdict([down, down], -1) == HOLDS


def test_findings_from_a_study_where_search_clearly_wins():
    """Two policies, 100 problems: rebase is 25 points above sampling for both at equal budgets and
    reaches sampling's best with 4x fewer FLOPs; the large policy costs 4x the small one's FLOPs."""
    records = []
    for model, params, base in (("small", 1, 0.3), ("large", 4, 0.5)):
        for i in range(100):
            for b in (1, 2, 4):
                records.append(rec(i, "sampling", b, i < round(100 * (base + 0.05 * b)), 100 * b * params, model,
                                   params))
                records.append(rec(i, "rebase", b, i < round(100 * (base + 0.05 * b + 0.25)), 100 * b * params,
                                   model, params))
    from experiments.analysis import compute_efficiency, summarize

    rows = summarize(records)
    matrix = problem_matrix(records, RULE)
    eff = compute_efficiency(records, rows, RULE, matrix=matrix)
    found = {(f.key, f.subject): f for f in findings(records, eff.headline(), eff.sweep, matrix)}
    assert found[("a", "small")].verdict == HOLDS and "4.00x fewer FLOPs" in found[("a", "small")].evidence
    assert found[("a", "large")].verdict == HOLDS
    assert found[("a2", "small vs large")].verdict == UNSURE  # both gain 25 points
    # small rebase at budget 4 (400 FLOPs, 75 %) against large sampling at budget 1 (400 FLOPs, 55 %);
    # its budgets 1 and 2 lie below the large policy's cheapest FLOPs, so they are not compared
    b = found[("b", "small vs large")]
    assert b.verdict == HOLDS and b.evidence.startswith("b=4: +20.0 [") and "b=2" not in b.evidence
    assert ("c", "small") not in found  # no MCTS in this study


def test_report_writes_intervals_to_csv(tmp_path):
    import csv

    from experiments.records import RecordWriter
    from experiments.report import report

    records = [rec(i, m, b, i < (30 + 10 * b + (25 if m == "rebase" else 0)), 100 * b)
               for i in range(100) for m in ("sampling", "rebase") for b in (1, 2)]
    with RecordWriter(tmp_path / "records.jsonl") as w:
        w.write(records)
    res = report(tmp_path, plots=False)
    [ratio] = [r for r in csv.DictReader(open(res.files["ratios.csv"])) if r["budget"] == "2"]
    # rebase reaches sampling's 50 % already at budget 1 (65 %, in every resample too): at most 100 FLOPs
    assert (ratio["method"], float(ratio["ratio"]), ratio["reached_at_first_budget"]) == ("rebase", 2.0, "True")
    assert (float(ratio["low"]), float(ratio["high"]), float(ratio["not_reached"])) == (
        pytest.approx(2.0), pytest.approx(2.0), 0.0)
    [row] = [r for r in csv.DictReader(open(res.files["table.csv"]))
             if (r["method"], r["budget"], r["rule"]) == ("sampling", "1", RULE)]
    assert (float(row["low"]), float(row["high"])) == pytest.approx(wilson(40, 100))
    comparisons = list(csv.DictReader(open(res.files["comparisons.csv"])))
    assert [(c["budget"], float(c["delta"])) for c in comparisons] == [("1", 0.25), ("2", 0.25)]
