"""Dataset loading: shipped files, strict errors on malformed lines, slicing and seeded shuffling."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from experiments import datasets
from experiments.datasets import (DatasetError, Problem, load_dataset, load_gsm8k, load_jsonl, load_math500,
                                  select)

SHA256 = {
    "math500_test.jsonl": "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
    "gsm8k_test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
}


@pytest.mark.parametrize("name", sorted(SHA256))
def test_shipped_files_are_the_documented_bytes(name: str) -> None:
    path = datasets.DATA_DIR / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name]
    assert SHA256[name] in (datasets.DATA_DIR / "SOURCES.md").read_text(encoding="utf-8")


def test_math500_loads() -> None:
    problems = load_dataset("math500")
    assert len(problems) == 500
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}
    assert len({p.id for p in problems}) == 500
    assert all(p.id.startswith("test/") and p.question and p.answer for p in problems)
    first = problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.meta["subject"] == "Precalculus" and "solution" in first.meta


def test_gsm8k_loads_with_numeric_answers() -> None:
    problems = load_dataset("gsm8k")
    assert len(problems) == 1319
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.answer) for p in problems)
    assert problems[0].answer == "18" and problems[0].level is None
    assert "1,600" not in {p.answer for p in problems} and "1600" in {p.answer for p in problems}
    assert problems[0].id == "gsm8k/1"


def _write(tmp_path: Path, lines: list[str], name: str = "bad.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_MATH = json.dumps({"problem": "1+1?", "solution": "2", "answer": "2", "subject": "Algebra", "level": 1,
                        "unique_id": "test/algebra/1.json"})
GOOD_GSM = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})


@pytest.mark.parametrize("loader, bad_line, field", [
    (load_math500, "{not json", "invalid JSON"),
    (load_math500, json.dumps({"problem": "p", "solution": "s", "answer": "a", "subject": "x", "unique_id": "u"}),
     "'level'"),
    (load_math500, GOOD_MATH.replace('"level": 1', '"level": "3"'), "'level'"),
    (load_math500, GOOD_MATH.replace('"level": 1', '"level": 7'), "'level'"),
    (load_math500, GOOD_MATH.replace('"answer": "2"', '"answer": 2'), "'answer'"),
    (load_math500, "[1, 2]", "JSON object"),
    (load_gsm8k, json.dumps({"question": "q", "answer": "no marker 5"}), "'answer'"),
    (load_gsm8k, json.dumps({"question": "q", "answer": "#### "}), "'answer'"),
    (load_gsm8k, json.dumps({"answer": "#### 5"}), "'question'"),
])
def test_malformed_line_names_file_line_and_field(tmp_path: Path, loader, bad_line: str, field: str) -> None:
    good = GOOD_MATH if loader is load_math500 else GOOD_GSM
    path = _write(tmp_path, [good, "", bad_line, good])  # the blank line still counts: bad line is line 3
    with pytest.raises(DatasetError) as info:
        loader(path)
    message = str(info.value)
    assert str(path) in message and ":3:" in message and field in message
    assert isinstance(info.value, ValueError)


def test_load_jsonl_maps_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"q": "2+2?", "a": 4, "key": "k1", "lvl": 2, "extra": "x"}),
                             json.dumps({"q": "3+3?", "a": "6", "key": 7, "lvl": 1})])
    problems = load_jsonl(path, "q", "a", id_field="key", level_field="lvl")
    assert problems[0] == Problem(id="k1", question="2+2?", answer="4", level=2, meta={"extra": "x"})
    assert problems[1].id == "7" and problems[1].answer == "6"
    assert load_jsonl(path, "q", "a")[1].id == f"{path.stem}/2"
    with pytest.raises(DatasetError, match=r":1: missing field 'question'"):
        load_jsonl(path, "question", "a")
    with pytest.raises(DatasetError, match=r":1: field 'q' must be"):
        load_jsonl(path, "q", "a", level_field="q")


def test_load_dataset_by_path_and_errors(tmp_path: Path) -> None:
    assert load_dataset(_write(tmp_path, [GOOD_MATH], "m.jsonl"))[0].level == 1
    assert load_dataset(_write(tmp_path, [GOOD_GSM], "g.jsonl"))[0].answer == "2"
    with pytest.raises(DatasetError, match="cannot tell the format"):
        load_dataset(_write(tmp_path, [json.dumps({"x": 1})], "x.jsonl"))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("no-such-dataset")


def test_named_loaders_are_pluggable() -> None:
    """A loader registered under a name (the built-in task's hook too), or named by import path."""
    toy = [Problem(id=str(i), question=f"{i}+1", answer=str(i + 1)) for i in range(5)]
    datasets.register_dataset("test_toy", grader="exact", overwrite=True)(lambda: toy)
    assert [p.id for p in load_dataset("test_toy", start=1, limit=2)] == ["1", "2"]
    assert datasets.default_grader("test_toy") == "exact" and "test_toy" in datasets.available_datasets()
    assert len(load_dataset("test_datasets:toy_loader")) == 3  # an import path names a loader too


def toy_loader() -> list[Problem]:
    return [Problem(id=str(i), question=f"{i}+1", answer=str(i + 1)) for i in range(3)]


def test_select_slices_and_shuffles_deterministically() -> None:
    problems = load_dataset("math500")
    assert select(problems, start=10, limit=5) == problems[10:15]
    assert select(problems, start=498) == problems[498:]
    assert select(problems, limit=0) == []
    a = select(problems, limit=20, shuffle_seed=1)
    assert a == select(problems, limit=20, shuffle_seed=1)
    assert a != select(problems, limit=20, shuffle_seed=2)
    assert a != problems[:20]
    assert sorted(p.id for p in select(problems, shuffle_seed=1)) == sorted(p.id for p in problems)
    assert load_dataset("math500", start=3, limit=4, shuffle_seed=1) == select(problems, 3, 4, 1)
    assert problems == load_dataset("math500")  # shuffling did not mutate the caller's list
    with pytest.raises(ValueError):
        select(problems, start=-1)


def test_a_named_dataset_registers_its_grader() -> None:
    from experiments.builders import grader_of
    from experiments.config import DatasetConfig
    from experiments.grading import grade
    from treesearch.voting import normalized_equal

    assert datasets.default_grader("builtin") == "exact" and datasets.default_grader("math500") == "math"
    assert datasets.default_grader("some/file.jsonl") == "math"
    assert grader_of(DatasetConfig(name="builtin")) is normalized_equal
    assert grader_of(DatasetConfig(name="gsm8k")) is grade
    assert grader_of(DatasetConfig(name="builtin", grader="math")) is grade
