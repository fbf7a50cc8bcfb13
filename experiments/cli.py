"""The ``treesearch`` command: run a study, report on it, check a config, solve one question.

    treesearch run CONFIG [--out DIR] [--limit N]         # resumable; accelerate launch -m experiments run ...
    treesearch report RESULTS_DIR [--out DIR] [--rule weighted] [--reference llemma-math500]
    treesearch check CONFIG                               # validate, print the resolved config and the plan
    treesearch solve --policy PATH [--prm TYPE --prm-path PATH] --method rebase --budget 8 "question"
    treesearch eval-prm --prm TYPE [--prm-path PATH] [--jsonl processbench:FILE]   # verifier quality
    treesearch crosscheck RESULTS_DIR                     # our grader vs Math-Verify on the records
    treesearch view RESULTS_DIR [--out FILE.html] [--problem ID] [--method M]   # kept search trees as one HTML page

Errors a user can fix (config, dataset, records) print one line and exit with status 2.

CPU threads: one intra-op thread unless OMP_NUM_THREADS says otherwise. Measured on 2 cores
(`treesearch demo --quick`): quiet, 1 thread 48 s and 2 threads 45 s; beside two busy
processes, 1 thread 82 s and 2 threads 173 s (OpenMP threads spin waiting for a core).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import yaml

from treesearch.backends import DEFAULT_BACKEND
from treesearch.runner import SearchLimits

from .config import (AUTO, ConfigError, MethodConfig, PolicyConfig, PRMConfig, StudyConfig, VotingConfig,
                     config_to_dict, load_config, validate)
from .console import guarded, quiet_libraries
from .workers import parse_workers


def _key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE read as YAML (so 0.1 is a float, true a bool, [1,2] a list)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import a module (or a .py file) first, so the algorithms, backends, PRMs, datasets and "
                             "graders it registers can be named (repeatable; a config's plugins: key does the same)")
    ap = argparse.ArgumentParser(prog="treesearch", parents=[common], description=(
        "Reward-guided tree search over LLM reasoning steps: sweeps of search methods x budgets x models "
        "with compute accounting (Wu et al. 2024, Inference Scaling Laws)."))
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    run = command("run", help="run or resume a study from a YAML config",
                         description="Run every (policy, method, budget, seed) of CONFIG; records already in the "
                                     "output directory are skipped. Under `accelerate launch -m experiments run` "
                                     "problems are sharded across processes.")
    run.add_argument("config", help="study YAML (see experiments/configs/)")
    run.add_argument("--out", help="results directory (default: the config's output)")
    run.add_argument("--limit", type=int, help="only the first N selected problems")
    run.add_argument("--shard", metavar="K/N", help="run only shard K of N (0-based; problem i is in shard i %% N), "
                     "as an independent process, e.g. one SLURM array task; the report merges the shards")
    run.add_argument("--store-steps", action="store_true", help="keep every candidate's step text in the records")
    run.add_argument("--store-trees", action="store_true",
                     help="keep every search tree in trees.jsonl (for `treesearch view`; the config's store_trees "
                          "may instead name some problem ids)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--workers", type=parse_workers, default=1, metavar="N",
                     help="run up to N policies at once, each in its own process with 1/N of torch's threads (the "
                          "same records; pays for small models on a few cores; each process loads its models)")
    run.add_argument("--allow-config-change", action="store_true",
                     help="resume even if settings that change records differ from the directory's resolved.yaml")

    rep = command("report", help="tables, fits and plots from a results directory",
                         description="Merge every records*.jsonl under RESULTS_DIR; print a Table-1-style table; "
                                     "write results.md, CSVs and PNGs.")
    rep.add_argument("results", help="results directory of `treesearch run`")
    rep.add_argument("--out", help="where to write (default: RESULTS_DIR/report)")
    rep.add_argument("--rule", default="weighted",
                     help="voting rule for plots and fits: weighted, majority, best_of_n (or e.g. weighted/min), pass@n (some candidate is right)")
    rep.add_argument("--reference", metavar="NAME",
                     help="overlay the paper's points: llemma-math500, llemma-gsm8k (or mistral-/llama3-/paper-<dataset>)")
    rep.add_argument("--no-plots", action="store_true", help="tables only")
    rep.add_argument("--panels", choices=("model", "method"), default="model",
                     help="accuracy-vs-FLOPs small multiples: one panel per model (default) or per method")

    vw = command("view", help="kept search trees as one self-contained HTML page",
                 description="Write the search trees a run kept (store_trees: true, or a list of problem ids; "
                             "run --store-trees) as one HTML file with everything inline: a collapsible tree per "
                             "problem and setting with scores, widths, checks, the candidates and the vote.")
    vw.add_argument("results", help="results directory of `treesearch run`")
    vw.add_argument("--out", help="the HTML file (default: RESULTS_DIR/trees.html)")
    vw.add_argument("--problem", action="append", default=[], metavar="ID", help="only this problem (repeatable)")
    vw.add_argument("--method", action="append", default=[], metavar="M", help="only this method (repeatable)")
    vw.add_argument("--model", action="append", default=[], metavar="NAME", help="only this policy (repeatable)")

    sub.add_parser("demo", help="the built-in study in miniature on a CPU (see --help)", add_help=False)
    sub.add_parser("crosscheck", help="grade a results directory with ours and Math-Verify, list disagreements",
                   add_help=False)

    chk = command("check", help="validate a config and show what a run would do")
    chk.add_argument("config", help="the study's YAML config")
    chk.add_argument("--limit", type=int, help="plan for the first N problems only (as run --limit)")

    ev = command("eval-prm", help="how well a PRM tells a right step from a wrong one",
                        description="Sibling pairwise accuracy and step AUC on steps the built-in policies sample "
                                    "(test problems, judged by the task's checker), per policy and depth; and the "
                                    "ProcessBench / PRMBench metrics on local files as published (ProcessBench's JSON "
                                    "arrays or JSON Lines; PRMBench's JSON Lines).")
    ev.add_argument("--prm", required=True, help="PRM type (likelihood, value_head, builtin_oracle, noisy_oracle, ...) "
                                                 "or pkg.mod:factory")
    ev.add_argument("--prm-path", help="PRM checkpoint directory")
    ev.add_argument("--prm-opt", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                    help="other load_prm arguments, e.g. flip_rate=0.2 (repeatable)")
    ev.add_argument("--policies", default="small,large",
                    help="built-in policies whose sibling steps to judge (comma list; 'none' to skip)")
    ev.add_argument("--problems", type=int, default=100, help="test problems of levels 2-5 per policy")
    ev.add_argument("--seed", type=int, default=0, help="seed of the built-in policies' sibling samples")
    ev.add_argument("--jsonl", action="append", default=[], metavar="FORMAT:PATH",
                    help="also evaluate on a local file, FORMAT processbench or prmbench (repeatable; the name "
                         "says --jsonl, ProcessBench's .json arrays are read too)")
    ev.add_argument("--threshold", type=float, default=0.5, help="score below which a step counts as wrong")
    ev.add_argument("--strict", action="store_true",
                    help="refuse a PRMBench file whose error_steps point past the chain (default: drop those entries, "
                         "as PRMBench's evaluator does, and count them)")
    ev.add_argument("--json", metavar="PATH", help="also write the numbers to this JSON file")

    solve = command("solve", help="answer one question and print the search tree and the votes")
    solve.add_argument("question", help="the question to answer (quote it)")
    solve.add_argument("--policy", required=True, help="local checkpoint directory of a causal LM")
    solve.add_argument("--backend", default=DEFAULT_BACKEND,
                       help="policy backend: transformers (CPU default), vllm (GPU), openai (a server: "
                            "--backend-opt base_url=URL) or pkg.mod:factory")
    solve.add_argument("--backend-opt", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                       help="an option of the backend (repeatable), e.g. gpu_memory_utilization=0.5")
    solve.add_argument("--method", default="rebase",
                       help="greedy, sampling, beam, rebase, mcts, ... or an algorithm class pkg.mod:Class")
    solve.add_argument("--budget", type=int, default=8, help="n / width / expansions, as the method takes")
    solve.add_argument("--param", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                       help="other algorithm parameters, e.g. temperature=0.1 (repeatable)")
    solve.add_argument("--prm", help="PRM type (llemma, step_tag, value_head, classification, ...) or pkg.mod:factory")
    solve.add_argument("--prm-path", help="PRM checkpoint directory")
    solve.add_argument("--prm-opt", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                       help="other load_prm arguments (repeatable)")
    solve.add_argument("--step-format", default="paper", help="step format preset: paper, newline, paragraph")
    solve.add_argument("--device", default=AUTO, help="cpu, cuda, cuda:N or auto (a GPU when there is one)")
    solve.add_argument("--dtype", default="float32", help="the policy's weights: float32, bfloat16, float16 or auto")
    solve.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (greedy ignores it)")
    solve.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    solve.add_argument("--prompt-template", default="{question}\n",
                       help="how the question is written before the first step ({question} is replaced)")
    solve.add_argument("--chat-template", action="store_true", help="wrap the question in the tokenizer's chat template")
    solve.add_argument("--revision-prompt", default=PolicyConfig.revision_prompt,
                       help="--method revisions: the request written after each earlier attempt")
    solve.add_argument("--num-parameters", type=float, help="override N for FLOPs")
    solve.add_argument("--max-step-tokens", type=int, default=256, help="cap on one step's tokens")
    solve.add_argument("--max-solution-tokens", type=int, default=1024, help="cap on a whole solution's tokens")
    solve.add_argument("--seed", type=int, default=0, help="the search's seed (the same seed, the same tree)")
    solve.add_argument("--grader", default="math", help="answer equivalence for voting: math, exact or math_verify")
    solve.add_argument("--width", type=int, default=80, help="characters of step text per tree line")
    solve.add_argument("--html", metavar="FILE", help="also write the tree as a self-contained HTML page (as `view`)")
    solve.add_argument("--gold", metavar="ANSWER", help="the right answer, to mark candidates and votes right or "
                                                        "wrong (a built-in task question's is worked out)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo owns its flags
        from .builtin.demo import main as demo
        return demo(argv[1:])
    if argv[:1] == ["crosscheck"]:  # owns its flags too
        from .grading.crosscheck import main as crosscheck
        return crosscheck(argv[1:])
    args = build_parser().parse_args(argv)
    return guarded(f"treesearch {args.command}", args.debug, lambda: _with_plugins(args),
                   resume=f"treesearch {' '.join(argv)}" if args.command == "run" else None,
                   results=_results_dir(args) if args.command == "run" else None)


def _with_plugins(args: argparse.Namespace) -> int:
    from treesearch.imports import load_plugins

    try:
        load_plugins(args.plugin)
    except ValueError as e:
        raise ConfigError(f"--plugin: {e}") from None
    return COMMANDS[args.command](args)


def _results_dir(args: argparse.Namespace) -> str | None:
    if args.out:
        return args.out
    try:
        return load_config(args.config).output
    except ConfigError:
        return None


def _run(args: argparse.Namespace) -> int:
    from .sweep import run_study

    cfg = load_config(args.config)
    if args.store_steps:
        cfg.store_steps = True
    if args.store_trees:
        cfg.store_trees = True
    from .plan import parse_shard

    out = run_study(cfg, out=args.out, limit=args.limit, progress=not args.no_progress,
                    allow_config_change=args.allow_config_change,
                    shard=parse_shard(args.shard) if args.shard else None, workers=args.workers)
    print(f"records in {out}; next: treesearch report {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import report

    if not Path(args.results).is_dir():
        raise FileNotFoundError(f"{args.results}: no such directory (give the results directory of `treesearch run`)")
    try:
        res = report(args.results, out=args.out, rule=args.rule, reference=args.reference, plots=not args.no_plots,
                     panels=args.panels)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    from .run_lock import RunLock

    for owner in RunLock.holders(args.results):
        print(f"treesearch report: note: process {owner.get('pid')} on {owner.get('host')} (since {owner.get('started')}) "
              f"is still writing to {args.results}: this report is partial", file=sys.stderr)
    print(res.table)
    if res.fits:
        print(f"\nsaturating fits ({res.rule}): acc = a - b·exp(-c·(log10 F - log10 F0))")
        for f in res.fits:
            print(f"  {f.model} {f.method}: a={100 * f.fit.a:.1f}% b={100 * f.fit.b:.1f}% c={f.fit.c:.3f} "
                  f"-> {100 * f.extrapolated:.1f}% at {10 * f.max_flops:.3g} FLOPs (10x the largest budget)")
    if res.efficiency is not None and res.efficiency.ratios:
        from .report import format_headline
        print("\n" + format_headline(res.efficiency))
    if res.findings:
        from .findings import format_findings
        print("\n" + format_findings(res.findings))
    print("\nwrote " + ", ".join(str(p) for p in res.files.values()))
    return 0


def _check(args: argparse.Namespace) -> int:
    import dataclasses

    from .preflight import preflight

    cfg = load_config(args.config)
    if args.limit is not None:
        cfg.dataset = dataclasses.replace(cfg.dataset, limit=args.limit)
    preflight(cfg, args.config)
    from .builders import load_problems
    from .plan import plan

    problems = load_problems(cfg.dataset)  # errors first, then the resolved config and the plan
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True), end="")
    jobs = [j for pol in cfg.policies for j in plan(cfg, pol, problems, done=set())]
    print(f"# {len(problems)} problems, {len(cfg.policies)} policies: {len(jobs)} searched settings "
          f"(model, method, budget, seed), {sum(j.num_records for j in jobs)} records")
    print("# checked: every policy directory, tokenizer, PRM type and path, import path and grader loads",
          file=sys.stderr)
    return 0


def _prm_spec(args: argparse.Namespace) -> PRMConfig:
    return PRMConfig.from_plain({"type": args.prm, **({"path": args.prm_path} if args.prm_path else {}),
                                 **dict(args.prm_opt)}, "--prm", "treesearch")


def _eval_prm(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from reward_models.prm_benchmarks import (FORMATS, BenchmarkFormatError, benchmark_averages, evaluate_benchmark,
                                              read_benchmark)

    from .builders import load_prm_for

    files = []
    for item in args.jsonl:
        fmt, sep, path = item.partition(":")
        if not sep or fmt not in FORMATS:
            raise ConfigError(f"--jsonl {item!r}: expected FORMAT:PATH with FORMAT one of {', '.join(FORMATS)}")
        files.append((fmt, path))
    names = [] if args.policies == "none" else [n for n in args.policies.split(",") if n]
    benchmarks, failed = [], []
    for fmt, path in files:  # every file is read before any model loads; a bad file does not stop the others
        try:
            benchmarks.append(read_benchmark(path, fmt, strict=args.strict))
        except (BenchmarkFormatError, OSError) as e:
            failed.append(str(e))
    if files and not benchmarks:
        raise ConfigError(failed[0] if len(failed) == 1 else
                          f"none of the {len(files)} --jsonl files could be read: " + " | ".join(failed))
    for e in failed:
        print(f"treesearch eval-prm: {e}", file=sys.stderr)
    from .preflight import check_prm

    spec = _prm_spec(args)
    check_prm(spec, "--prm")
    try:
        prm = load_prm_for(spec)
    except (ValueError, TypeError, OSError, ImportError) as e:
        raise ConfigError(f"--prm {args.prm}: {e}") from None
    out: dict[str, Any] = {"prm": spec.to_plain()}
    if names:
        from .builtin.models import load_policy
        from .builtin.siblings import eval_problems, format_rows, sample_groups, verifier_rows

        problems = eval_problems(args.problems)
        groups = {n: sample_groups(load_policy(n), problems, seed=args.seed) for n in names}
        rows = verifier_rows(prm, groups)
        print(f"built-in task: sibling steps of {len(problems)} test problems (levels 2-5), judged by the checker\n")
        print(format_rows(rows))
        out["builtin"] = [dataclasses.asdict(r) for r in rows]
    results = []
    for bench in benchmarks:
        res = evaluate_benchmark(prm, bench.chains, threshold=args.threshold, fmt=bench.fmt)
        results.append(res)
        print(f"\n{bench.fmt} {bench.path}: " + res.summary(args.threshold))
        if bench.dropped_entries:
            print(f"  {bench.dropped_entries} error_steps entries in {bench.records_with_dropped} record(s) point past "
                  "their chain: dropped, as PRMBench's evaluator does (--strict refuses the file instead)")
        out.setdefault("benchmarks", []).append({"format": bench.fmt, "path": str(bench.path),
                                                 "dropped_entries": bench.dropped_entries,
                                                 **dataclasses.asdict(res)})
    for line in benchmark_averages(results):
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2, default=str)
        print(f"\nwrote {args.json}")
    if failed:
        print(f"\n{len(failed)} of {len(files)} --jsonl file(s) could not be read (errors above)", file=sys.stderr)
        return 2
    return 0


def _solve(args: argparse.Namespace) -> int:
    from treesearch.algorithms import algorithm_class
    from treesearch.runner import Runner
    from treesearch.seeds import problem_seed
    from treesearch.voting import memoized, picks

    from .builders import algorithm_for, grader_of, load_policy, load_prm_for
    from .config import DatasetConfig
    from .sweep import close_model

    if not args.question.strip():
        raise ConfigError("question: it is empty; give the question to answer as the last argument")
    prm_spec = _prm_spec(args) if args.prm else None
    policy_cfg = PolicyConfig(name="policy", path=args.policy, backend=args.backend,
                              options=dict(args.backend_opt), dtype=args.dtype, device=args.device,
                              num_parameters=args.num_parameters, step_format=args.step_format,
                              prompt_template=args.prompt_template, chat_template=args.chat_template,
                              revision_prompt=args.revision_prompt, temperature=args.temperature, top_p=args.top_p)
    try:
        algorithm = algorithm_class(args.method)
    except ValueError as e:
        raise ConfigError(f"--method: {e}") from None
    method = MethodConfig(name=args.method, algorithm=args.method, params=dict(args.param),
                          budgets=[args.budget] if algorithm.budget_param is not None else [1])
    limits = SearchLimits(max_step_tokens=args.max_step_tokens, max_solution_tokens=args.max_solution_tokens)
    study = StudyConfig(policies=[policy_cfg], methods=[method], prm=prm_spec, limits=limits,
                        dataset=DatasetConfig(grader=args.grader))
    if prm_spec is None and algorithm.needs_prm:
        raise ConfigError(f"--method {args.method} searches with a PRM: give --prm TYPE (and --prm-path DIR), "
                          f"e.g. --prm likelihood --prm-path experiments/builtin/checkpoints/prm")
    validate(study, "<command line>")
    from .preflight import check_policy, check_prm
    check_policy(policy_cfg, "--policy")
    if prm_spec is not None:
        check_prm(prm_spec, "--prm")
    policy = load_policy(policy_cfg)
    prm = load_prm_for(prm_spec) if prm_spec else None
    runner = Runner(policy, prm, limits, progress=False)
    try:
        [res] = runner.run([args.question], algorithm_for(method, method.budgets[0]),
                           seeds=[problem_seed(args.seed, args.question)])
    finally:  # engines and server clients close; a client says what it retried
        for model in (policy, prm):
            if model is not None:
                close_model(model)
    print(res.tree.render(max_text=args.width))
    print(f"\n{len(res.candidates)} candidates; answers: {[c.answer for c in res.candidates]}")
    equal = memoized(grader_of(study.dataset))
    voting = VotingConfig(aggregations=["last", "min"])
    for key, answer in picks(res.candidates, voting.keys(), voting.aggregations, equal).items():
        print(f"  {key:>17}: {answer}")
    if args.html:
        _solve_html(args, res, equal, method)
    lg = res.ledger
    print(f"generated tokens {lg.generated_tokens}, paper FLOPs {lg.paper_flops:.3g}, full FLOPs {lg.full_flops:.3g}, "
          f"{res.wall_time:.1f} s")
    return 0


def _solve_html(args: argparse.Namespace, res: Any, equal: Any, method: MethodConfig) -> None:
    from pathlib import Path

    from treesearch.builtin.task import answer_of, on_gold_path

    from .trees import tree_line
    from .viewer import render_html

    builtin = answer_of(args.question) is not None  # the built-in task: its exact checker marks the steps
    gold = args.gold if args.gold is not None else answer_of(args.question)
    key = {"method": method.name, "budget": method.budgets[0], "seed": args.seed}
    line = tree_line(key, res, gold, equal, VotingConfig(aggregations=["last", "min"]),
                     on_gold_path if builtin else None)
    path = Path(args.html)
    path.write_text(render_html([line], title=f"treesearch solve: {args.question.strip()[:60]}"), encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


def _view(args: argparse.Namespace) -> int:
    from .viewer import view

    path = view(args.results, args.out, problems=args.problem, methods=args.method, models=args.model)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); open it in a browser (it needs no network)")
    return 0


COMMANDS = {"run": _run, "view": _view, "report": _report, "check": _check, "solve": _solve, "eval-prm": _eval_prm}


if __name__ == "__main__":
    raise SystemExit(main())
