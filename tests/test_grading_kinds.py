"""Hand-written labelled cases per kind of answer (tests/data/grading_kinds.jsonl), the grading
policies in both settings, a config's ``grading:`` mapping, and the cross-check's per-kind report."""
from __future__ import annotations

import functools

import pytest

from experiments.builders import grader_of
from experiments.config import ConfigError, DatasetConfig, config_from_dict
from experiments.grading import GradingPolicy, crosscheck, grade, is_equivalent, solution_answer
from experiments.grading.kinds import KINDS, agreement, classify, format_agreement, load_cases
from experiments.records import CandidateRecord, Record, Vote


def test_every_labelled_case_of_every_kind_agrees() -> None:
    """Labels were written from the kind's description before the grader was changed; none is skipped."""
    cases = load_cases()
    table = agreement(cases)
    print(format_agreement(table))
    assert set(table) == set(KINDS) | {"all"}
    for kind in KINDS:
        rows = [c for c in cases if c["kind"] == kind]
        assert len(rows) >= 15 and any(c["equal"] for c in rows) and any(not c["equal"] for c in rows), kind
    wrong = [(c["kind"], c["pred"], c["gold"], c["equal"], c.get("policy")) for c in table["all"][2]]
    assert wrong == []


@pytest.mark.parametrize("option", ["decimal_comma", "ordered_lists"])
def test_the_cases_cover_both_settings_of_each_policy_option(option: str) -> None:
    cases = load_cases()
    assert any(c.get("policy", {}).get(option) for c in cases)
    assert any(not c.get("policy", {}).get(option) and c["kind"] in ("numbers", "wrong_acceptance") for c in cases)


@pytest.mark.parametrize("pred, gold, default, chosen", [
    ("3,45", "3.45", False, True),
    ("3,45", "3, 45", True, False),
    ("1,000", "1000", True, False),
    ("1,000", "1", False, True),
    ("0,5", "0.5", True, True),
    ("2,500.75", "2500.75", True, True),
])
def test_decimal_comma_both_settings(pred: str, gold: str, default: bool, chosen: bool) -> None:
    assert is_equivalent(pred, gold) is default
    assert is_equivalent(pred, gold, policy=GradingPolicy(decimal_comma=True)) is chosen


@pytest.mark.parametrize("pred, gold, default, chosen", [
    ("8, 1, -3", "1, 8, -3", True, False),
    ("1, 8, -3", "1, 8, -3", True, True),
    ("\\{8, 1, -3\\}", "1, 8, -3", True, True),
    ("(8, 1, -3)", "1, 8, -3", False, False),
])
def test_ordered_lists_both_settings(pred: str, gold: str, default: bool, chosen: bool) -> None:
    assert is_equivalent(pred, gold) is default
    assert grade(pred, gold, policy=GradingPolicy(ordered_lists=True)) is chosen


def _study(dataset: dict) -> dict:
    return {"policies": [{"name": "p", "path": "/models/p"}], "methods": [{"name": "g", "algorithm": "greedy"}],
            "dataset": {"name": "math500", **dataset}}


def test_a_config_chooses_the_policy_and_the_default_is_unchanged() -> None:
    cfg = config_from_dict(_study({"grading": {"decimal_comma": True}}))
    assert cfg.dataset.grading == GradingPolicy(decimal_comma=True)
    equal = grader_of(cfg.dataset)
    assert isinstance(equal, functools.partial) and equal("3,45", "3.45") and not grade("3,45", "3.45")
    assert config_from_dict(_study({})).dataset.grading is None
    assert grader_of(DatasetConfig()) is grade and grader_of(DatasetConfig(grading=GradingPolicy())) is grade
    with pytest.raises(ConfigError, match="did you mean 'decimal_comma'"):
        config_from_dict(_study({"grading": {"decimal_coma": True}}))
    with pytest.raises(ConfigError, match="math grader"):
        grader_of(DatasetConfig(grader="exact", grading=GradingPolicy(ordered_lists=True)))


def test_the_last_sentence_is_read_only_when_no_marker_is_there() -> None:
    assert solution_answer("We add.\nSo the total is 36 cm.") == "36"
    assert solution_answer("The answer is 7.\nThen we check that 9 works.") == "7"
    assert solution_answer("Let me think about it.") is None
    assert solution_answer("x" * 100_000 + " is 5.") == "5"  # only the tail is read


@pytest.mark.parametrize("answer, gold, kind", [
    ("So the smallest k is 12", "12", "prose"),
    ("3,45", "3.45", "numbers"),
    ("2,500.75€", "2500.75", "numbers"),
    ("x \\neq 2", "x != 2", "relations"),
    ("x = 2 \\quad x = -3", "-3, 2", "relations"),
    ("A_1:A_2 = 5:13", "5:13", "labelled"),
    ("B. y = 17", "B", "labelled"),
    ("\\frac{1}{2}", "0.5", "other"),
])
def test_classify_sorts_a_pair_by_what_it_contains(answer: str, gold: str, kind: str) -> None:
    assert classify(answer, gold) == kind


def _record(gold: str, answers: list[str]) -> Record:
    return Record(problem_id="q", model="m", method="sampling", budget=len(answers), seed=0, gold=gold,
                  candidates=tuple(CandidateRecord(a, None, (), 0, "answer", i) for i, a in enumerate(answers)),
                  votes={"majority": Vote(answers[0], False)})


def test_crosscheck_reports_agreement_per_kind() -> None:
    records = [_record("3.45", ["3,45", "3.45"]), _record("B", ["B. y = 17"]), _record("5", ["5"])]

    def theirs(answer: str, gold: str) -> bool:  # a stub: reads decimal commas, not choice letters with text
        return answer.replace(",", ".") == gold

    result = crosscheck.crosscheck(records, theirs)
    assert result.per_kind == {"labelled": (0, 1), "numbers": (0, 1), "other": (2, 2)}
    assert {d.kind for d in result.disagreements} == {"labelled", "numbers"}
    report = crosscheck.format_report(result)
    assert "  numbers      1      0    0.0%" in report and "labelled" in report
