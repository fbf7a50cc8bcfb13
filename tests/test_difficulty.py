"""Compute-optimal strategy per difficulty against hand-computed frontiers."""
from __future__ import annotations

import pytest

from experiments.difficulty import difficulty_bins, difficulty_study
from experiments.records import CandidateRecord, Record, Vote
from treesearch.ledger import ComputeLedger

RULE = "weighted/last"


def rec(problem, method, flops, correct, level=None, algorithm=None, candidates=()):
    return Record(problem_id=problem, model="m", method=method, budget=1, seed=0, level=level,
                  algorithm=algorithm or method, votes={RULE: Vote("1", correct)},
                  ledger=ComputeLedger(policy_params=1, generated_tokens=flops / 2, policy_calls=1),  # paper FLOPs = flops
                  candidates=tuple(CandidateRecord("1", c, (), 0, "answer", i) for i, c in enumerate(candidates)))


def test_per_bin_choice_by_hand():
    # cheap: right on both level-1 problems only; dear (10x the FLOPs): right on p1, p3, p4.
    cheap = {"p1": True, "p2": True, "p3": False, "p4": False}
    dear = {"p1": True, "p2": False, "p3": True, "p4": True}
    level = {"p1": 1, "p2": 1, "p3": 2, "p4": 2}
    records = [rec(p, "cheap", 1.0, c, level[p]) for p, c in cheap.items()]
    records += [rec(p, "dear", 10.0, c, level[p]) for p, c in dear.items()]
    study = difficulty_study(records, RULE, {("m", "cheap", 1), ("m", "dear", 1)})
    assert study.how == "level" and study.sizes == {"level 1": 2, "level 2": 2}
    assert [(p.flops, p.accuracy) for p in study.single] == [(1.0, 0.5), (10.0, 0.75)]
    # (cheap, cheap) 1 FLOP 50 %; (cheap, dear) (2 + 20) / 4 = 5.5 FLOPs, 100 %; the other two are dominated.
    assert [(p.flops, p.accuracy) for p in study.optimal] == [(0.0 + 1.0, 0.5), (5.5, 1.0)]
    assert study.optimal[-1].choice == (("m", "cheap", 1), ("m", "dear", 1))
    (s1, c1), (s2, c2) = study.savings()
    assert (s1.flops, c1.flops) == (1.0, 1.0) and (s2.flops, c2.flops) == (10.0, 5.5)


def test_settings_on_different_problems_give_no_study():
    records = [rec("p1", "a", 1.0, True, 1), rec("p3", "a", 1.0, True, 1), rec("p2", "a", 1.0, True, 2),
               rec("p1", "b", 1.0, True, 1), rec("p2", "b", 1.0, True, 2)]  # b lacks p3
    assert difficulty_study(records, RULE, {("m", "a", 1), ("m", "b", 1)}) is None
    # A setting missing a whole bin is left out; the others still make a study.
    only_a = difficulty_study(records[:3], RULE, {("m", "a", 1), ("m", "b", 1)})
    assert only_a is not None and {p.choice[0] for p in only_a.single} == {("m", "a", 1)}


def test_without_levels_bins_are_pass_at_1_quantiles():
    records = [rec(f"p{i}", "sampling", 1.0, True, candidates=[True] * i + [False] * (10 - i)) for i in range(10)]
    bins, how = difficulty_bins(records)
    assert "pass@1 of m" in how
    assert bins["p9"] == bins["p8"] == "quantile 1"  # easiest first
    assert bins["p0"] == bins["p1"] == "quantile 5"
    assert len(set(bins.values())) == 5


@pytest.mark.parametrize("levels", [(1, 2, None)])
def test_partial_levels_fall_back_to_pass_at_1(levels):
    records = [rec(f"p{i}", "sampling", 1.0, True, level=lv, candidates=[True, False]) for i, lv in enumerate(levels)]
    assert "pass@1" in difficulty_bins(records)[1]
