"""A study against a real ``vllm serve`` that crashes mid-run: the run stops with one line naming the URL and
keeps its records; after a restart the rerun resumes and ends with the records of an uninterrupted run. With
two servers, the one that dies has its questions moved to the other and the study goes on.

The built-in policy-large, its heads zero-padded to 32 for vLLM's CPU attention (exact: see
experiments/builtin/pad_heads.py), on built-in problems.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support import records  # the records less what depends on a server's state

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                   reason="vllm not installed")]
ROOT = Path(__file__).resolve().parents[1]
LARGE = ROOT / "experiments" / "builtin" / "checkpoints" / "policy-large"
PROBLEMS = 10


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    from experiments.builtin.pad_heads import pad_heads

    return pad_heads(str(LARGE), str(tmp_path_factory.mktemp("padded") / "policy-large-32"))


@pytest.fixture(scope="module")
def server(checkpoint):
    from treesearch.vllm_server import VllmServer

    with VllmServer(checkpoint, max_model_len=512) as s:
        yield s


def study(tmp_path: Path, urls: list[str], checkpoint: str, name: str) -> Path:
    data = {"policies": [{"name": "large", "path": checkpoint, "backend": "openai", "step_format": "newline",
                          "options": {"base_url": urls, "max_retries": 1, "timeout": 30}}],
            "methods": [{"name": "rebase", "algorithm": "rebase", "budgets": [4, 8]}],
            "prm": {"type": "builtin_oracle"},
            "dataset": {"name": "builtin", "limit": PROBLEMS, "grader": "exact"},
            "limits": {"max_depth": 10, "max_step_tokens": 32, "max_solution_tokens": 200},
            "problems_per_chunk": 1, "output": str(tmp_path / name)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", "run", str(config), "--no-progress"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)


def start_run(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments", "run", str(config), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def wait_for_records(directory: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(len(f.read_text().splitlines()) for f in directory.glob("records*.jsonl")) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run ended (or stalled) before {n} records: {proc.poll()}")


@pytest.fixture(scope="module")
def uninterrupted(server, checkpoint, tmp_path_factory) -> list[dict]:
    """The records of the study run through on one server."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    whole = run(study(tmp, [server.url], checkpoint, "whole"))
    assert whole.returncode == 0, whole.stderr
    expected = records(tmp / "whole")
    assert len(expected) == 2 * PROBLEMS and all(r["processed_source"] == "server_usage" for r in expected)
    return expected


def test_a_killed_server_stops_the_run_and_the_rerun_after_its_restart_ends_as_an_uninterrupted_run(
        server, checkpoint, uninterrupted, tmp_path):
    expected = uninterrupted

    config = study(tmp_path, [server.url], checkpoint, "broken")
    proc = start_run(config)
    wait_for_records(tmp_path / "broken", 4, proc)
    server.kill()  # SIGKILL, as a crash: the engine's processes go too
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert f"policy server {server.url}" in last and "records kept" in last and "resumes" in last
    kept = records(tmp_path / "broken")
    assert 4 <= len(kept) < 2 * PROBLEMS
    assert kept == [r for r in expected if (r["problem_id"], r["budget"]) in {(k["problem_id"], k["budget"])
                                                                               for k in kept}]
    server.restart()
    again = run(config)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} of {2 * PROBLEMS} records present" in again.stderr
    assert records(tmp_path / "broken") == expected


def test_with_two_servers_a_dead_one_hands_its_questions_to_the_other(server, checkpoint, uninterrupted, tmp_path):
    from treesearch.vllm_server import VllmServer

    with VllmServer(checkpoint, max_model_len=512) as second:
        config = study(tmp_path, [second.url, server.url], checkpoint, "two")
        proc = start_run(config)
        wait_for_records(tmp_path / "two", 2, proc)
        second.kill()
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    [warning] = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert f"policy server {second.url}" in warning and f"move to {server.url}" in warning
    assert records(tmp_path / "two") == uninterrupted
