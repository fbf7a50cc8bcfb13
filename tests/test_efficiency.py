"""FLOPs-to-accuracy ratios, paired tests and the verifier sweep, against hand-computed values."""
from __future__ import annotations

import math

import pytest

from experiments.efficiency import compare, flops_to_reach, ratio_rows, verifier_sweep
from experiments.facts import declared
from experiments.records import Record, Vote
from treesearch.ledger import ComputeLedger
from experiments.analysis import Row, compute_efficiency
from experiments.report import format_headline
from experiments.uncertainty import mcnemar_p, problem_matrix

RULE = "weighted/last"


def row(method: str, budget: int, flops: float, acc: float, model: str = "m") -> Row:
    return Row(model, method, RULE, budget, flops, flops, acc, acc, acc, 100, 1, False)


def test_flops_to_reach_interpolates_on_log_flops_and_never_extrapolates():
    pts = [(1e8, 0.2), (1e9, 0.4), (1e10, 0.5)]
    assert flops_to_reach(pts, 0.3).flops == pytest.approx(10 ** 8.5)  # half-way in log FLOPs
    assert flops_to_reach(pts, 0.4).flops == pytest.approx(1e9)
    first = flops_to_reach(pts, 0.1)
    assert first.flops == 1e8 and first.bound  # reached at the first budget: an upper bound
    assert math.isnan(flops_to_reach(pts, 0.6).flops)  # above the best point: not reached
    # A dip does not hide an earlier arrival.
    assert flops_to_reach([(1, 0.1), (10, 0.5), (100, 0.3), (1000, 0.6)], 0.4).flops == pytest.approx(10 ** 0.75)


def test_ratio_rows_read_the_paper_headline():
    rows = [row("sampling", 1, 1e8, 0.20), row("sampling", 4, 4e8, 0.30), row("sampling", 16, 1.6e9, 0.30),
            row("sampling", 32, 3.2e9, 0.35),
            row("rebase", 1, 1e8, 0.20), row("rebase", 4, 4.4e8, 0.40)]
    ratios = ratio_rows(rows, RULE, "rebase", "sampling")
    assert [r.budget for r in ratios] == [1, 4, 32]  # budget 16 reaches nothing new
    best = ratios[-1]
    assert best.target == 0.35 and best.baseline_flops == 3.2e9
    # rebase crosses 0.35 half-way from 0.20 at 1e8 to 0.40 at 4.4e8 ... in log FLOPs: 3/4 of the way
    f = 10 ** (8 + 0.75 * math.log10(4.4))
    assert best.method_flops.flops == pytest.approx(f)
    assert best.ratio == pytest.approx(3.2e9 / f)


def test_mcnemar_exact_p_values():
    assert mcnemar_p(8, 1) == pytest.approx(2 * (1 + 9) / 512)
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 / 1024)


def rec(problem: str, method: str, budget: int, correct: bool, verifier=None, algorithm=None, model="m", seed=0,
        flops: int = 0):
    """A record whose paper FLOPs are ``flops`` (N = 1, flops / 2 generated tokens)."""
    return Record(problem_id=problem, model=model, method=method, budget=budget, seed=seed,
                  algorithm=algorithm or method.split("-")[0], votes={RULE: Vote("1", correct)},
                  pass_at_n=correct, verifier=verifier,
                  ledger=ComputeLedger(policy_params=1, generated_tokens=flops // 2))


def test_compare_reads_the_other_curve_at_equal_flops_per_problem():
    """mcts at 300 FLOPs lies between sampling's budgets 4 (200 FLOPs) and 16 (800 FLOPs), at
    t = log(300/200) / log(4) of the way in log FLOPs; each problem's sampling verdict is read there."""
    right = {("sampling", 4): [1, 0, 0, 0], ("sampling", 16): [1, 1, 1, 0], ("mcts", 8): [1, 1, 0, 1]}
    flops = {("sampling", 4): 200, ("sampling", 16): 800, ("mcts", 8): 300}
    records = [rec(f"p{i}", m, b, bool(v[i]), flops=flops[(m, b)]) for (m, b), v in right.items() for i in range(4)]
    [c] = compare(problem_matrix(records, RULE), "m", "mcts", "m", "sampling")
    t = math.log(1.5) / math.log(4)
    per_problem = [1 - 1, 1 - t, 0 - t, 1 - 0]  # mcts minus sampling interpolated per problem
    assert (c.budget, c.b_budgets, c.flops, c.flops_ratio) == (8, (4, 16), 300, pytest.approx(1.0))
    assert c.diff.delta == pytest.approx(sum(per_problem) / 4) and c.diff.n == 4
    assert c.b_label == "sampling b=4-16"
    # Far beyond the other curve's FLOPs (more than 1.25x past its last budget): no comparison.
    records += [rec(f"p{i}", "mcts", 64, True, flops=2000) for i in range(4)]
    assert [x.budget for x in compare(problem_matrix(records, RULE), "m", "mcts", "m", "sampling")] == [8]


def test_verifier_sweep_groups_by_flip_rate():
    # What the PRM entries declare: the exact checker errs never, the noisy one at its rate (0.2 unless set).
    assert declared("rebase", {"type": "builtin_oracle"}).reference_error == 0.0
    assert declared("rebase", {"type": "noisy_oracle", "flip_rate": 0.3}).reference_error == 0.3
    assert declared("rebase", {"type": "noisy_oracle"}).reference_error == 0.2
    assert declared("rebase", {"type": "noisy_oracle", "flip": "right"}).reference_flip == "right"
    assert not declared("rebase", {"type": "likelihood", "path": "x"}).reference and not declared("rebase", None).reference
    records = []
    for i in range(4):
        records.append(rec(f"p{i}", "rebase-oracle", 16, i < 3, {"type": "builtin_oracle"}))
        records.append(rec(f"p{i}", "rebase-noisy0.2", 16, i < 1, {"type": "noisy_oracle", "flip_rate": 0.2}))
        records.append(rec(f"p{i}", "rebase-oracle", 8, True, {"type": "builtin_oracle"}))  # one rate only: no sweep
        records.append(rec(f"p{i}", "rebase", 16, True, {"type": "likelihood"}))
        records.append(rec(f"p{i}", "rebase-right0.2", 16, True,  # right-only flips: not pooled into the sweep
                           {"type": "noisy_oracle", "flip_rate": 0.2, "flip": "right"}))
    pts = verifier_sweep(records, RULE)
    assert [(p.budget, p.flip_rate, p.accuracy, p.n) for p in pts] == [(16, 0.0, 0.75, 4), (16, 0.2, 0.25, 4)]


def test_compute_efficiency_and_headline_text():
    rows = [row("sampling", 1, 1e8, 0.2), row("sampling", 2, 2e8, 0.3),
            row("rebase", 1, 1e8, 0.25), row("rebase", 2, 2e8, 0.5)]
    records = [rec("p0", "sampling", 1, False, flops=100), rec("p0", "rebase", 1, True, flops=100)]
    eff = compute_efficiency(records, rows, RULE)
    [head] = eff.headline()
    assert head.method == "rebase" and head.target == 0.3
    assert [(p.method, p.budget, p.b_budgets, p.diff.delta, p.flops_ratio) for p in eff.paired] == [
        ("rebase", 1, (1, 1), 1.0, 1.0)]
    text = format_headline(eff)
    assert "m rebase: 30% (sampling at budget 2" in text and "x" in text.splitlines()[1]
