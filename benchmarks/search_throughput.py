"""Search throughput: KV reuse and cross-problem batching, measured side by side in one run.

    python benchmarks/search_throughput.py                 # CPU, built-in large policy if present
    python benchmarks/search_throughput.py --random-size small               # random 3.5M Llama, GSM8K questions
    python benchmarks/search_throughput.py --device cuda --dtype bfloat16 --random-size 1b

Prints (a) policy tokens processed per generated token with reuse on vs off, (b) the
wall-clock speedup of reuse, (c) the speedup of the Runner's cross-problem batching over
solving problems one by one, (d) the share of wall time spent outside model forward passes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from treesearch.algorithms import Rebase  # noqa: E402
from treesearch.ledger import total_parameters  # noqa: E402
from treesearch.policy_hf import TransformersPolicy  # noqa: E402
from treesearch.runner import Runner, SearchLimits  # noqa: E402
from treesearch.step_format import StepFormat  # noqa: E402
from treesearch.testing import ScriptedPRM  # noqa: E402

BUILTIN = Path(__file__).resolve().parents[1] / "experiments" / "builtin" / "checkpoints" / "lm-xl"
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
    """Wall time spent inside model.forward (synchronised on CUDA)."""

    def __init__(self, model):
        self.total = 0.0
        self.calls = 0
        self._t0 = 0.0
        self.cuda = next(model.parameters()).is_cuda
        self._hooks = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def remove(self) -> None:
        """Stop timing (the hooks synchronise the device on every call)."""
        for h in self._hooks:
            h.remove()

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def _pre(self, *_):
        self._sync()
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.total += time.perf_counter() - self._t0
        self.calls += 1


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
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok, questions = load(args)
    timer = ForwardTimer(model)
    fmt = StepFormat.preset("newline")
    limits = SearchLimits(max_depth=8, max_step_tokens=48, max_solution_tokens=256)
    alg = Rebase(width=args.width, temperature=0.2)
    n_params = total_parameters(model)
    prompt_tokens = sum(len(tok(q)["input_ids"]) for q in questions) / len(questions)
    print(f"model: {n_params / 1e6:.2f} M parameters on {args.device} ({args.dtype}); "
          f"REBASE width {args.width}, {len(questions)} problems, mean prompt {prompt_tokens:.0f} tokens")

    def policy(reuse):
        return TransformersPolicy(model, tok, fmt, reuse_kv=reuse, max_batch_rows=args.max_batch_rows)

    run(policy(True), questions[:2], alg, limits)  # warm-up
    timer.total = 0.0
    on_wall, on_gen, on_proc = run(policy(True), questions, alg, limits)
    fwd_on = timer.total
    off_wall, off_gen, off_proc = run(policy(False), questions, alg, limits)
    k = min(args.one_by_one_problems, len(questions))
    one_wall, one_gen, _ = run(policy(True), questions[:k], alg, limits, one_by_one=True)

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
