"""The benchmarks still run against the library they measure (at toy size; their figures come from
full-size runs, never from here)."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from reward_models.testing import build_tokenizer, save_causal_lm

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.usefixtures("one_thread")


def run_benchmark(name: str, *args: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(BENCHMARKS / name), run_name="__main__")


def test_backends_benchmark_runs_the_transformers_backend(tmp_path, monkeypatch, capsys):
    model = save_causal_lm(str(tmp_path / "lm"), "llama", build_tokenizer(chat_template=True))
    run_benchmark("backends.py", "--model", model, "--questions", "1", "--n", "2", "--width", "2",
                  "--backends", "transformers", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    for method in ("sampling N=2", "REBASE width 2"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {method} | transformers |"))
        wall, tok_s, per_gen = (float(c) for c in row.split("|")[3:6])
        # The wall time is printed to 0.1 s and a toy run may take less: only its sign is a fact.
        assert wall >= 0 and tok_s > 0 and per_gen >= 1.0


@pytest.mark.parametrize("name, args, summary", [
    ("search_throughput.py", ["--problems", "2", "--one-by-one-problems", "1", "--width", "2"],
     "(a) processed / generated tokens: reuse on"),
    ("prm_scoring.py", ["--chains", "8", "--problems", "2", "--widths", "2", "--repeats", "1",
                        "--incremental-width", "2"], "sweep total"),
    ("grading.py", [], "ms per pair"),
])
def test_benchmark_runs_and_prints_its_summary(name, args, summary, monkeypatch, capsys):
    run_benchmark(name, *args, monkeypatch=monkeypatch)
    assert summary in capsys.readouterr().out
