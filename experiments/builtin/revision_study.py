"""Sequential revisions or parallel samples? The built-in study of Snell et al. 2024's ratio (§5).

    python -m experiments.builtin.revision_study [--problems N] [--out DIR]

The revision model (``checkpoints/revision-small``, trained by ``train_revision`` on the small
policy's own attempts) spends N = 4, 8, 16, 32 attempts as every ratio from N chains of one attempt
(all parallel) to one chain of N (all sequential, each attempt revising the chain's last 4); the
learned PRM scores every attempt and Snell's hierarchical rule picks the answer (the PRM's best
within each chain, weighted voting across chains: with chains of one that is weighted voting, so
all-parallel is sampling with weighted voting from the same model, the baseline). ``treesearch
report`` (``experiments.sequential``) reads the records: accuracy per ratio and level with
intervals, the compute-optimal ratio per level (cross-validated), and the FLOPs it saves.
Same code path as any YAML study; reruns resume.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ..config import DatasetConfig, MethodConfig, PolicyConfig, StudyConfig, VotingConfig
from .models import LIMITS, PRM_DIR, REVISION_DIR, REVISION_PROMPT

BUDGETS = (4, 8, 16, 32)
HISTORY = 4  # earlier attempts a revision sees (Snell's choice)
PROBLEMS = 300  # the test split's first 300: 60 per level
OUTPUT = "runs/builtin-revisions"
REVISER = "builtin-revision-small"


def lengths(budget: int) -> list[int]:
    """Chain lengths from all parallel (1) to all sequential (``budget``), in powers of two."""
    return [2 ** i for i in range(budget.bit_length()) if 2 ** i <= budget]


def study(problems: int = PROBLEMS, budgets: tuple[int, ...] = BUDGETS, model: Path | None = None) -> StudyConfig:
    """The ratio study as a config (what a YAML file would map onto)."""
    model = model or REVISION_DIR
    if not (model / "model.safetensors").is_file():
        raise FileNotFoundError(f"no revision model at {model}: train it with python -m experiments.builtin.train_revision")
    policies = [PolicyConfig(name=REVISER, path=str(model), step_format="newline", temperature=1.0,
                             revision_prompt=REVISION_PROMPT, max_batch_rows=1024)]
    methods = [MethodConfig(name=f"revisions-L{length}", algorithm="revisions", params={"history": HISTORY},
                            budgets=[b for b in budgets if b >= length],
                            budget_params={b: {"chains": b // length} for b in budgets if b >= length})
               for length in lengths(max(budgets))]
    return StudyConfig(
        description=f"Built-in task: sequential revisions vs parallel sampling at budgets {list(budgets)}, "
                    f"every ratio, {problems} test problems",
        policies=policies, methods=methods,
        prm={"type": "likelihood", "path": str(PRM_DIR), "device": "cpu"},
        dataset=DatasetConfig(name="builtin", options={"n": max(problems, 500)}, limit=problems, grader="exact"),
        seeds=[0], limits=LIMITS, voting=VotingConfig(aggregations=["last"]), output=OUTPUT,
        problems_per_chunk=problems)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.builtin.revision_study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=PROBLEMS, help="test problems (60 per level at 300)")
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="attempt budgets (powers of two)")
    ap.add_argument("--model", type=Path, help="the revision model's directory (default: checkpoints/revision-small)")
    ap.add_argument("--out", help=f"results directory (default {OUTPUT})")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = ap.parse_args(argv)
    from ..console import guarded, quiet_libraries

    bad = [b for b in args.budgets if b < 2 or b & (b - 1)]
    if bad or args.problems < 1:
        ap.error(f"--budgets must be powers of two >= 2 (got {bad}) and --problems >= 1" if bad
                 else "--problems must be at least 1")
    quiet_libraries()
    cfg = study(args.problems, tuple(sorted(args.budgets)), args.model)
    if args.out:
        cfg = dataclasses.replace(cfg, output=args.out)
    flags = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug")
    return guarded("revision study", args.debug, lambda: _run(cfg, not args.no_progress),
                   resume=f"python -m experiments.builtin.revision_study {flags}".strip(), results=cfg.output)


def _run(cfg: StudyConfig, progress: bool) -> int:
    from ..report import report
    from ..sweep import run_study

    t0 = time.perf_counter()
    results = run_study(cfg, progress=progress)
    rep = report(results)
    if rep.sequential is None:
        print("no revisions settings with two or more ratios at a budget: nothing to compare")
        return 1
    print(rep.files["sequential.md"].read_text(encoding="utf-8"))
    print(f"study took {time.perf_counter() - t0:.0f} s; records in {results}")
    print(f"figure: {rep.files['sequential_share.png']}; full report: {rep.files['results.md']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
