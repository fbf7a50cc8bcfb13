"""The sequential/parallel ratio study (experiments.sequential) against hand-computed choices and savings."""
from __future__ import annotations

import dataclasses
import warnings

import pytest

from experiments.records import Record, Vote
from experiments.sequential import OPTIMAL, PARALLEL, SINGLE, curve, ratio_settings, sequential_study
from treesearch.ledger import ComputeLedger

RULE = "hierarchical/last"
LEVEL = {f"p{i}": 1 if i < 4 else 2 for i in range(8)}
# Right answers per chain length at N = 4: level 1 (p0-p3) likes long chains, level 2 (p4-p7) parallel ones.
RIGHT = {1: {"p0", "p1", "p4", "p5", "p6", "p7"}, 2: {"p0", "p4", "p5"}, 4: {"p0", "p1", "p2", "p3"}}
FLOPS = {1: 10.0, 2: 8.0, 4: 6.0}


def rec(problem: str, length: int, budget: int = 4, right: bool | None = None, algorithm: str = "revisions") -> Record:
    correct = problem in RIGHT[length] if right is None else right
    return Record(problem_id=problem, model="m", method=f"rev-L{length}", budget=budget, seed=0, level=LEVEL[problem],
                  algorithm=algorithm, params={"n": budget, "chains": budget // length, "history": 4},
                  votes={RULE: Vote("1", correct)},
                  ledger=ComputeLedger(policy_params=1, generated_tokens=FLOPS[length] / 2))  # paper FLOPs = FLOPS


def records() -> list[Record]:
    return [rec(p, length) for p in LEVEL for length in RIGHT]


def test_settings_read_the_chain_length_from_the_records():
    settings = ratio_settings(records() + [rec("p0", 1, algorithm="sampling")], facts=None)
    assert [(s.method, s.budget, s.length) for s in settings] == [("rev-L1", 4, 1), ("rev-L2", 4, 2), ("rev-L4", 4, 4)]
    assert [s.share for s in settings] == [0.0, 0.5, 1.0]


def test_choices_per_level_in_sample_and_cross_validated_by_hand():
    study = sequential_study(records(), RULE)
    assert study.how == "level" and study.bins() == ["level 1", "level 2"]
    got = {c.bin: (c.in_sample, c.per_fold) for c in study.choices}
    # Folds alternate over sorted ids: p0 p2 p4 p6 | p1 p3 p5 p7. Level 1: L4 wins on either half (2 of 2);
    # level 2: L1 wins on either half.
    assert got == {"level 1": (4, (4, 4)), "level 2": (1, (1, 1))}
    cell = {(c.setting.length, c.bin): (c.right, c.n) for c in study.cells}
    assert cell[(1, "level 1")] == (2, 4) and cell[(4, "level 1")] == (4, 4) and cell[(2, "level 2")] == (2, 4)


def test_curves_savings_and_differences_by_hand():
    study = sequential_study(records(), RULE)
    m = study.matrix
    # Compute-optimal: L4 on level 1 (6 FLOPs, all right), L1 on level 2 (10 FLOPs, all right).
    assert curve(m, "m", OPTIMAL) == [(4, 8.0, 1.0)]
    # The best single ratio, chosen on the other half each time, is L1 for both halves (3 right of 4 vs 2).
    assert curve(m, "m", SINGLE) == [(4, 10.0, 0.75)] == curve(m, "m", PARALLEL)
    rows = {r.baseline: r for r in study.savings}
    assert rows[PARALLEL].target == 0.75 and rows[PARALLEL].method_flops.flops == 8.0
    assert rows[PARALLEL].ratio == pytest.approx(10 / 8)
    d = study.differences[("m", 4, PARALLEL)]
    assert d.delta == pytest.approx(0.25) and d.n == 8  # p2 and p3 gained, nothing lost


def test_a_tie_goes_to_the_more_parallel_ratio_and_one_ratio_is_no_study():
    tied = [rec(p, length, right=True) for p in LEVEL for length in RIGHT]
    study = sequential_study(tied, RULE)
    assert {c.in_sample for c in study.choices} == {1} and curve(study.matrix, "m", OPTIMAL) == [(4, 10.0, 1.0)]
    assert sequential_study([rec(p, 1) for p in LEVEL], RULE) is None


def test_without_levels_the_parallel_chains_bin_the_problems_by_pass_at_1():
    """Chains of one attempt are independent samples, so their hit rate makes the bins where no level exists."""
    from experiments.records import CandidateRecord

    hits = {p: 4 - i // 2 for i, p in enumerate(LEVEL)}  # p0, p1: 4 of 4 right ... p6, p7: 1 of 4
    recs = [dataclasses.replace(r, level=None, candidates=tuple(
        CandidateRecord("1", i < hits[r.problem_id], (), 1, "answer", i, chain=i) for i in range(4))
        if r.method == "rev-L1" else ()) for r in records()]
    study = sequential_study(recs, RULE)
    assert study.how.startswith("pass@1 of m's samples") and len(study.bins()) == 4  # 8 problems in 5 bins of 2
    # Easiest first: p0 p1 | p2 p3 | p4 p5 | p6 p7; the long chains are right on p0-p3 only.
    assert {c.bin: c.right for c in study.cells if c.setting.length == 4} == {
        "quantile 1": 2, "quantile 2": 2, "quantile 3": 0, "quantile 4": 0}


def test_markdown_and_figure(tmp_path):
    from experiments.plots import plot_sequential_share
    from experiments.report import sequential_markdown

    study = sequential_study(records(), RULE)
    text = sequential_markdown(study)
    assert "| 4 | 1 x 4 | 100.0 [51.0, 100.0] | 0.0 [0.0, 49.0] | 50.0 | 6 | 0 |" in text
    assert "| 4 | 4 (folds: 4, 4) | 1 (folds: 1, 1) |" in text
    assert "| all parallel | 4 | 75.0 | 10 | 8 | 1.25x |" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_sequential_share(study, tmp_path / "share.png")
    assert (tmp_path / "share.png").stat().st_size > 10_000



def test_the_builtin_ratio_study_runs_end_to_end(tmp_path, capsys):
    """The small policy stands in for the revision model: every ratio runs, the report writes the ratio tables."""
    from experiments.builtin.models import policy_dir
    from experiments.builtin.revision_study import main
    from experiments.records import load_dir

    out = tmp_path / "rev"
    assert main(["--problems", "5", "--budgets", "2", "--model", str(policy_dir("small")), "--out", str(out),
                 "--no-progress"]) == 0
    assert "## builtin-revision-small: the best chain length L per bin" in capsys.readouterr().out
    assert (out / "report" / "sequential.md").is_file() and (out / "report" / "sequential_share.png").is_file()
    seq = next(r for r in load_dir(out) if r.method == "revisions-L2")
    assert seq.params["chains"] == 1 and [c.chain for c in seq.candidates] == [0, 0]
    assert "hierarchical/last" in seq.votes
    with pytest.raises(SystemExit):
        main(["--budgets", "3"])
