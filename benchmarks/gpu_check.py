"""The GPU check: the search's throughput on one GPU against Hugging Face ``generate`` and against the
forward passes alone, in one run that needs no download and no install (run it with
``bash benchmarks/gpu_check.sh``; see docs/gpu.md).

    python benchmarks/gpu_check.py                    # CUDA: random Llamas of ~1B and ~7B in bf16
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/gpu_check.md   # a 0.5 M model on the CPU

Models: randomly initialised Llamas (``search_throughput.RANDOM_SIZES``, built on the device in their
dtype) with the built-in task's character tokenizer; prompts: GSM8K test questions (shipped in
experiments/data). For each model size, arms run interleaved ``--repeats`` times after a warm-up (the
median wall time counts):

- sampling N and REBASE width W on the transformers backend (``TransformersPolicy`` + ``Runner``;
  REBASE scores with a free scripted PRM, so the time is the policy's);
- HF ``generate(num_return_sequences=N, do_sample=True)`` on the same model and prompts, with the same
  token cap as the search's solutions;
- "the limit" of each of those: the forward passes the arm made (recorded with their inputs in an
  instrumented run), replayed back to back with nothing else in between, on a KV buffer of the same
  shape (zeros: attention's cost does not depend on the values).

Then PRM scoring (``prm_scoring.bench_incremental``: REBASE with a built-in policy, a random value-head
PRM on the device) with incremental scoring on and off.

The table: generated tokens/s (PRM rows: new step tokens scored per PRM second), the ratio to HF
generate, the ratio to the limit (limit seconds / arm seconds), the share of the arm's wall time
spent outside model forward passes (forward passes timed in the instrumented run, synchronised), and
the peak device memory (``torch.cuda.max_memory_allocated``, weights included). It is printed and
written, with the device, versions, date and command, to docs/gpu.md's table section (or ``--out``).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import prm_scoring  # noqa: E402
from search_throughput import ForwardTimer, load, run  # noqa: E402

from treesearch.algorithms import Rebase, Sampling  # noqa: E402
from treesearch.kv_cache import buffer_cache, cache_arguments  # noqa: E402
from treesearch.ledger import count_parameters  # noqa: E402
from treesearch.policy_hf import TransformersPolicy  # noqa: E402
from treesearch.runner import SearchLimits  # noqa: E402
from treesearch.step_format import StepFormat  # noqa: E402

DOC = ROOT / "docs" / "gpu.md"
BEGIN, END = "<!-- gpu_check: table begin -->", "<!-- gpu_check: table end -->"
COLUMNS = ("arm", "model", "generated tok/s", "vs HF generate", "vs the limit", "outside forward", "peak memory GiB")
# The GPU settings, and the CPU smoke run's (so small that the default test suite runs it).
GPU = dict(sizes="1b,7b", questions=8, n=8, width=8, step_tokens=64, solution_tokens=64, repeats=3,
           prm_size="1b", prm_problems=32, prm_width=16, budget_s=400.0)
CPU = dict(sizes="tiny", questions=2, n=2, width=2, step_tokens=8, solution_tokens=16, repeats=1,
           prm_size="small", prm_problems=2, prm_width=2, budget_s=120.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Recorder:
    """Keeps every forward call's inputs (cloned: small next to the KV) while it is attached."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self._hook = model.register_forward_pre_hook(self._pre, with_kwargs=True)

    def _pre(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        pos = kwargs.get("position_ids")
        if mask is None:  # the search and generate always pass one; the past is what the mask covers
            raise RuntimeError("a forward call without an attention mask: its KV length is unknown")
        self.calls.append(dict(input_ids=ids.clone(), attention_mask=mask.clone(),
                               position_ids=None if pos is None else pos.clone(),
                               logits_to_keep=kwargs.get("logits_to_keep", 0)))

    def remove(self) -> None:
        self._hook.remove()


@torch.inference_mode()
def replay(model, calls: list[dict]) -> float:
    """Seconds to run the recorded forward passes back to back, each on a zero KV buffer holding
    the call's past (the positions its mask covers before its inputs), as the search's buffers do."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    p = next(model.parameters())
    rows = max(c["input_ids"].shape[0] for c in calls)
    cap = max(c["attention_mask"].shape[1] for c in calls)
    buf = torch.zeros((cfg.num_hidden_layers, 2, rows, cfg.num_key_value_heads, cap, head_dim),
                      dtype=p.dtype, device=p.device)
    sync(p.device)
    t = time.perf_counter()
    for c in calls:
        r, n = c["input_ids"].shape
        past = c["attention_mask"].shape[1] - n
        cache = buffer_cache(buf[:, :, :r, :, :past + n], past)
        model(input_ids=c["input_ids"], attention_mask=c["attention_mask"], position_ids=c["position_ids"],
              logits_to_keep=c["logits_to_keep"], **cache_arguments(model, cache))
    sync(p.device)
    seconds = time.perf_counter() - t
    del buf
    return seconds


# ---- the arms: each returns (wall seconds, generated tokens) -------------------------------------

def search_arm(model, tok, alg, limits):
    def go(questions):
        policy = TransformersPolicy(model, tok, StepFormat.preset("newline"), max_batch_rows=512)
        wall, gen, _ = run(policy, questions, alg, limits)
        return wall, gen
    return go


def generate_arm(model, tok, n: int, max_new: int):
    policy = TransformersPolicy(model, tok, StepFormat.preset("newline"))  # its prompt format and EOS ids
    eos, pad = policy.eos_ids, policy.pad_id

    @torch.inference_mode()
    def go(questions):
        prompts = [policy.encode_prompt(q) for q in questions]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, p in enumerate(prompts):  # left-padded, as generate wants
            ids[b, width - len(p):] = torch.tensor(p)
            mask[b, width - len(p):] = 1
        ids, mask = ids.to(policy.device), mask.to(policy.device)
        torch.manual_seed(0)  # the same draws, hence the same forward shapes, every time
        sync(policy.device)
        t = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                             top_k=0, num_return_sequences=n, max_new_tokens=max_new, eos_token_id=eos,
                             pad_token_id=pad)
        sync(policy.device)
        wall = time.perf_counter() - t
        new = out[:, width:]
        ended = torch.isin(new, torch.tensor(eos, device=new.device))
        first = torch.where(ended.any(1), ended.int().argmax(1) + 1, new.shape[1])  # up to its EOS, inclusive
        return wall, int(first.sum())
    return go


# ---- one model size ---------------------------------------------------------------------------

def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def bench_size(args, size: str, deadline: float) -> list[dict]:
    t0 = time.perf_counter()
    model, tok, questions = load(argparse.Namespace(device=args.device, dtype=args.dtype, random_size=size,
                                                    prompts="gsm8k", problems=args.questions))
    device = next(model.parameters()).device
    n_params = count_parameters(model, "non_embedding")
    label = f"{size} ({n_params / 1e9:.2f} B)" if n_params >= 1e8 else f"{size} ({n_params / 1e6:.1f} M)"
    print(f"{label}: built in {time.perf_counter() - t0:.1f} s", flush=True)
    limits = SearchLimits(max_depth=64, max_step_tokens=args.step_tokens, max_solution_tokens=args.solution_tokens)
    arms = {f"sampling N={args.n} (treesearch)": search_arm(model, tok, Sampling(n=args.n), limits),
            f"REBASE width {args.width} (treesearch)": search_arm(model, tok, Rebase(width=args.width, temperature=0.2),
                                                                  limits),
            f"HF generate, num_return_sequences={args.n}": generate_arm(model, tok, args.n, args.solution_tokens)}
    hf = list(arms)[-1]

    for go in arms.values():  # warm-up: kernels, the allocator
        go(questions[:2])
    stats: dict[str, dict] = {}
    for name, go in arms.items():  # the instrumented run: forward time inside the arm, and its calls
        rec, timer = Recorder(model), ForwardTimer(model)
        wall, gen = go(questions)
        timer.remove()
        rec.remove()
        stats[name] = dict(gen=gen, outside=1 - timer.total / wall, calls=rec.calls, walls=[], rates=[], limits=[],
                           peak=None)
        replay(model, rec.calls)  # its warm-up
    last = 0.0
    for i in range(args.repeats):  # interleaved, so every arm sees the same machine
        if i and time.perf_counter() + last > deadline:  # another round would end past the budget
            print(f"  time budget: {i} of {args.repeats} repeats", flush=True)
            break
        t = time.perf_counter()
        for name, go in arms.items():
            s = stats[name]
            peak_reset(device)
            wall, gen = go(questions)
            got = peak(device)
            s["peak"] = max(s["peak"] or 0.0, got) if got is not None else None
            if gen != s["gen"]:  # the same seeds: only nondeterministic GPU kernels can make a draw differ
                print(f"  note: {name} generated {gen} tokens, {s['gen']} in the instrumented run", flush=True)
            s["walls"].append(wall)
            s["rates"].append(gen / wall)
            s["limits"].append(replay(model, s["calls"]))
        last = time.perf_counter() - t
    rows = []
    hf_rate = statistics.median(stats[hf]["rates"])
    for name, s in stats.items():
        wall, limit, rate = (statistics.median(s[k]) for k in ("walls", "limits", "rates"))
        rows.append(dict(arm=name, model=label, rate=rate, vs_hf=rate / hf_rate, vs_limit=limit / wall,
                         outside=s["outside"], peak=s["peak"]))
        print(f"  {name}: {s['gen']} tokens, wall {wall:.2f} s (runs {', '.join(f'{w:.2f}' for w in s['walls'])}), "
              f"{len(s['calls'])} forward calls, alone {limit:.2f} s", flush=True)
    del model, tok, arms, stats
    free(device)
    return rows


def bench_prm(args) -> list[dict]:
    device = torch.device(args.device)
    ns = argparse.Namespace(device=args.device, dtype=args.dtype, model_size=args.prm_size, max_batch_tokens=None,
                            policy="small", problems=args.prm_problems, incremental_prm="random",
                            incremental_width=args.prm_width)
    timers: dict[bool, ForwardTimer] = {}
    peaks: dict[bool, float | None] = {}
    params: list[int] = []

    def attach(on: bool, prm) -> None:
        for before in timers:  # the previous setting's run is over
            if before not in peaks:
                peaks[before] = peak(device)
                timers[before].remove()
        free(device)
        peak_reset(device)
        timers[on] = ForwardTimer(prm.model.backbone)
        params.append(prm.num_parameters)

    prm_scoring.bench_incremental(argparse.Namespace(**{**vars(ns), "problems": 2}))  # warm-up
    out = prm_scoring.bench_incremental(ns, on_prm=attach)
    for on in timers:
        if on not in peaks:
            peaks[on] = peak(device)
            timers[on].remove()
    rows = []
    for on in (True, False):
        x = out[on]
        rate = x["new_tokens"] / x["prm_seconds"]
        print(f"  PRM, incremental {'on' if on else 'off'}: {x['tokens']:,} tokens run for {x['new_tokens']:,} new, "
              f"PRM {x['prm_seconds']:.2f} s, {timers[on].calls} forward calls", flush=True)
        rows.append(dict(arm=f"PRM scoring, incremental {'on' if on else 'off'} (new step tokens/s)",
                         model=f"{args.prm_size} PRM ({params[0] / 1e6:,.1f} M)",
                         rate=rate, vs_hf=None, vs_limit=None, outside=1 - timers[on].total / x["prm_seconds"],
                         peak=peaks[on]))
    if out[True]["trees"] != out[False]["trees"]:
        print("  note: incremental on and off built different trees (bf16 rounding can flip a selection)")
    return rows


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- the table ----------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    def x(v):
        return "—" if v is None else f"{v:.2f}x"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["arm"], r["model"], f"{r['rate']:.1f}", x(r["vs_hf"]), x(r["vs_limit"]), f"{r['outside']:.1%}",
                 "n/a (CPU)" if r["peak"] is None else f"{r['peak']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(args, command: str) -> str:
    import transformers

    device = (torch.cuda.get_device_name() if args.device.startswith("cuda")
              else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)")
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"- device: {device}",
        f"- torch {torch.__version__}{cuda}, transformers {transformers.__version__}, {args.dtype}",
        f"- date: {when}",
        f"- command: `{command}`",
        f"- workload: {args.questions} GSM8K questions, sampling N={args.n}, REBASE width {args.width} "
        f"(temperature 0.2, scripted PRM), HF generate with num_return_sequences={args.n}; steps of at most "
        f"{args.step_tokens} tokens, solutions and generate of at most {args.solution_tokens}; sampling temperature 1, "
        f"top_p 1; wall time: the median of {args.repeats} interleaved run(s) after a warm-up",
        f"- PRM rows: REBASE width {args.prm_width} on {args.prm_problems} built-in problems (built-in policy "
        f"'small' on the CPU), a random value-head PRM on {args.device}; tokens/s = new step tokens / PRM seconds",
    ])


def write(path: Path, text: str) -> None:
    """Replace the text between the table markers (a new file, or a file without them, gets them)."""
    block = f"{BEGIN}\n{text}\n{END}"
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, old, count=1, flags=re.S)
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny sizes on the CPU in float32 (what the test suite runs); nothing is written "
                         "unless --out is given")
    ap.add_argument("--sizes", help=f"random Llama sizes, comma-separated (default {GPU['sizes']}; "
                                    f"smoke: {CPU['sizes']})")
    for name in ("questions", "n", "width", "step_tokens", "solution_tokens", "repeats", "prm_problems", "prm_width"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, help=f"default {GPU[name]} (smoke: {CPU[name]})")
    ap.add_argument("--prm-size", choices=sorted(prm_scoring.SIZES), help=f"default {GPU['prm_size']}")
    ap.add_argument("--skip-prm", action="store_true")
    ap.add_argument("--budget-s", type=float,
                    help="soft time budget in seconds: a repeat (beyond the first), a size (beyond the first) or the "
                         "PRM rows that would end past it are skipped, from the time the last ones took "
                         f"(default {GPU['budget_s']:.0f}; the shell script's hard limit is 480)")
    ap.add_argument("--out", help="write the table here (default: docs/gpu.md's table section on a GPU)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    base = CPU if args.cpu_smoke else GPU
    for k, v in base.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.device, args.dtype = ("cpu", "float32") if args.cpu_smoke else ("cuda", "bfloat16")
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --cpu-smoke runs it on the CPU")
    command = os.environ.get("GPU_CHECK_COMMAND") or shlex.join([sys.executable, *sys.argv])
    out = Path(args.out) if args.out else (None if args.cpu_smoke else DOC)
    deadline = start + args.budget_s
    rows: list[dict] = []

    def emit() -> str:
        text = header(args, command) + "\n\n" + table(rows)
        if out is not None:
            write(out, text)
        return text

    spent = 0.0  # by the last size
    for i, size in enumerate(s.strip() for s in args.sizes.split(",") if s.strip()):
        # A bigger model costs more per forward pass: one that might end past the budget is skipped.
        if i and time.perf_counter() + 2 * spent > deadline:
            print(f"time budget: size {size} skipped", flush=True)
            continue
        t = time.perf_counter()
        rows += bench_size(args, size, deadline)
        spent = time.perf_counter() - t
        emit()  # what is measured so far survives a timeout
    if args.skip_prm or time.perf_counter() > deadline:
        print("PRM scoring skipped" + ("" if args.skip_prm else " (time budget)"), flush=True)
    else:
        rows += bench_prm(args)
    text = emit()
    print(f"\n{text}\n\ntotal {time.perf_counter() - start:.0f} s" + (f"; table written to {out}" if out else ""))


if __name__ == "__main__":
    main()
