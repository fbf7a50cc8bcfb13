"""The embedded default: the whole inference-scaling study in miniature, on a CPU.

    treesearch demo            # 100 test problems, budgets 1..32, every method and policy size
    treesearch demo --quick    # 20 problems, budgets up to 8 (under a minute)
    treesearch demo --extended # the default plus lookahead, DVTS and the peers' strategies
    treesearch demo --full     # 300 problems, budgets up to 128, two seeds, every strategy

Runs greedy, sampling (majority / best-of-N / weighted voting), step-level beam search,
REBASE and MCTS (and, with --extended or --full, lookahead search with k = 1, DVTS, particle
filtering, particle Gibbs, adaptive sampling by both stopping rules and DeepConf: ``extended_methods``) for the
built-in small and large policies with the built-in likelihood PRM;
REBASE with the task's exact checker as a reference curve; and, for the small policy at one
budget, REBASE and weighted voting with the checker's verdicts flipped at 0-30 %. Prints the
Table-1-style table and writes the accuracy-vs-FLOPs plot. Same code path as any YAML
study (`experiments.sweep.run_study`, `experiments.report.report`); reruns resume. With two or
more cores the two policies run at once, each in its own process (``--workers 1``: one process);
the records are the same either way.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from ..config import DatasetConfig, MethodConfig, PolicyConfig, StudyConfig, VotingConfig
from .models import CHECKPOINTS, LIMITS, POLICIES, PRM_DIR, policy_dir
from ..workers import default_workers, parse_workers

PROFILES = {  # problems, largest budget, seeds, with the extended methods
    "quick": (20, 8, [0], False),
    "default": (100, 32, [0], False),
    "extended": (100, 32, [0], True),
    "full": (300, 128, [0, 1], True),
}
ORACLE = {"type": "builtin_oracle"}
FLIP_RATES = (0.1, 0.2, 0.3)  # the verifier-quality sweep (0 is the oracle itself)
SWEEP_POLICY = "small"  # the policy the sweep runs for (the one search helps most)
REFERENCES = ("sampling", "beam", "rebase")  # what --extended measures each of its methods against


def extended_methods(budgets: list[int]) -> list[MethodConfig]:
    """The strategies --extended adds: Snell et al.'s lookahead and DVTS, and the newer peers' (its_hub's
    particle filtering and particle Gibbs, adaptive self-consistency by its two stopping rules, Meta's DeepConf)."""
    return [
        MethodConfig(name="lookahead", algorithm="lookahead", params={"beam_width": 4, "k": 1}, budgets=budgets),
        MethodConfig(name="dvts", algorithm="dvts", params={"beam_width": 4}, budgets=budgets),
        MethodConfig(name="particle_filtering", algorithm="particle_filtering", budgets=budgets),
        MethodConfig(name="particle_gibbs", algorithm="particle_gibbs", params={"iterations": 2}, budgets=budgets),
        MethodConfig(name="adaptive-supermajority", algorithm="adaptive_sampling", params={"rule": "supermajority"},
                     budgets=budgets),
        MethodConfig(name="adaptive-beta", algorithm="adaptive_sampling", params={"rule": "beta"}, budgets=budgets),
        # DeepConf-low and -high (keep the top 10 % / 90 % by confidence), and online -high: 4 warm-up traces set
        # the threshold below which later traces stop (a window of 16 tokens: solutions here are 40-120).
        MethodConfig(name="deepconf-low", algorithm="deepconf", params={"eta": 10.0, "window": 16}, budgets=budgets),
        MethodConfig(name="deepconf-high", algorithm="deepconf", params={"eta": 90.0, "window": 16}, budgets=budgets),
        MethodConfig(name="deepconf-online", algorithm="deepconf",
                     params={"mode": "online", "eta": 90.0, "window": 16, "warmup": 4}, budgets=budgets),
    ]


def mcts_root_width(expansions: int) -> int:
    """The paper's root width: 4 / 8 / 16 children for 32 / 64 / 128 expansions (1 per 8), at least 2."""
    return max(2, expansions // 8)


def study(profile: str = "default") -> StudyConfig:
    """The demo's study as a config (the same object a YAML file maps onto)."""
    problems, top, seeds, more = PROFILES[profile]
    budgets = [2 ** i for i in range(top.bit_length()) if 2 ** i <= top]
    sweep_budget = min(16, top)
    sizes = [s for s in POLICIES if (policy_dir(s) / "model.safetensors").is_file()]
    if not sizes or not PRM_DIR.is_dir():
        raise FileNotFoundError(f"built-in checkpoints missing under {CHECKPOINTS}: train them with "
                                "experiments.builtin.train_policy and experiments.builtin.train_prm")
    policies = [PolicyConfig(name=f"builtin-{s}", path=str(policy_dir(s)), step_format="newline",
                             temperature=1.0, max_batch_rows=1024) for s in sizes]
    searched = [b for b in budgets if b >= 4]
    sweep_model = [f"builtin-{SWEEP_POLICY}"] if SWEEP_POLICY in sizes else [policies[0].name]
    methods = [
        MethodConfig(name="greedy", algorithm="greedy"),
        MethodConfig(name="sampling", algorithm="sampling", budgets=budgets, subsample=True),
        MethodConfig(name="beam", algorithm="beam", params={"beam_width": 4}, budgets=searched),
        *(extended_methods(searched) if more else []),
        MethodConfig(name="rebase", algorithm="rebase", params={"temperature": 0.1}, budgets=budgets),
        MethodConfig(name="mcts", algorithm="mcts", params={"width": 2}, budgets=searched,
                     budget_params={b: {"root_width": mcts_root_width(b)} for b in searched}),
        # Reference: the same search with the task's exact checker as the verifier (the ceiling).
        MethodConfig(name="rebase-oracle", algorithm="rebase", params={"temperature": 0.1}, budgets=budgets,
                     prm=dict(ORACLE)),
        # Verifier quality: one policy, one budget, the checker's verdicts flipped at a growing rate.
        MethodConfig(name="sampling-oracle", algorithm="sampling", budgets=[sweep_budget], models=sweep_model,
                     prm=dict(ORACLE)),
    ]
    for rate in FLIP_RATES:
        noisy = {"type": "noisy_oracle", "flip_rate": rate}
        methods += [MethodConfig(name=f"rebase-noisy{rate}", algorithm="rebase", params={"temperature": 0.1},
                                 budgets=[sweep_budget], models=sweep_model, prm=dict(noisy)),
                    MethodConfig(name=f"sampling-noisy{rate}", algorithm="sampling", budgets=[sweep_budget],
                                 models=sweep_model, prm=dict(noisy))]
    return StudyConfig(
        description=f"Built-in task, {profile} demo: policies {', '.join(sizes)}; learned likelihood PRM, "
                    f"exact-checker reference and a verifier-quality sweep",
        policies=policies, methods=methods,
        prm={"type": "likelihood", "path": str(PRM_DIR), "device": "cpu"},
        dataset=DatasetConfig(name="builtin", options={"n": 500}, limit=problems, grader="exact"),
        seeds=seeds, limits=LIMITS, voting=VotingConfig(aggregations=["last"]),
        output=f"runs/builtin-{profile}", problems_per_chunk=problems)


HELDOUT_SEED = 1


def heldout(cfg: StudyConfig) -> StudyConfig:
    """The replication split: the next 2x as many test problems, unseen by the first split, and
    another seed; the same methods, models and PRM. Its findings test the first split's."""
    first = cfg.dataset.limit or 0
    return dataclasses.replace(
        cfg, dataset=dataclasses.replace(cfg.dataset, start=cfg.dataset.start + first, limit=2 * first),
        seeds=[HELDOUT_SEED], output=f"{cfg.output}-heldout", problems_per_chunk=2 * first,
        description=f"{cfg.description}; held-out split (problems {cfg.dataset.start + first}-"
                    f"{cfg.dataset.start + 3 * first - 1}, seed {HELDOUT_SEED})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="treesearch demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const="quick", help="20 problems, budgets <= 8")
    size.add_argument("--extended", action="store_const", dest="profile", const="extended",
                      help="the default study plus lookahead, DVTS, particle filtering, particle Gibbs, adaptive "
                           "sampling and DeepConf, each measured against sampling, beam and REBASE at equal FLOPs")
    size.add_argument("--full", action="store_const", dest="profile", const="full",
                      help="300 problems, budgets <= 128, 2 seeds")
    ap.add_argument("--replicate", action="store_true",
                    help="also run a held-out split (the next 2x as many test problems, seed 1) and say which "
                         "findings replicate (about 3x the time)")
    ap.add_argument("--out", help="results directory (default runs/builtin-<profile>; the held-out split: <out>-heldout)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--workers", type=parse_workers, metavar="N",
                    help="policies run at once, each in its own process (default: one per policy, as far as the "
                         "cores go; 1: one process). The records are the same either way")
    ap.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = ap.parse_args(argv)
    from ..console import guarded, quiet_libraries

    quiet_libraries()
    cfg = study(args.profile or "default")
    if args.out:
        cfg = dataclasses.replace(cfg, output=args.out)
    flags = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug")
    workers = args.workers or default_workers(len(cfg.policies))
    return guarded("treesearch demo", args.debug, lambda: _demo(cfg, not args.no_progress, args.replicate, workers),
                   resume=f"treesearch demo {flags}".strip(), results=cfg.output)


def _demo(cfg: StudyConfig, progress: bool, replicate: bool, workers: int = 1) -> int:
    from ..findings import format_findings, format_replication
    from ..report import format_headline, markdown_table, report
    from ..sweep import run_study

    t0 = time.perf_counter()
    results = run_study(cfg, progress=progress, workers=workers)
    rep = report(results)
    print(rep.table)
    if rep.efficiency is not None and rep.efficiency.ratios:
        print("\n" + format_headline(rep.efficiency))
    print("\n" + format_findings(rep.findings))
    added = [m.name for m in cfg.methods if m.name in {x.name for x in extended_methods([])}]
    if added:
        path = results / "report" / "extended.md"
        path.write_text(extended_markdown(results, rep, added), encoding="utf-8")
        print(f"\nthe added strategies against {', '.join(REFERENCES)} at equal FLOPs: {path}")
    if replicate:
        second = heldout(cfg)
        held = report(run_study(second, progress=progress, workers=workers))
        print(f"\nHeld-out split ({second.output}):\n" + format_findings(held.findings))
        splits = [(_split_name(cfg), rep.findings), (_split_name(second), held.findings)]
        print("\n" + format_replication(splits))
        path = results / "report" / "replication.md"
        path.write_text(_replication_markdown(splits, markdown_table), encoding="utf-8")
        print(f"\nreplication table: {path}; held-out report: {held.files['results.md'].parent}")
    print(f"\nstudy took {time.perf_counter() - t0:.0f} s; records in {results}")
    print(f"accuracy vs FLOPs plot: {rep.files['accuracy_vs_flops.png']}")
    print(f"tables and other plots: {rep.files['results.md'].parent}")
    return 0


OWN_RULES = ("confidence",)  # votes a method brings of its own (DeepConf's), measured beside the report's rule


def extended_markdown(results, rep, methods: list[str]) -> str:
    """Each added strategy against sampling (weighted voting), beam search and REBASE at equal FLOPs on the
    same problems (``efficiency.compare``: the reference curve read per problem at the method's FLOPs, paired
    bootstrap interval and paired test), and the FLOPs it needs to reach sampling's best accuracy. A method
    whose records carry a vote of its own (DeepConf's confidence vote) is measured with it too, as
    "method [vote]"."""
    import dataclasses

    from .. import efficiency, uncertainty
    from ..analysis import summarize
    from ..records import load_dir
    from ..report import accuracy_text, markdown_table

    records = load_dir(results)
    names = list(methods)
    for own in OWN_RULES:
        for method in methods:
            mine = [r for r in records if r.method == method and own in r.votes]
            if mine:
                name = f"{method} [{own}]"
                names.insert(names.index(method) + 1, name)
                records += [dataclasses.replace(r, method=name, votes={rep.rule: r.votes[own]}) for r in mine]
    matrix = uncertainty.problem_matrix(records, rep.rule)
    rows = {(r.model, r.method, r.budget): r for r in summarize(records, [rep.rule])}
    models = sorted({m for m, _, _ in rows}, key=lambda m: min(r.paper_flops for k, r in rows.items() if k[0] == m))
    parts = [f"# The added strategies at equal FLOPs ({rep.rule})", "",
             "Each cell: the method's accuracy minus the reference curve's, read per problem at the method's paper "
             "FLOPs (interpolated in log FLOPs between the reference's budgets), in points with its 95 % paired "
             "bootstrap interval and the paired test's p; \"–\" where the method's FLOPs lie outside the "
             "reference's curve. Accuracy % [95 % Wilson interval]. \"method [vote]\": the method's answers "
             "picked by a vote of its own instead of the report's rule.", ""]
    for model in models:
        body = []
        for method in names:
            diffs = {ref: {c.budget: c for c in efficiency.compare(matrix, model, method, model, ref)}
                     for ref in REFERENCES}
            for (m, k, b), r in sorted(rows.items()):
                if (m, k) != (model, method):
                    continue
                body.append((method, b, accuracy_text(r.accuracy, r.low, r.high),
                             f"{r.paper_flops:.3g}", *[f"{d[b].diff.text} (p {d[b].diff.p_text})" if b in d else "–"
                                                       for d in diffs.values()]))
        parts += [f"## {model}", "", markdown_table(["method", "budget", "accuracy %", "paper FLOPs",
                                                     *[f"vs {ref}" for ref in REFERENCES]], body), ""]
    baseline = rep.efficiency.baseline if rep.efficiency is not None else None
    if baseline is not None:
        heads = []
        for method in names:
            ratios = efficiency.ratio_rows(list(rows.values()), rep.rule, method, baseline, matrix)
            for model in models:
                mine = [r for r in ratios if r.model == model]
                if mine:
                    heads.append(max(mine, key=lambda r: r.target))  # at the baseline's best accuracy
        parts += [f"## FLOPs to reach {baseline}'s best accuracy", "",
                  markdown_table(["model", "method", "target %", "ratio", "interval"],
                                 [(r.model, r.method, f"{100 * r.target:.1f}",
                                   f"{r.ratio:.2f}x" if r.ratio == r.ratio else "not reached", r.interval_text)
                                  for r in sorted(heads, key=lambda r: (models.index(r.model), names.index(r.method)))]),
                  ""]
    return "\n".join(parts)


def _split_name(cfg: StudyConfig) -> str:
    first = cfg.dataset.start
    return f"problems {first}-{first + (cfg.dataset.limit or 0) - 1}, seed {','.join(map(str, cfg.seeds))}"


def _replication_markdown(splits, markdown_table) -> str:
    from ..findings import replication

    names = [name for name, _ in splits]
    return "\n".join([
        "# Do the findings replicate?", "",
        "The same study on two disjoint splits of the built-in test problems, with different seeds "
        "(`treesearch demo --replicate`). Verdicts come from each split's intervals (its results.md has the "
        "numbers); a finding replicates when both splits reach the same verdict.", "",
        markdown_table(["", "claim", "tested on", *names, "replicates"],
                       [(f.key, f.claim, f.subject,
                         *[f"**{g.verdict}**: {g.evidence}" if g is not None else "not tested" for g in same], ok)
                        for f, same, ok in replication(splits)]),
        ""])


if __name__ == "__main__":
    raise SystemExit(main())
