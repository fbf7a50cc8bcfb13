"""`treesearch run CONFIG --shard K/N`: independent processes (a SLURM array), merged on report."""
from __future__ import annotations

import pytest

from experiments.cli import main
from experiments.records import load_dir
from experiments.plan import parse_shard
from support import builtin_config, one_line_error


def _keyed(records):
    return {(r.problem_id, r.method, r.budget): r.votes for r in records}


def test_shards_run_alone_and_merge_into_the_unsharded_records(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole = builtin_config(tmp_path / "a", **{"dataset": {"name": "builtin", "limit": 3, "grader": "exact"}})
    sharded = builtin_config(tmp_path / "b", **{"dataset": {"name": "builtin", "limit": 3, "grader": "exact"}})
    assert main(["run", str(whole), "--no-progress"]) == 0
    for k in (1, 0):  # shard 1 first: it must not wait for shard 0
        assert main(["run", str(sharded), "--no-progress", "--shard", f"{k}/2"]) == 0
    out_a, out_b = tmp_path / "a" / "out", tmp_path / "b" / "out"
    assert sorted(p.name for p in out_b.glob("records*.jsonl")) == ["records.rank0.jsonl", "records.rank1.jsonl"]
    assert (out_b / "resolved.yaml").exists()
    merged = load_dir(out_b)
    assert len(merged) == 3 and _keyed(merged) == _keyed(load_dir(out_a))


@pytest.mark.parametrize("text", ["2/2", "1", "a/2", "-1/2"])
def test_a_bad_shard_is_one_line(tmp_path, capsys, text):
    assert main(["run", str(builtin_config(tmp_path)), f"--shard={text}"]) == 2
    assert "expected K/N with 0 <= K < N" in one_line_error(capsys)


def test_parse_shard():
    s = parse_shard("3/4")
    assert (s.rank, s.world, s.launched) == (3, 4, False)
    assert s.take(list(range(10))) == [3, 7]
