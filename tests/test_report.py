"""The report against hand-computed values on a hand-written fixture (tests/data/report_records.jsonl)."""
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments.analysis import Row, fit_saturating, load_reference, pareto, resolve_rule, summarize
from experiments.records import read_records
from experiments.report import report
from experiments.uncertainty import wilson
from treesearch.ledger import paper_flops

FIXTURE = Path(__file__).parent / "data" / "report_records.jsonl"


@pytest.fixture()
def results(tmp_path) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    shutil.copy(FIXTURE, d / "records.jsonl")
    return d


def _row(rows, model, method, rule, budget=None) -> Row:
    [r] = [r for r in rows if (r.model, r.method, r.rule) == (model, method, rule) and budget in (None, r.budget)]
    return r


def test_greedy_llemma_7b_paper_flops_match_table_4():
    """290.8 generated tokens at N = 6.74e9 is the paper's 3.92e12 FLOPs (Table 4)."""
    assert paper_flops(6.74e9, 290.8) == pytest.approx(3.92e12, rel=0.005)
    rows = summarize(read_records(FIXTURE))
    greedy = _row(rows, "llemma-7b", "greedy", "weighted/last")
    assert greedy.paper_flops == pytest.approx(2 * 6.74e9 * 290.8, rel=1e-12)  # mean of 280, 300, 290, 295, 289
    assert greedy.paper_flops == pytest.approx(3.92e12, rel=0.005)


def test_table_values_by_hand():
    rows = summarize(read_records(FIXTURE))
    # greedy, one seed, 2 of 5 right: the Wilson 95 % interval of 2/5 is [0.1176, 0.7693]
    g = _row(rows, "llemma-7b", "greedy", "weighted/last")
    assert (g.accuracy, g.n_problems, g.n_seeds, g.derived) == (0.4, 5, 1, False)
    assert (g.low, g.high) == (pytest.approx(0.1176, abs=1e-4), pytest.approx(0.7693, abs=1e-4))
    assert g.full_flops == pytest.approx(2 * 6.74e9 * 340.8)  # 50 prompt tokens each, no PRM
    # sampling, two seeds: per-seed accuracies [1.0, 0.5] -> 0.75; the interval counts problems (2), not
    # problem-seed pairs: 1.5 of 2
    s = _row(rows, "llemma-7b", "sampling", "weighted/last")
    assert (s.accuracy, s.n_problems, s.n_seeds, s.derived) == (0.75, 2, 2, True)
    assert (s.low, s.high) == wilson(1.5, 2)
    assert s.paper_flops == pytest.approx(2 * 6.74e9 * 1050)
    assert s.full_flops == pytest.approx(2 * 6.74e9 * 1150 + 2 * 1e9 * 500)
    m = _row(rows, "llemma-7b", "sampling", "majority")
    assert (m.accuracy, m.low, m.high) == (pytest.approx(0.25), *wilson(0.5, 2))
    o = _row(rows, "llemma-7b", "sampling", "pass@n")
    assert o.accuracy == 0.75
    big = _row(rows, "llemma-34b", "greedy", "weighted/last")
    assert (big.accuracy, big.high, big.paper_flops) == (1.0, 1.0, pytest.approx(2 * 33.7e9 * 290))
    assert big.low == wilson(big.n_problems, big.n_problems)[0] < 1.0  # all right is not certainty
    # small model first, cheaper method first
    assert [(r.model, r.method) for r in rows][0] == ("llemma-7b", "greedy")
    assert [r.model for r in rows][-1] == "llemma-34b"


def test_pareto_and_rule_names():
    rows = summarize(read_records(FIXTURE))
    assert resolve_rule("weighted", ["majority", "weighted/last"]) == "weighted/last"
    with pytest.raises(ValueError, match="no voting rule 'best_of_n'"):
        resolve_rule("best_of_n", ["majority", "weighted/last"])
    front = pareto(rows, "weighted/last")
    assert [(r.model, r.method) for r in front] == [("llemma-7b", "greedy"), ("llemma-7b", "sampling"),
                                                    ("llemma-34b", "greedy")]
    assert [(r.model, r.method) for r in pareto(rows, "majority")] == [("llemma-7b", "greedy"), ("llemma-34b", "greedy")]


def test_saturating_fit_recovers_a_known_curve():
    flops = np.geomspace(1e12, 1e16, 6)
    acc = 0.6 - 0.4 * np.exp(-0.8 * (np.log10(flops) - 12))
    fit = fit_saturating(flops, acc)
    assert (fit.a, fit.b, fit.c) == (pytest.approx(0.6, abs=1e-4), pytest.approx(0.4, abs=1e-4), pytest.approx(0.8, rel=1e-3))
    assert fit.predict(1e17) == pytest.approx(0.6 - 0.4 * math.exp(-0.8 * 5), abs=1e-4)
    assert fit_saturating([1e12, 1e13], [0.1, 0.2]) is None  # three distinct budgets at least
    falling = fit_saturating([1e12, 1e13, 1e14], [0.5, 0.4, 0.3])  # b >= 0: a flat line, not a rising curve
    assert (falling.a, falling.b) == (pytest.approx(0.4), 0.0)
    linear = fit_saturating([1e12, 1e13, 1e14, 1e15], [0.2, 0.4, 0.6, 0.8])  # the ceiling stays <= 1
    assert linear.a <= 1.0 and linear.predict(1e16) <= 1.0


def test_report_writes_tables_and_plots(results, tmp_path):
    res = report(results, out=tmp_path / "rep", reference="llemma-math500")
    for name in ("table.csv", "fits.csv", "pareto.csv", "results.md", "accuracy_vs_flops.png", "pareto.png",
                 "best_model_per_budget.png", "accuracy_by_level.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0, name
    md = (tmp_path / "rep" / "results.md").read_text()
    assert "| llemma-7b | greedy | weighted/last | 1 | 3.92e+12 |" in md
    assert "75.0 [19.8, 97.3]*" in md and "Table 1" in md
    lines = res.table.splitlines()
    assert lines[0].split() == ["model", "method", "budget", "paper", "FLOPs", "full:", "policy", "full:", "PRM",
                                "majority", "weighted", "last", "pass@n"]
    # full FLOPs split into the policy's and the PRM's parts (the fixture's PRM processed no tokens)
    assert lines[2].split() == ["llemma-7b", "greedy", "1", "3.92e+12", "4.59e+12", "0", "40.0", "[11.8,", "76.9]"]
    assert lines[3].split()[:6] == ["llemma-7b", "sampling", "4", "1.42e+13", "1.55e+13", "1e+12"]  # PRM: 2·1e9·500
    assert lines[3].split()[-6:] == ["75.0", "[19.8,", "97.3]*", "75.0", "[19.8,", "97.3]*"]
    assert "* = cut from a larger sampling run" in lines[-1]
    csv_lines = (tmp_path / "rep" / "table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,method,rule,budget,paper_flops,full_flops,accuracy,low,high")


def test_reference_points_carry_their_source():
    pts = load_reference("llemma-math500")
    assert {p["model"] for p in pts} == {"Llemma-7B", "Llemma-34B"}
    t1 = [p for p in pts if p["model"] == "Llemma-7B" and p["method"] == "sampling" and p["budget"] == 256]
    assert t1 == [{"dataset": "math500", "model": "Llemma-7B", "method": "sampling", "budget": 256, "rule": "weighted",
                   "paper_flops": 1.0e15, "accuracy_pct": 45.5,
                   "table": "Table 1 (arXiv 2408.00724v3, MATH500, weighted voting)"}]
    gsm = load_reference("llemma-gsm8k")
    assert any(p["method"] == "rebase" and p["rule"] == "weighted" and p["accuracy_pct"] == 87.3 for p in gsm)
    with pytest.raises(ValueError, match="no reference points"):
        load_reference("llemma-aime")
