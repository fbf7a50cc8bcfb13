"""The benchmarks still run against the library they measure (at toy size; their figures come from
full-size runs, never from here)."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

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
    # The exact split of the rest: every part of demo_parts, its seconds, share and calls, then the rest.
    start = out.index("  outside forward, timed exactly (a part includes the parts indented under it):")
    parts = {}
    for line in out[start + 1:tops[0]]:
        label, _, figures = line.strip().rpartition(" s ")
        label, seconds = label.rsplit(None, 1)
        parts[label] = (float(seconds), figures.split())
    assert "kv_cache.gather: cached prefixes into rows" in parts and "BatchScorer.score" in parts
    rest = parts.pop("the rest (the Runner loop, trees, writing records)")
    assert len(rest[1]) == 1 and rest[1][0].endswith("%")
    calls = {label: int(f[1].replace(",", "")) for label, (_, f) in parts.items()}
    # greedy: each Runner._expand call makes one policy call, and every search step draws
    assert calls["Runner._expand (search side + policy)"] == calls["TransformersPolicy.expand"] > 0
    assert calls["_sample: draws"] > 0 and calls["judging: a record per search"] > 0


def test_part_timer_counts_a_functions_time_less_its_forward_passes(monkeypatch):
    """On a clock that only the test moves: a function that spends 1 + 2 ticks itself around a forward pass
    of 3 ticks is charged 3 ticks, its forward pass none, and the original is back afterwards."""
    bench = runpy.run_path(str(BENCHMARKS / "search_throughput.py"))
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    class Model(torch.nn.Module):
        def forward(self, x):
            clock[0] += 3
            return x

    model = Model()
    forward = bench["ForwardTimer"](model)
    owner = types.SimpleNamespace()

    def search(x):
        clock[0] += 1
        model(x)
        clock[0] += 2
        return x

    owner.search = search
    with bench["PartTimer"]([forward], [(0, "search", owner, "search")]) as parts:
        assert owner.search(torch.zeros(1)) is not None and owner.search is not search
    assert owner.search is search
    assert (parts.seconds["search"], parts.calls["search"], forward.total) == (3.0, 1, 3.0)


def test_prm_scoring_prints_the_batching_ceiling(monkeypatch, capsys):
    """The batching table says how much of each mode is forward passes, and the ceiling those imply."""
    run_benchmark("prm_scoring.py", "--chains", "8", "--repeats", "1", "--skip-incremental", "--skip-cache",
                  monkeypatch=monkeypatch)
    out = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(out) if line.split()[:1] == ["mode"])
    assert out[head].split()[-4:] == ["in", "forward", "forward", "GFLOP/s"]
    for line in out[head + 1:head + 3]:
        share = line.split()[-2]
        assert share.endswith("%") and 0 < float(share.rstrip("%")) <= 100
    ceiling = next(line for line in out if "ceiling at this forward rate:" in line)
    assert float(ceiling.split("rate: ")[1].split("x")[0]) > 0


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
