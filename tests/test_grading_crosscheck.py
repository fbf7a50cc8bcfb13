"""The Math-Verify cross-check: the comparison logic (no extra package), and the optional grader
itself (skipped cleanly when math-verify is not installed)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.builders import grader_of
from experiments.config import ConfigError, DatasetConfig, config_from_dict
from experiments.grading import crosscheck, math_verify
from experiments.records import CandidateRecord, Record, Vote

RECORDS = Path(__file__).parent / "data" / "report_records.jsonl"


def _record(gold: str, answers: list[str | None], voted: str | None, problem: str = "q") -> Record:
    return Record(problem_id=problem, model="m", method="sampling", budget=len(answers), seed=0, gold=gold,
                  candidates=tuple(CandidateRecord(a, None, (), 0, "answer", i) for i, a in enumerate(answers)),
                  votes={"majority": Vote(voted, False)})


def test_crosscheck_lists_each_distinct_disagreement_once_with_its_count() -> None:
    records = [_record("\\frac12", ["0.5", "1/2", None, "0.5"], "0.5"), _record("3", ["3", "x=3"], "x=3")]

    def theirs(answer: str, gold: str) -> bool:  # a stricter grader: no decimals, no names on the left
        return answer in (gold, "1/2")

    result = crosscheck.crosscheck(records, theirs)
    assert result.records == 2 and result.pairs == 4  # ('0.5','\\frac12') ('1/2',..) ('3','3') ('x=3','3')
    assert result.agreed == 2
    assert [(d.answer, d.ours, d.theirs, d.occurrences) for d in result.disagreements] == [
        ("0.5", True, False, 3), ("x=3", True, False, 2)]
    assert result.flipped_votes == {"majority": 2}
    report = crosscheck.format_report(result, show=1)
    assert "agree on 2 (50.0%)" in report and "'0.5'" in report and "1 more" in report


def test_crosscheck_reads_votes_of_a_results_directory(tmp_path: Path) -> None:
    shutil.copy(RECORDS, tmp_path / "records.jsonl")
    from experiments.records import load_dir

    records = load_dir(tmp_path)
    result = crosscheck.crosscheck(records, lambda a, g: a == g)
    assert result.records == len(records) and result.disagreements == []
    assert set(result.flipped_votes) == {r for rec in records for r in rec.votes}


def test_math_verify_grader_is_validated_and_needs_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def study(grader: str) -> dict:
        return {"policies": [{"name": "p", "path": "/models/p"}], "methods": [{"name": "g", "algorithm": "greedy"}],
                "dataset": {"name": "math500", "grader": grader}}

    assert config_from_dict(study("math_verify")).dataset.grader == "math_verify"  # a known grader name
    with pytest.raises(ConfigError, match="unknown grader 'math-verify'"):
        config_from_dict(study("math-verify"))
    monkeypatch.setattr(math_verify, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install \"math-verify>=0.7\""):
        grader_of(DatasetConfig(grader="math_verify"))
    assert crosscheck.main([str(RECORDS.parent)]) == 2


def test_the_default_grader_stays_ours() -> None:
    from experiments.grading import grade

    assert grader_of(DatasetConfig()) is grade


def test_math_verify_grades_and_the_command_lists_disagreements(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("math_verify")
    assert grader_of(DatasetConfig(grader="math_verify")) is math_verify.grade
    assert math_verify.grade("0.5", "\\frac{1}{2}") is True
    assert math_verify.grade("\\boxed{3}", "3") is True
    assert math_verify.grade("2", "3") is False
    assert math_verify.grade(None, "3") is False
    lines = [json.dumps(_record("\\frac12", ["0.5", "2"], "0.5", "q1").to_json()),
             json.dumps(_record("3", ["3"], "3", "q2").to_json())]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "cross.json"
    assert crosscheck.main([str(tmp_path), "--json", str(out)]) == 0
    assert "3 distinct (answer, gold) pairs" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["pairs"] == 3 and saved["agreed"] + len(saved["disagreements"]) == 3
