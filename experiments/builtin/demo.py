"""The embedded default: the whole inference-scaling study in miniature, on a CPU.

    treesearch demo            # ~100 test problems, budgets 1..32, every method and policy size
    treesearch demo --quick    # 20 problems, budgets up to 8 (under 2 minutes)
    treesearch demo --full     # 300 problems, budgets up to 128, two seeds

Runs greedy, sampling (majority / best-of-N / weighted voting), step-level beam search,
REBASE and MCTS for every built-in policy with the built-in value-head PRM, prints the
Table-1-style table and writes the accuracy-vs-FLOPs plot. Same code path as any YAML
study (`experiments.sweep.run_study`, `experiments.report.report`); reruns resume.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from treesearch.runner import SearchLimits

from ..config import DatasetConfig, MethodConfig, PolicyConfig, StudyConfig, VotingConfig

CHECKPOINTS = Path(__file__).parent / "checkpoints"
SIZES = ("small", "medium", "large")  # those with a trained checkpoint take part
LIMITS = SearchLimits(max_depth=10, max_step_tokens=32, max_solution_tokens=200)
PROFILES = {  # problems, largest budget, seeds
    "quick": (20, 8, [0]),
    "default": (100, 32, [0]),
    "full": (300, 128, [0, 1]),
}


def study(profile: str = "default") -> StudyConfig:
    """The demo's study as a config (the same object a YAML file maps onto)."""
    problems, top, seeds = PROFILES[profile]
    budgets = [2 ** i for i in range(top.bit_length()) if 2 ** i <= top]
    sizes = [s for s in SIZES if (CHECKPOINTS / f"policy-{s}" / "model.safetensors").is_file()]
    prm_dir = CHECKPOINTS / "prm"
    if not sizes or not prm_dir.is_dir():
        raise FileNotFoundError(f"built-in checkpoints missing under {CHECKPOINTS}: train them with "
                                "experiments.builtin.train_policy and experiments.builtin.train_prm")
    policies = [PolicyConfig(name=f"builtin-{s}", path=str(CHECKPOINTS / f"policy-{s}"), step_format="newline",
                             temperature=1.0, max_batch_rows=1024) for s in sizes]
    methods = [
        MethodConfig(name="greedy", algorithm="greedy"),
        MethodConfig(name="sampling", algorithm="sampling", budgets=budgets, subsample=True),
        MethodConfig(name="beam", algorithm="beam", params={"beam_width": 4}, budgets=[b for b in budgets if b >= 4]),
        MethodConfig(name="rebase", algorithm="rebase", params={"temperature": 0.1}, budgets=budgets),
        MethodConfig(name="mcts", algorithm="mcts", params={"width": 2, "root_width": 4},
                     budgets=[b for b in budgets if b >= 4]),
    ]
    return StudyConfig(
        description=f"Built-in task, {profile} demo: policies {', '.join(sizes)} with the built-in value-head PRM",
        policies=policies, methods=methods,
        prm={"type": "value_head", "path": str(prm_dir), "device": "cpu"},
        dataset=DatasetConfig(name="builtin", options={"n": 500}, limit=problems, grader="exact"),
        seeds=seeds, limits=LIMITS, voting=VotingConfig(aggregations=["last"]),
        output=f"runs/builtin-{profile}", problems_per_chunk=problems)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="treesearch demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const="quick", help="20 problems, budgets <= 8")
    size.add_argument("--full", action="store_const", dest="profile", const="full",
                      help="300 problems, budgets <= 128, 2 seeds")
    ap.add_argument("--out", help="results directory (default runs/builtin-<profile>)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from ..report import report
    from ..sweep import run_study

    t0 = time.perf_counter()
    results = run_study(study(args.profile or "default"), out=args.out, progress=not args.no_progress)
    rep = report(results)
    print(rep.table)
    print(f"\nstudy took {time.perf_counter() - t0:.0f} s; records in {results}")
    print(f"accuracy vs FLOPs plot: {rep.files['accuracy_vs_flops.png']}")
    print(f"tables and other plots: {rep.files['results.md'].parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
