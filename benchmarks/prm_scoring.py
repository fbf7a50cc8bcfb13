"""PRM scoring: batching speedup and prefix-cache savings, side by side in one run.

    python benchmarks/prm_scoring.py                                   # CPU, small Llama value-head PRM
    python benchmarks/prm_scoring.py --device cuda --dtype bfloat16 --model-size 1b

(a) Batching: ``--chains`` (256) chains scored one at a time vs in one ``score`` call, by
    the same randomly initialised Llama-architecture value-head PRM (cache off, so both
    runs do the same work). Targets: >= 4x on CPU (small), >= 20x on a GPU (1b).
    CPU timings are only as good as the machine is quiet: the header prints the load.
    GFLOP/s (2 x non-embedding parameters x tokens / s) shows how close each mode is to
    the machine's matmul peak: a chain of ~100 tokens is already a 100-row matmul, so on
    a CPU batching can only win back the gap between one chain's rate and the peak.
(b) Cache: REBASE run through the real Runner on built-in-task-like problems with a
    low-entropy scripted policy (as a trained small policy is: siblings often repeat a
    step), over a budget sweep (width 4, 8, 16 on the same problems and seeds, as the
    harness runs it). Every score request is a chain extending an already-scored parent.
    Reported: requested chains, chains served from the cache or deduplicated in a request,
    and model tokens with the cache vs scoring every requested chain.
(c) Incremental scoring: REBASE (width ``--incremental-width``, 16) with a built-in policy
    (``--policy``, small) on ``--problems`` built-in test problems, scored by the built-in
    likelihood PRM (or, with ``--incremental-prm random``, the random value-head PRM of
    ``--model-size``, e.g. 1b on a GPU), with incremental scoring on and off. Reported: PRM
    tokens fed per new step token (the least any scorer must read: each distinct chain's
    last step, and each question once; target <= 1.3 on), PRM wall time, and whether the
    two runs built the same trees (scores agree to float rounding, so selections should too).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from reward_models import Chain, ValueHeadModel, ValueHeadPRM  # noqa: E402
from reward_models.testing import build_tokenizer, tiny_config  # noqa: E402
from search_throughput import ForwardTimer  # noqa: E402

SIZES = {
    # The built-in task's model scales (its policies' "small" and "medium" shapes).
    "small": dict(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=256),
    "medium": dict(hidden=128, layers=4, heads=4, kv_heads=4, intermediate=512),
    # TinyLlama-shaped, ~1.0B non-embedding parameters (vocab set to 32000 for a realistic head/embedding).
    "1b": dict(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632, vocab_size=32000),
}


def make_prm(args, cache: bool, incremental: bool = True) -> ValueHeadPRM:
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_config("llama", tok, max_position_embeddings=4096, attn_implementation="sdpa", **SIZES[args.model_size])
    with torch.device(args.device):
        model = ValueHeadModel.from_config(cfg, seed=0)
    model = model.to(dtype=getattr(torch, args.dtype)).eval()
    return ValueHeadPRM(model=model, tokenizer=tok, cache=cache, incremental=incremental,
                        max_batch_tokens=args.max_batch_tokens)


# ---- workload: built-in-task-like problems and steps ---------------------------------------------

def problem(i: int) -> tuple[str, int, list[tuple[str, int]]]:
    rng = random.Random(i)
    start = rng.randint(2, 99)
    ops = [(rng.choice("+-*"), rng.randint(2, 9)) for _ in range(rng.randint(2, 5))]
    words = {"+": "Add {}.", "-": "Subtract {}.", "*": "Multiply by {}."}
    return f"Start at {start}. " + " ".join(words[o].format(b) for o, b in ops), start, ops


def gold_steps(i: int) -> list[str]:
    _, v, ops = problem(i)
    steps = []
    for d, (o, b) in enumerate(ops, 1):
        w = v + b if o == "+" else v - b if o == "-" else v * b
        steps.append(f"Step {d}: {v} {o} {b} = {w}\n")
        v = w
    return steps + [f"The answer is {v}\n"]


def random_chains(n: int, seed: int = 0) -> list[Chain]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = problem(i)[0]
        steps = gold_steps(i)
        out.append(Chain(q, tuple(steps[:rng.randint(1, len(steps))])))
    return out


def scripted_policy():
    """Low-entropy policy: each step is right with p=0.7, else off by a small error (few distinct texts)."""
    from treesearch.testing import ScriptedPolicy

    questions = {problem(i)[0]: i for i in range(10_000)}

    def step(question, steps, k, seed):
        _, start, ops = problem(questions[question])
        d = len(steps)
        v = start if d == 0 else int(steps[-1].split("=")[-1])
        if d >= len(ops):
            return f"The answer is {v}"
        o, b = ops[d]
        w = v + b if o == "+" else v - b if o == "-" else v * b
        rng = random.Random(seed * 1_000_003 + k)
        if rng.random() > 0.7:
            w += rng.choice((-10, -1, 1, 10))
        return f"Step {d + 1}: {v} {o} {b} = {w}"

    return ScriptedPolicy(step), [problem(i)[0] for i in range(10_000)]


# ---- measurements ---------------------------------------------------------------------------------

def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_batching(args) -> dict:
    prm = make_prm(args, cache=False)
    chains = random_chains(args.chains)
    tokens = sum(len(prm.encode(c)) for c in chains)
    prm.score(chains[:8])  # warm-up (kernels, allocator)
    for c in chains[:4]:
        prm.score([c])

    def timed(fn) -> float:
        sync(args.device)
        t = time.perf_counter()
        fn()
        sync(args.device)
        return time.perf_counter() - t

    forward = ForwardTimer(prm.model, *prm.model.children())  # a head may run apart from its backbone

    def run(fn) -> tuple[float, float]:
        before = forward.total
        return timed(fn), forward.total - before

    singles, batches, calls = [], [], 0  # (wall, of which forward passes) per run
    for _ in range(args.repeats):  # interleaved, best of n: both modes see the same machine
        singles.append(run(lambda: [prm.score([c]) for c in chains]))
        before = prm.scorer.stats.forward_calls
        batches.append(run(lambda: prm.score(chains)))
        calls = prm.scorer.stats.forward_calls - before
    forward.remove()
    batched_out = prm.score(chains)
    check = [prm.score([c])[0].scores for c in chains[:8]]
    tol = 1e-4 if args.dtype == "float32" else 3e-2
    worst = max(abs(a - b) for x, y in zip(check, batched_out[:8]) for a, b in zip(x, y.scores))
    (single, single_fwd), (batched, batched_fwd) = min(singles), min(batches)
    return dict(params=prm.num_parameters, budget=prm.scorer.max_batch_tokens, chains=len(chains), tokens=tokens,
                single_s=single, batched_s=batched, single_fwd_s=single_fwd, batched_fwd_s=batched_fwd,
                speedup=single / batched, max_diff=worst, ok=worst <= tol, forward_calls=calls)


def bench_cache(args) -> dict:
    from treesearch.algorithms import Rebase
    from treesearch.runner import Runner, SearchLimits

    policy, questions = scripted_policy()
    questions = questions[: args.problems]
    out: dict = {}
    for cache in (True, False):
        prm = make_prm(args, cache=cache)
        naive = [0, 0]  # chains and tokens requested: what scoring every chain would cost
        original = prm.score

        def counting(chains, _orig=original, _prm=prm):
            naive[0] += len(chains)
            naive[1] += sum(len(_prm.encode(c)) for c in chains)
            return _orig(chains)

        prm.score = counting  # type: ignore[method-assign]
        runner = Runner(policy, prm, limits=SearchLimits(max_depth=8), progress=False)
        rows = []
        for width in args.widths:
            before = dict(vars(prm.scorer.stats))
            naive_before = list(naive)
            t = time.perf_counter()
            runner.run(questions, Rebase(width=width, temperature=0.2), seed=0)
            sync(args.device)
            now = vars(prm.scorer.stats)
            rows.append(dict(width=width, seconds=time.perf_counter() - t,
                             naive_chains=naive[0] - naive_before[0], naive_tokens=naive[1] - naive_before[1],
                             **{k: now[k] - before[k] for k in before}))
        out[cache] = rows
    return out


def bench_incremental(args, on_prm=None) -> dict:
    """``on_prm(incremental, prm)``, if given, is called with each PRM before its run (gpu_check.py times
    its forward passes and memory that way)."""
    from experiments.builtin.models import LIMITS, PRM_DIR, load_policy
    from experiments.datasets import load_dataset
    from reward_models import load_prm
    from treesearch.algorithms import Rebase
    from treesearch.runner import Runner

    policy = load_policy(args.policy)
    questions = [p.question for p in load_dataset("builtin", limit=args.problems)]
    out: dict = {}
    for on in (True, False):
        if args.incremental_prm == "builtin":
            prm = load_prm("likelihood", path=str(PRM_DIR), device=args.device, cache=True, incremental=on)
        else:
            prm = make_prm(args, cache=True, incremental=on)
        seen: dict = {}
        spent = [0.0]
        original = prm.score

        def timed(chains, _orig=original, _prm=prm):
            for c in chains:
                key = (c.question, tuple(c.steps))
                if key not in seen:
                    enc = _prm.encode(c)
                    parent = (_prm.encode(type(c)(c.question, c.steps[:-1])) if len(c.steps) > 1 else None)
                    seen[key] = (len(enc) - (len(parent) if parent else enc.prompt_length), enc.prompt_length)
            t = time.perf_counter()
            got = _orig(chains)
            sync(args.device)
            spent[0] += time.perf_counter() - t
            return got

        prm.score = timed  # type: ignore[method-assign]
        if on_prm is not None:
            on_prm(on, prm)
        runner = Runner(policy, prm, limits=LIMITS, progress=False)
        t = time.perf_counter()
        results = runner.run(questions, Rebase(width=args.incremental_width), seed=0)
        total = time.perf_counter() - t
        prompts = {q: n for (q, steps), (_, n) in seen.items() if len(steps) == 1}
        new_tokens = sum(d for d, _ in seen.values()) + sum(prompts.values())
        stats = prm.scorer.stats
        out[on] = dict(seconds=total, prm_seconds=spent[0], tokens=stats.tokens_run, new_tokens=new_tokens,
                       reused=stats.tokens_reused, incremental=stats.incremental, run=stats.chains_run,
                       ledger=sum(r.ledger.prm_processed_tokens for r in results),
                       trees=[[(c.steps, tuple(round(s, 4) for s in c.step_scores)) for c in r.candidates] for r in results])
    return out


def print_incremental(args, r: dict) -> None:
    print(f"\n(c) incremental scoring: REBASE width {args.incremental_width}, built-in policy '{args.policy}', "
          f"{args.problems} built-in problems, {args.incremental_prm} PRM")
    print(f"    {'scoring':<14}{'chains run':>11}{'extended':>9}{'PRM tokens':>12}{'new tokens':>12}{'per new':>9}"
          f"{'KV reused':>11}{'PRM s':>8}{'total s':>9}")
    for on, label in ((True, "incremental"), (False, "full re-read")):
        x = r[on]
        print(f"    {label:<14}{x['run']:>11}{x['incremental']:>9}{x['tokens']:>12,}{x['new_tokens']:>12,}"
              f"{x['tokens'] / max(1, x['new_tokens']):>9.2f}{x['reused']:>11,}{x['prm_seconds']:>8.2f}{x['seconds']:>9.2f}")
    on, off = r[True], r[False]
    ratio = on["tokens"] / max(1, on["new_tokens"])
    print(f"    PRM tokens {off['tokens'] / max(1, on['tokens']):.1f}x fewer, PRM time {off['prm_seconds'] / on['prm_seconds']:.2f}x "
          f"faster with incremental scoring; {ratio:.2f} tokens per new step token "
          f"(target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'}); ledger PRM tokens {on['ledger']:,} vs {off['ledger']:,}; "
          f"same trees: {'yes' if on['trees'] == off['trees'] else 'NO'}")


def print_cache(args, c: dict) -> None:
    print(f"\n(b) cache: REBASE (T_b=0.2) widths {args.widths} on {args.problems} problems, seed 0, "
          f"one PRM across the sweep")
    head = (f"    {'run':<16}{'requested':>10}{'from cache':>11}{'dedup':>7}{'model runs':>11}"
            f"{'model tokens':>13}{'naive tokens':>13}{'saved':>7}{'seconds':>8}")
    for cache, label in ((True, "cache + dedup"), (False, "dedup only (cache off)")):
        print(f"  {label}")
        print(head)
        tot = {k: 0 for k in ("requested", "cached", "dedup", "run", "tokens", "naive", "sec")}
        for r in c[cache]:
            vals = (r["chains_requested"], r["served_from_cache"], r["deduplicated"], r["chains_run"],
                    r["tokens_run"], r["naive_tokens"], r["seconds"])
            for k, v in zip(tot, vals):
                tot[k] += v
            print(f"    {'width ' + str(r['width']):<16}{vals[0]:>10}{vals[1]:>11}{vals[2]:>7}{vals[3]:>11}"
                  f"{vals[4]:>13,}{vals[5]:>13,}{1 - vals[4] / max(1, vals[5]):>7.1%}{vals[6]:>8.2f}")
        print(f"    {'sweep total':<16}{tot['requested']:>10}{tot['cached']:>11}{tot['dedup']:>7}{tot['run']:>11}"
              f"{tot['tokens']:>13,}{tot['naive']:>13,}{1 - tot['tokens'] / max(1, tot['naive']):>7.1%}"
              f"{tot['sec']:>8.2f}")
    on = c[True]
    req = sum(r["chains_requested"] for r in on)
    hit = sum(r["served_from_cache"] for r in on)
    dd = sum(r["deduplicated"] for r in on)
    tok_on = sum(r["tokens_run"] for r in on)
    tok_off = sum(r["tokens_run"] for r in c[False])
    naive = sum(r["naive_tokens"] for r in on)
    print(f"    chains served without a model run: {(hit + dd) / max(1, req):.1%} of {req} "
          f"(prefix cache {hit / max(1, req):.1%}, in-request dedup {dd / max(1, req):.1%}); "
          f"model tokens saved: {1 - tok_on / max(1, naive):.1%} vs scoring every chain, "
          f"{1 - tok_on / max(1, tok_off):.1%} vs dedup alone")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--model-size", choices=sorted(SIZES), default="small")
    ap.add_argument("--chains", type=int, default=256)
    ap.add_argument("--max-batch-tokens", type=int, default=None,
                    help="token budget per forward pass (default: the PRM's, 1024 on CPU, 16384 on GPU)")
    ap.add_argument("--problems", type=int, default=32, help="problems in the cache workload")
    ap.add_argument("--widths", type=int, nargs="+", default=[4, 8, 16], help="REBASE widths swept")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="timings are the best of this many runs")
    ap.add_argument("--skip-cache", action="store_true")
    ap.add_argument("--skip-batching", action="store_true")
    ap.add_argument("--skip-incremental", action="store_true")
    ap.add_argument("--policy", default="small", help="built-in policy of the incremental workload")
    ap.add_argument("--incremental-prm", choices=("builtin", "random"), default="builtin")
    ap.add_argument("--incremental-width", type=int, default=16)
    args = ap.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)

    dev = (torch.cuda.get_device_name() if args.device.startswith("cuda")
           else f"CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"# PRM scoring benchmark: Llama value-head PRM '{args.model_size}', {args.dtype}, {dev}")
    if not args.skip_incremental:
        print_incremental(args, bench_incremental(args))
    if args.skip_batching:
        return
    b = bench_batching(args)
    print(f"\n(a) batching: {b['chains']} chains, {b['tokens']:,} tokens, {b['params']:,} non-embedding params, "
          f"{b['budget']} tokens per batch, best of {args.repeats}")
    gflops = 2 * b["params"] * b["tokens"] / 1e9  # matmul work of the non-embedding weights
    print(f"    {'mode':<16}{'seconds':>10}{'chains/s':>12}{'tokens/s':>12}{'GFLOP/s':>10}"
          f"{'in forward':>12}{'forward GFLOP/s':>17}")
    for mode, key in (("one at a time", "single"), ("batched", "batched")):
        wall, fwd = b[f"{key}_s"], b[f"{key}_fwd_s"]
        print(f"    {mode:<16}{wall:>10.3f}{b['chains'] / wall:>12.1f}{b['tokens'] / wall:>12,.0f}{gflops / wall:>10.1f}"
              f"{fwd / wall:>12.0%}{gflops / fwd:>17.1f}")
    target = 20 if args.model_size == "1b" else 4
    print(f"    speedup {b['speedup']:.1f}x (target >= {target}x: {'met' if b['speedup'] >= target else 'NOT met'}); "
          f"batched vs single max |diff| {b['max_diff']:.2e} ({'ok' if b['ok'] else 'TOO LARGE'}); "
          f"{b['forward_calls']} forward calls")
    # Batched scoring cannot beat its own forward passes: with no time outside them at all, the
    # speedup would be one-at-a-time wall / batched forward time. The rest of the gap is the forward rate.
    print(f"    ceiling at this forward rate: {b['single_s'] / b['batched_fwd_s']:.1f}x (no time outside the "
          f"batched forward passes); one chain alone runs its forward at "
          f"{b['single_fwd_s'] / b['batched_fwd_s']:.1f}x the batched forward time")
    if args.skip_cache:
        return
    print_cache(args, bench_cache(args))


if __name__ == "__main__":
    main()
