"""The benchmarks still run against the library they measure (at toy size; their figures come from
full-size runs, never from here)."""
from __future__ import annotations

import os
import runpy
import subprocess
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
        # Wall time and tokens/s are the machine's, printed to 0.1 (either may print as 0.0): only their
        # being numbers is a fact. Processed per generated token counts tokens, not time.
        assert wall >= 0 and tok_s >= 0 and per_gen >= 1.0


@pytest.mark.parametrize("name, args, summary", [
    ("search_throughput.py", ["--problems", "2", "--one-by-one-problems", "1", "--width", "2", "--repeats", "1"],
     "(a) processed / generated tokens: reuse on"),
    ("prm_scoring.py", ["--chains", "8", "--problems", "2", "--widths", "2", "--repeats", "1",
                        "--incremental-width", "2"], "sweep total"),
    ("grading.py", [], "ms per pair"),
])
def test_benchmark_runs_and_prints_its_summary(name, args, summary, monkeypatch, capsys):
    run_benchmark(name, *args, monkeypatch=monkeypatch)
    assert summary in capsys.readouterr().out


def test_search_throughput_profile_splits_the_demo_studys_wall_time(monkeypatch, capsys):
    """--profile on the quick demo study's greedy method (both built-in policies, the likelihood PRM scoring
    the finals): the split into policy forward, PRM forward and the rest, per method, and the rest's top
    functions. Only the shape of the output is checked, never a time."""
    run_benchmark("search_throughput.py", "--profile", "quick", "--methods", "greedy", "--top", "3",
                  monkeypatch=monkeypatch)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("profile: demo study 'quick', 1 methods, policies builtin-small, builtin-large; study wall")
    shares = {}
    for line in out[1:4]:
        name, rest = line.split(" forward")
        seconds, unit, share = rest.split()[:3]
        assert float(seconds) >= 0 and unit == "s" and share.endswith("%")
        shares[name.strip()] = float(share.rstrip("%"))
    assert set(shares) == {"policy", "PRM", "outside"} and abs(sum(shares.values()) - 100) < 0.5
    assert out[4].lstrip().startswith("per method") and out[5].split()[0] == "greedy"
    tops = [i for i, line in enumerate(out) if "outside forward, top 3" in line]
    assert len(tops) == 2 and all(len(out) > i + 1 and out[i + 1].split()[1] == "s" for i in tops)


def test_gpu_check_cpu_smoke_writes_its_table(tmp_path):
    """benchmarks/gpu_check.sh end to end on its CPU path (a 0.5 M model): one table, the expected rows and
    columns, numbers that parse; timings are not checked."""
    columns = ("arm", "model", "generated tok/s", "vs HF generate", "vs the limit", "outside forward", "peak memory GiB")
    out = tmp_path / "gpu.md"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.count("<!-- gpu_check: table begin -->") == 1 and text.count("<!-- gpu_check: table end -->") == 1
    assert "- device: CPU" in text and "- command: `bash benchmarks/gpu_check.sh --cpu-smoke --out" in text
    assert "torch " in text and "transformers " in text and "- date: " in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| " + " | ".join(columns) + " |"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert all(len(r) == len(columns) for r in rows)
    assert [r[0] for r in rows] == ["sampling N=2 (treesearch)", "REBASE width 2 (treesearch)",
                                    "HF generate, num_return_sequences=2",
                                    "PRM scoring, incremental on (new step tokens/s)",
                                    "PRM scoring, incremental off (new step tokens/s)"]
    for arm, model, rate, vs_hf, vs_limit, outside, peak in rows:
        assert float(rate) > 0 and peak == "n/a (CPU)"
        assert 0 <= float(outside.rstrip("%")) <= 100
        if arm.startswith("PRM"):
            assert model.startswith("small PRM") and vs_hf == vs_limit == "—"
        else:
            assert model.startswith("tiny") and float(vs_hf.rstrip("x")) > 0 and float(vs_limit.rstrip("x")) > 0
    assert rows[2][3] == "1.00x"  # generate against itself
    assert "| sampling N=2" in proc.stdout  # the table is printed as well
