"""Search throughput: KV reuse and cross-problem batching, measured side by side in one run.

    python benchmarks/search_throughput.py                 # CPU, built-in large policy if present
    python benchmarks/search_throughput.py --random-size small               # random 3.5M Llama, GSM8K questions
    python benchmarks/search_throughput.py --device cuda --dtype bfloat16 --random-size 1b
    python benchmarks/search_throughput.py --profile default --methods sampling rebase   # the demo study, split

Prints (a) policy tokens processed per generated token with reuse on vs off, (b) the
wall-clock speedup of reuse, (c) the speedup of the Runner's cross-problem batching over
solving problems one by one, (d) the share of wall time spent outside model forward passes;
after a warm-up, the arms run interleaved ``--repeats`` times and each figure is the arm's best run.
``--profile [quick|default]`` instead runs the built-in demo study and splits its wall time into
policy forward, PRM forward and the rest: the rest's known parts (KV copies, draws, PRM batching)
timed exactly, then its top functions sampled.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from treesearch.algorithms import Rebase  # noqa: E402
from treesearch.ledger import total_parameters  # noqa: E402
from treesearch.policy_hf import TransformersPolicy  # noqa: E402
from treesearch.runner import Runner, SearchLimits  # noqa: E402
from treesearch.step_format import StepFormat  # noqa: E402
from treesearch.testing import ScriptedPRM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ROOT / "experiments" / "builtin" / "checkpoints" / "lm-xl"
RANDOM_SIZES = {  # random Llamas (the built-in char tokenizer's 100-token vocabulary: embeddings are negligible)
    "tiny": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),  # 0.5 M: the CPU smoke run of benchmarks/gpu_check.py
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4),  # 3.5 M
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=16,
               num_key_value_heads=4),  # TinyLlama's shape, 0.99 B
    "7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8),  # Mistral-7B's shape, 6.98 B
}


def load(args) -> tuple[object, object, list[str]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    dtype = getattr(torch, args.dtype)
    if args.random_size is None and BUILTIN.exists():
        from treesearch.builtin.task import test_split
        tok = AutoTokenizer.from_pretrained(BUILTIN)
        model = AutoModelForCausalLM.from_pretrained(BUILTIN, dtype=dtype)
        return model.to(args.device).eval(), tok, [p.question for p in test_split(args.problems)]
    from treesearch.builtin.tokenizer import build_tokenizer
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048,
                      eos_token_id=2, bos_token_id=1, pad_token_id=0, **RANDOM_SIZES[args.random_size or "small"])
    with torch.device(args.device):  # initialised in place, in its dtype: a 7B model in float32 on a CPU takes minutes
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype).eval()
    if args.prompts == "gsm8k":
        from experiments.datasets import load_dataset
        return model, tok, [p.question for p in load_dataset("gsm8k", limit=args.problems)]
    return model, tok, [f"{i}+{i * 7 % 13}*{i % 5}" for i in range(args.problems)]


class ForwardTimer:
    """Wall time spent inside the forward passes of ``modules`` (synchronised on CUDA). A call nested in
    another timed call (a head inside its model) counts once; ``active`` says whether one is running."""

    def __init__(self, *modules):
        self.total = 0.0
        self.calls = 0
        self.active = 0
        self._t0 = 0.0
        self.cuda = False
        self._hooks = []
        for m in modules:
            self.attach(m)

    def attach(self, module) -> None:
        self.cuda |= any(p.is_cuda for p in module.parameters())
        self._hooks += [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def remove(self) -> None:
        """Stop timing (the hooks synchronise the device on every call)."""
        for h in self._hooks:
            h.remove()

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _pre(self, *_):
        if not self.active:
            self._sync()
            self._t0 = time.perf_counter()
        self.active += 1

    def _post(self, *_):
        self.active -= 1
        if not self.active:
            self._sync()
            self.total += time.perf_counter() - self._t0
            self.calls += 1


class StackSampler:
    """Where the time outside forward passes goes: the main thread's Python stack, sampled every
    ``interval`` seconds while no timed forward pass runs (py-spy's idea, with nothing to install;
    cProfile would slow the Python side twofold and so inflate the very share it measures). A C
    call that holds the GIL delays the next sample, whose frame then gets that time too.
    Per function, the seconds it was on the stack (the project's own functions) and the seconds
    it was the innermost Python frame (any function)."""

    def __init__(self, timers, interval: float | None = 0.002):
        self.timers, self.interval = timers, interval
        self.inclusive: Counter = Counter()
        self.own: Counter = Counter()
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> StackSampler:
        if self.interval:
            self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        if self.interval:
            self._thread.join()

    def _loop(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            now = time.perf_counter()
            dt, last = now - last, now
            frame = sys._current_frames().get(self._main)
            if frame is None or any(t.active for t in self.timers):
                continue
            self.own[frame.f_code] += dt
            mine = set()
            while frame is not None:
                if frame.f_code.co_filename.startswith(self._root):
                    mine.add(frame.f_code)
                frame = frame.f_back
            for code in mine:
                self.inclusive[code] += dt

    _root = str(ROOT)

    @staticmethod
    def where(code) -> str:
        path = Path(code.co_filename)
        short = path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(*path.parts[-2:])
        return f"{short}:{code.co_qualname}"


class PartTimer:
    """Exact wall time of named functions, less the forward passes they ran meanwhile: each is
    wrapped for the run. The sampler above says where time goes by chance of being on the stack
    (and over-counts frames that run after a C call holding the GIL); these are stopwatches.
    A nested part (a copy inside ``expand``) is counted in its own line and in its parent's."""

    def __init__(self, timers, parts: list[tuple[int, str, object, str]]):
        self.timers, self.parts = list(timers), parts  # (indent, label, owner, attribute)
        self.seconds: Counter = Counter()
        self.calls: Counter = Counter()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> PartTimer:
        for _, label, owner, name in self.parts:
            self._stack.enter_context(mock.patch.object(owner, name, self._timed(label, getattr(owner, name))))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _timed(self, label: str, fn):
        def timed(*a, **k):
            forward, t = sum(x.total for x in self.timers), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] += time.perf_counter() - t - (sum(x.total for x in self.timers) - forward)
                self.calls[label] += 1
        return functools.wraps(fn)(timed)

    def print(self, wall: float, outside: float) -> None:
        print("  outside forward, timed exactly (a part includes the parts indented under it):")
        top = 0.0
        for indent, label, *_ in self.parts:
            sec = self.seconds[label]
            top += sec if indent == 0 else 0.0
            print(f"    {'  ' * indent}{label:<{52 - 2 * indent}}{sec:>8.1f} s{sec / wall:>7.1%}"
                  f"{self.calls[label]:>10,} calls")
        rest = outside - top
        print(f"    {'the rest (the Runner loop, trees, writing records)':<52}{rest:>8.1f} s{rest / wall:>7.1%}")


def demo_parts() -> list[tuple[int, str, object, str]]:
    """The parts of a demo study's time outside forward passes that ``--profile`` times exactly."""
    from experiments import sweep
    from reward_models import batching
    from treesearch import policy_hf, runner
    policy = policy_hf.TransformersPolicy
    return [(0, "preflight: checks, the first imports", sweep, "preflight"),
            (0, "loading the policies", sweep, "load_policy"),
            (0, "loading the PRMs", sweep, "load_prm_for"),
            (0, "gc between models (sweep._release)", sweep, "_release"),
            (0, "judging: a record per search", sweep, "build_record"),
            (0, "Runner._expand (search side + policy)", runner.Runner, "_expand"),
            (1, "TransformersPolicy.expand", policy, "expand"),
            (2, "kv_cache.gather: cached prefixes into rows", policy_hf, "gather"),
            (2, "_Rows.move: CPU buffer re-laid", policy_hf._Rows, "move"),
            (2, "_Rows.last: finished steps' KV kept", policy_hf._Rows, "last"),
            (2, "_Rows.drop: finished rows out", policy_hf._Rows, "drop"),
            (2, "_sample: draws", policy, "_sample"),
            (0, "Runner._score (search side + PRM)", runner.Runner, "_score"),
            (1, "BatchScorer.score", batching.BatchScorer, "score"),
            (2, "kv_cache.gather: cached chains into rows", batching, "gather")]


def profile(args) -> None:
    """``--profile``: the built-in demo study's search (``treesearch demo``'s problems, methods and
    policies with the built-in likelihood PRM; ``--methods`` keeps some), every forward pass of a
    policy or PRM model timed exactly, and the wall time split into policy forward, PRM forward and
    the rest, with the rest's known parts timed exactly (``demo_parts``) and its top functions
    sampled. The wall is the study's run (``run_study``: searching,
    judging, writing records); interpreter start, imports, the report and plots are not in it."""
    from experiments import sweep
    from experiments.builtin.demo import study

    cfg = study(args.profile)
    if args.methods:
        cfg = dataclasses.replace(cfg, methods=[m for m in cfg.methods if m.name in args.methods])
    timers = {"policy": ForwardTimer(), "PRM": ForwardTimer()}

    def timed(load, role):
        def loaded(*a, **k):
            obj = load(*a, **k)
            model = getattr(obj, "model", None)  # oracles have none
            if isinstance(model, torch.nn.Module):  # the model and its children (a PRM calls backbone and head apart)
                for m in (model, *model.children()):
                    timers[role].attach(m)
            return obj
        return loaded

    method = [""]  # the method whose searches run now
    per_method: dict[str, list[float]] = {}  # method -> its searches' wall, policy forward, PRM forward

    def algorithm_for(m, budget, _build=sweep.algorithm_for):
        method[0] = m.name
        return _build(m, budget)

    class TimedRunner(sweep.Runner):
        def run(self, *a, **k):
            before = [time.perf_counter(), *(t.total for t in timers.values())]
            try:
                return super().run(*a, **k)
            finally:
                now = [time.perf_counter(), *(t.total for t in timers.values())]
                acc = per_method.setdefault(method[0], [0.0] * 3)
                for i, (x, y) in enumerate(zip(before, now)):
                    acc[i] += y - x

    with tempfile.TemporaryDirectory() as out, \
            mock.patch.object(sweep, "load_policy", timed(sweep.load_policy, "policy")), \
            mock.patch.object(sweep, "load_prm_for", timed(sweep.load_prm_for, "PRM")), \
            mock.patch.object(sweep, "algorithm_for", algorithm_for), mock.patch.object(sweep, "Runner", TimedRunner), \
            PartTimer(timers.values(), demo_parts()) as parts, \
            StackSampler(timers.values(), interval=0.002 if args.top else None) as sampler:
        t = time.perf_counter()
        sweep.run_study(cfg, out=out, progress=False)
        wall = time.perf_counter() - t
    rest = wall - sum(t.total for t in timers.values())
    print(f"profile: demo study '{args.profile}', {len(cfg.methods)} methods, policies "
          f"{', '.join(p.name for p in cfg.policies)}; study wall {wall:.1f} s "
          f"(start, imports, report and plots not included)")
    for role, t in timers.items():
        print(f"  {role + ' forward':<24}{t.total:>8.1f} s{t.total / wall:>7.1%}   {t.calls:,} calls")
    print(f"  {'outside forward':<24}{rest:>8.1f} s{rest / wall:>7.1%}")
    print(f"  per method, its searches (Runner.run): {'wall s':>8}{'policy fwd':>11}{'PRM fwd':>9}{'outside':>9}")
    for name, (w, pol, prm) in sorted(per_method.items(), key=lambda kv: -kv[1][0]):
        print(f"    {name:<36}{w:>8.1f}{pol:>11.1f}{prm:>9.1f}{(w - pol - prm) / w:>9.1%}")
    parts.print(wall, rest)
    for title, counts in (("on the stack (project functions)", sampler.inclusive),
                          ("innermost Python frame (any function)", sampler.own))[:2 if args.top else 0]:
        print(f"  outside forward, top {args.top} by time {title}, sampled:")
        for code, sec in counts.most_common(args.top):
            print(f"    {sec:>7.2f} s {sec / wall:>6.1%}  {sampler.where(code)}")


def run(policy, questions, alg, limits, one_by_one=False):
    prm = ScriptedPRM(lambda q, steps: (sum(map(ord, steps[-1])) % 97) / 97)  # free: isolates the policy
    runner = Runner(policy, prm, limits=limits, progress=False)
    t = time.perf_counter()
    res = [r for q in questions for r in runner.run([q], alg, seed=0)] if one_by_one else runner.run(questions, alg, seed=0)
    wall = time.perf_counter() - t
    gen = sum(r.ledger.generated_tokens for r in res)
    proc = sum(r.ledger.policy_processed_tokens for r in res)
    return wall, gen, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--random-size", choices=sorted(RANDOM_SIZES), default=None,
                    help="use a randomly initialised Llama of this size instead of the built-in policy")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--prompts", choices=["gsm8k", "arithmetic"], default="gsm8k",
                    help="questions for the random model: GSM8K test questions (the target workload) or "
                         "short arithmetic strings (a prompt of ~8 tokens, the least that reuse can save)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--one-by-one-problems", type=int, default=8,
                    help="problems for the one-by-one arm (its per-problem time is what is compared)")
    ap.add_argument("--max-batch-rows", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="arms run interleaved this many times; each figure is the best")
    ap.add_argument("--profile", nargs="?", const="quick", choices=("quick", "default"),
                    help="instead: the built-in demo study of this profile (quick if no value), its wall time split "
                         "into policy forward, PRM forward and the rest, with the rest's parts and top functions")
    ap.add_argument("--methods", nargs="+", help="--profile: only these methods of the study (e.g. sampling rebase)")
    ap.add_argument("--top", type=int, default=12, help="--profile: functions listed")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.profile:
        return profile(args)
    model, tok, questions = load(args)
    timer = ForwardTimer(model)
    fmt = StepFormat.preset("newline")
    limits = SearchLimits(max_depth=8, max_step_tokens=48, max_solution_tokens=256)
    alg = Rebase(width=args.width, temperature=0.2)
    n_params = total_parameters(model)
    prompt_tokens = sum(len(tok(q)["input_ids"]) for q in questions) / len(questions)
    print(f"model: {n_params / 1e6:.2f} M parameters on {args.device} ({args.dtype}); "
          f"REBASE width {args.width}, {len(questions)} problems, mean prompt {prompt_tokens:.0f} tokens")

    policies = {reuse: TransformersPolicy(model, tok, fmt, reuse_kv=reuse, max_batch_rows=args.max_batch_rows)
                for reuse in (True, False)}  # each kept across runs (its buffers warm), its prefix store emptied

    def arm(reuse, qs, one_by_one=False):
        policies[reuse].store.clear()
        return run(policies[reuse], qs, alg, limits, one_by_one)

    k = min(args.one_by_one_problems, len(questions))
    arms = {"batched, reuse on": lambda: arm(True, questions), "batched, reuse off": lambda: arm(False, questions),
            f"one by one ({k} problems)": lambda: arm(True, questions[:k], one_by_one=True)}
    for reuse in (True, False):  # warm-up
        arm(reuse, questions[:2])
    best: dict[str, tuple] = {}  # arm -> (wall, generated, processed, forward seconds) of its fastest run
    for _ in range(args.repeats):  # interleaved, so every arm sees the same machine
        for name, go in arms.items():
            timer.total = 0.0
            wall, gen, proc = go()
            if name not in best or wall < best[name][0]:
                best[name] = (wall, gen, proc, timer.total)
    (on_wall, on_gen, on_proc, fwd_on), (off_wall, off_gen, off_proc, _), (one_wall, one_gen, _, _) = best.values()

    print(f"{'arm':<28}{'wall s':>9}{'gen tok':>10}{'proc tok':>10}{'gen tok/s':>11}")
    for name, wall, gen, proc in [("batched, reuse on", on_wall, on_gen, on_proc),
                                  ("batched, reuse off", off_wall, off_gen, off_proc),
                                  (f"one by one ({k} problems)", one_wall, one_gen, float("nan"))]:
        print(f"{name:<28}{wall:>9.2f}{gen:>10}{proc:>10.0f}{gen / wall:>11.0f}")
    print(f"(a) processed / generated tokens: reuse on {on_proc / on_gen:.2f}, reuse off {off_proc / off_gen:.2f}")
    print(f"(b) wall-clock speedup of KV reuse: {off_wall / on_wall:.2f}x (target >= 2x)")
    print(f"(c) speedup of cross-problem batching over one by one: "
          f"{(one_wall / one_gen) / (on_wall / on_gen):.2f}x per generated token (target >= 3x)")
    print(f"(d) share of wall time outside model forward passes (reuse on): "
          f"{1 - fwd_on / on_wall:.1%} (target <= 15%)")


if __name__ == "__main__":
    main()
