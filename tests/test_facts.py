"""What the report knows of a method comes from the facts its registry entries declared when the
sweep ran (facts.json), not from importing the algorithm or the PRM where the report runs."""
from __future__ import annotations

import json

from experiments.config import MethodConfig, PolicyConfig, StudyConfig
from experiments.difficulty import difficulty_bins
from experiments.facts import FACTS, MethodFacts, declared, facts_for, method_for, read_facts, study_facts, write_facts
from experiments.records import CandidateRecord, Record, Vote

RULE = "weighted/last"


def rec(problem: str, method: str, algorithm: str, hits: tuple[bool, ...]) -> Record:
    return Record(problem_id=problem, model="m", method=method, budget=len(hits), seed=0, algorithm=algorithm,
                  votes={RULE: Vote("1", hits[0])},
                  candidates=tuple(CandidateRecord("1", c, (), 0, "answer", i) for i, c in enumerate(hits)))


def test_a_study_declares_each_methods_facts():
    cfg = StudyConfig(policies=[PolicyConfig("p", num_parameters=1)], prm={"type": "likelihood", "path": "x"},
                      methods=[MethodConfig("s", "sampling", budgets=[4]),
                               MethodConfig("r", "rebase", budgets=[4], prm={"type": "noisy_oracle", "flip_rate": 0.1}),
                               MethodConfig("g", "greedy")])
    facts = study_facts(cfg)
    assert facts["s"] == MethodFacts("sampling", "n", False, True)
    assert facts["r"] == MethodFacts("rebase", "width", True, False, 0.1, "both") and facts["r"].reference
    assert facts["g"].budget_param is None and not facts["g"].independent_samples
    assert method_for(facts, "sampling") == "s" and method_for(facts, "rebase") is None  # reference: not a choice


def test_the_facts_file_is_merged_and_wins_over_the_registries(tmp_path):
    write_facts(tmp_path, {"a": MethodFacts("plug.in:Search", "k", False, True)})
    write_facts(tmp_path, {"b": MethodFacts("greedy")})  # a resumed study adds a method
    assert set(read_facts(tmp_path)) == {"a", "b"}
    # An algorithm this process cannot import: the registries declare nothing, the file says it samples.
    records = [rec(f"q{i}", "a", "plug.in:Search", (i % 2 == 0, True)) for i in range(4)]
    assert not declared("plug.in:Search", None).independent_samples
    assert difficulty_bins(records) == ({}, "none (no levels, and no sampled solutions with per-candidate verdicts)")
    bins, how = difficulty_bins(records, facts=facts_for(records, read_facts(tmp_path)))
    assert how.startswith("pass@1 of m's samples") and len(bins) == 4


def test_a_malformed_facts_file_names_itself(tmp_path):
    (tmp_path / FACTS).write_text(json.dumps({"a": {"algorithm": "x", "colour": 1}}))
    try:
        read_facts(tmp_path)
    except ValueError as e:
        assert str(tmp_path / FACTS) in str(e)
    else:
        raise AssertionError("a malformed facts file was read")
