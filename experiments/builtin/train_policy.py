"""Train a small/large/xl Llama language model on the built-in task, time-bounded, on CPU.

    python -m experiments.builtin.train_policy --size small --minutes 5 --seed 0 \\
        --out experiments/builtin/checkpoints/policy-small

Why time-bounded: the study compares policies by the compute they cost, and the sizes
must be trainable on a laptop; the LR schedule (warmup + cosine) runs on the wall clock
so any budget ends at a decayed LR. Loss is on solution tokens only (the question's random
numbers are incompressible noise). Training state is saved every few minutes under
``--work-dir`` so ``--resume`` loses little after an interrupt. At the end the model is
evaluated greedily on the fixed test split and saved (safetensors + config + tokenizer +
model card) into ``--out``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from treesearch.builtin.task import LEVELS, BuiltinProblem, grade_steps, parse_answer, parse_step, split_steps, test_split, train_stream
from treesearch.builtin.tokenizer import build_tokenizer, encode_example, portable_tokenizer_files, prompt_text
from treesearch.ledger import non_embedding_parameters


@dataclass(frozen=True)
class ModelSize:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    lr: float  # default peak LR (smaller models tolerate larger steps)


# One architecture (Llama, char vocab, tied embeddings) at three sizes; non-embedding
# parameters ~33k / ~197k / ~590k. The study's two policies are "small" and "large" (6.0x,
# as Llemma-7B vs 34B are 5x); "xl" is the language model under the built-in PRM, which
# verifies best when it computes a step better than the policy that wrote it. Sized for a
# 1-core CPU budget: measured ~20 / ~13 / 7 updates per second at batch 16.
SIZES: dict[str, ModelSize] = {
    "small": ModelSize(layers=2, hidden=32, heads=2, intermediate=128, lr=1e-2),
    "large": ModelSize(layers=3, hidden=64, heads=4, intermediate=256, lr=7e-3),
    "xl": ModelSize(layers=4, hidden=96, heads=4, intermediate=384, lr=5e-3),
}


@dataclass
class TrainConfig:
    size: str
    minutes: float
    max_steps: int | None = None  # optional step budget too: whichever ends first
    seed: int = 0
    batch_size: int = 16  # small batches: more updates per CPU second, which is what matters here
    lr: float = 5e-3
    min_lr_frac: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.05
    init_scale: float = 1.0
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    threads: int = 1  # 2 threads thrash when other jobs share the 2 cores (measured 6x slower)
    eval_n: int = 500
    checkpoint_every_s: float = 120.0
    eval_every_s: float = 0.0  # >0: quick greedy eval on 100 test problems this often (logged)


def make_model(size: str, tokenizer: PreTrainedTokenizerFast, seed: int, init_scale: float = 1.0) -> LlamaForCausalLM:
    """Llama of the given size; weights N(0, (init_scale/sqrt(hidden))^2).

    Why not HF's default std 0.02: at hidden 64-192 it makes attention logits ~0, so
    attention starts uniform and the copy/lookup heads this task needs take thousands
    of steps to appear.
    """
    s = SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
        initializer_range=init_scale / math.sqrt(s.hidden),
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (input_ids, attention_mask, labels)


def batches(tokenizer: PreTrainedTokenizerFast, seed: int, batch_size: int, levels: Sequence[int], pool: int = 16) -> Iterator[Batch]:
    """(input_ids, attention_mask, labels) from the endless train stream; loss on solutions only."""
    problems = train_stream(seed, levels)
    encoded = (encode_example(tokenizer, p.question, p.solution_steps) for p in problems)
    return bucketed(encoded, batch_size, tokenizer.pad_token_id, random.Random(seed), pool)


def bucketed(examples: Iterator[tuple[list[int], int]], batch_size: int, pad_id: int, rng: random.Random, pool: int = 16) -> Iterator[Batch]:
    """Collated batches of (ids, loss start) examples, cut from pools of ``pool`` batches sorted by length.

    Why: little compute goes to padding (policy examples run 50-170 tokens, revision
    examples 50-800), while the batches are still served in random order.
    """
    while True:
        encoded = list(itertools.islice(examples, batch_size * pool))
        if not encoded:
            return
        encoded.sort(key=lambda e: len(e[0]))
        chunks = [encoded[i : i + batch_size] for i in range(0, len(encoded), batch_size)]
        rng.shuffle(chunks)
        for chunk in chunks:
            yield _collate(chunk, pad_id)


def _collate(chunk: Sequence[tuple[list[int], int]], pad_id: int) -> Batch:
    """Right-padded batch; labels are the tokens from each example's loss start on (-100 elsewhere)."""
    width = max(len(ids) for ids, _ in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    labels = torch.full((len(chunk), width), -100, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(chunk):
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        mask[i, : len(seq)] = 1
    return ids, mask, labels


def lr_at(cfg: TrainConfig, step: int, frac_time: float) -> float:
    """Linear warmup over steps, then cosine decay over the fraction of wall time used."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps)
    cos = cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac_time)))
    return cfg.lr * warm * cos


# ---------------------------------------------------------------- evaluation

@dataclass
class EvalResult:
    accuracy: float
    per_level_accuracy: dict[int, float]
    step_error_rate: float  # locally wrong steps / generated steps (answer lines included)
    per_level_step_error_rate: dict[int, float]
    per_step_index_error_rate: dict[int, float]  # by position k of the step (1-based)
    error_kinds: dict[str, int]
    arith_error_rate_by_op: dict[str, float]  # among steps that copied a, op, b right
    n: int


@torch.no_grad()
def generate_solutions(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, questions: Sequence[str], *, greedy: bool = True, temperature: float = 1.0, batch_size: int = 100, max_new_tokens: int = 160, seed: int = 0) -> list[str]:
    """Generated solution text per question (left-padded batches, stop at <eos>)."""
    model.eval()
    torch.manual_seed(seed)
    out: list[str] = []
    for i in range(0, len(questions), batch_size):
        enc = tokenizer([prompt_text(q) for q in questions[i : i + batch_size]], return_tensors="pt", padding=True)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=temperature if not greedy else None,
            top_k=0 if not greedy else None,
            top_p=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


def score(problems: Sequence[BuiltinProblem], texts: Sequence[str]) -> EvalResult:
    correct: dict[int, list[bool]] = {}
    step_err: dict[int, list[bool]] = {}
    by_index: dict[int, list[bool]] = {}
    kinds: dict[str, int] = {}
    by_op: dict[str, list[bool]] = {}
    for p, text in zip(problems, texts):
        steps = split_steps(text)
        answer = parse_answer(steps[-1]) if steps else None
        correct.setdefault(p.level, []).append(answer == p.answer)
        for k, g in enumerate(grade_steps(p.question, steps), 1):
            step_err.setdefault(p.level, []).append(not g.ok)
            by_index.setdefault(k, []).append(not g.ok)
            if not g.ok:
                kinds[g.kind] = kinds.get(g.kind, 0) + 1
            parsed = parse_step(steps[k - 1])
            if parsed is not None and g.kind in ("ok", "arith"):
                by_op.setdefault(parsed[1], []).append(g.kind == "arith")

    def mean(xs: Sequence[bool]) -> float:
        return round(sum(xs) / max(1, len(xs)), 4)

    flat = [x for xs in correct.values() for x in xs]
    flat_err = [x for xs in step_err.values() for x in xs]
    return EvalResult(
        accuracy=mean(flat),
        per_level_accuracy={lv: mean(xs) for lv, xs in sorted(correct.items())},
        step_error_rate=mean(flat_err),
        per_level_step_error_rate={lv: mean(xs) for lv, xs in sorted(step_err.items())},
        per_step_index_error_rate={k: mean(xs) for k, xs in sorted(by_index.items())},
        error_kinds=dict(sorted(kinds.items())),
        arith_error_rate_by_op={op: mean(xs) for op, xs in sorted(by_op.items())},
        n=len(flat),
    )


def evaluate(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, n: int = 500, *, greedy: bool = True, seed: int = 0) -> EvalResult:
    problems = test_split(n)
    texts = generate_solutions(model, tokenizer, [p.question for p in problems], greedy=greedy, seed=seed)
    return score(problems, texts)


# ---------------------------------------------------------------- training

def train(cfg: TrainConfig, work_dir: Path, resume: bool) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, dict]:
    torch.set_num_threads(cfg.threads)
    tokenizer = build_tokenizer()
    model = make_model(cfg.size, tokenizer, cfg.seed, cfg.init_scale)

    def curve_point(model: LlamaForCausalLM) -> tuple[dict, dict]:
        r = evaluate(model, tokenizer, 100)
        return {"acc": r.accuracy, "step_err": r.step_error_rate}, {"levels": r.per_level_accuracy}

    stats = fit(model, cfg, lambda step: batches(tokenizer, cfg.seed * 1000 + step, cfg.batch_size, cfg.levels),  # fresh data on resume
                work_dir, resume, curve_point, desc=f"train {cfg.size}")
    return model, tokenizer, stats


CurvePoint = Callable[[LlamaForCausalLM], tuple[dict, dict]]  # model -> (logged in the curve, only printed)


def fit(model: LlamaForCausalLM, cfg: TrainConfig, make_batches: Callable[[int], Iterator[Batch]], work_dir: Path, resume: bool,
        curve_point: CurvePoint | None = None, desc: str = "train") -> dict:
    """The training loop every built-in language model shares (policies, the revision model).

    AdamW with warmup + cosine over max(fraction of ``cfg.minutes``, fraction of ``cfg.max_steps``),
    so a run stopped by either budget ends at a decayed LR; ``make_batches(step)`` starts the data
    at an update count (a resumed run gets fresh data); every ``cfg.eval_every_s`` the curve gets
    ``curve_point(model)``; the model, optimizer and curve are saved to ``work_dir`` every
    ``cfg.checkpoint_every_s`` so ``resume`` loses little. Returns the run's statistics.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    state_path = work_dir / "train_state.pt"
    step, elapsed, tokens, curve = 0, 0.0, 0, []
    if resume and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed, tokens, curve = st["step"], st["elapsed"], st["tokens"], st.get("curve", [])
        print(f"resumed at step {step} ({elapsed / 60:.1f} min done)")
    data = make_batches(step)
    budget = cfg.minutes * 60
    model.train()
    t0, last_ckpt, last_eval, ema = time.time() - elapsed, time.time(), time.time(), None
    bar = tqdm(total=int(budget), unit="s", desc=desc, initial=int(elapsed), mininterval=5)
    while (elapsed := time.time() - t0) < budget and step < (cfg.max_steps or math.inf):
        ids, mask, labels = next(data)
        frac = max(elapsed / budget, step / cfg.max_steps if cfg.max_steps else 0.0)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step, frac)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += int(mask.sum())
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.update(int(elapsed) - bar.n)
        bar.set_postfix(step=step, loss=f"{ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}", refresh=False)
        if cfg.eval_every_s and curve_point is not None and time.time() - last_eval > cfg.eval_every_s:
            logged, shown = curve_point(model)
            curve.append({"step": step, "minutes": round(elapsed / 60, 2), "loss": round(ema, 4), **logged})
            tqdm.write(json.dumps(curve[-1] | shown))
            model.train()
            last_eval = time.time()
        if time.time() - last_ckpt > cfg.checkpoint_every_s:
            work_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed, "tokens": tokens, "curve": curve}, state_path)
            last_ckpt = time.time()
    bar.close()
    return {"curve": curve, "steps": step, "train_seconds": round(elapsed, 1), "train_tokens": tokens, "final_loss_ema": round(ema or float("nan"), 4)}


def discard_state(work_dir: Path) -> None:
    """A finished run's saved model supersedes its resumable training state."""
    if (work_dir / "train_state.pt").exists():
        os.remove(work_dir / "train_state.pt")


def model_card(metrics: dict) -> str:
    """The checkpoint's README, rendered from its metrics.json (so cards can be re-rendered)."""
    cfg, g, smp = metrics["config"], metrics["greedy"], metrics["sampled_t1"]
    s = SIZES[cfg["size"]]
    rows = "\n".join(
        f"| {k} | {LEVELS[int(k)].n_ops + 1} | {g['per_level_accuracy'][k]:.3f} | {g['per_level_step_error_rate'][k]:.3f} "
        f"| {smp['per_level_accuracy'][k]:.3f} | {smp['per_level_step_error_rate'][k]:.3f} |"
        for k in g["per_level_accuracy"]
    )
    curve = "\n".join(f"| {c['step']} | {c['minutes']} | {c['loss']} | {c['acc']:.2f} | {c['step_err']:.3f} |" for c in metrics.get("curve", []))
    stopped = "step budget" if cfg.get("max_steps") and metrics["steps"] >= cfg["max_steps"] else "time budget"
    return f"""# {metrics.get('name', 'policy-' + cfg['size'])} (built-in arithmetic task)

LlamaForCausalLM, {s.layers} layers, hidden {s.hidden}, {s.heads} heads, MLP {s.intermediate},
tied embeddings, char-level tokenizer (vocab 100), fp32 safetensors.
**Non-embedding parameters: {metrics['non_embedding_params']:,}.**

Trained from scratch on CPU ({cfg['threads']} torch thread, CPU shared with other jobs) on
`treesearch.builtin.task` train problems (levels 1-5 uniform, fresh problems every batch,
loss on solution tokens only): {metrics['steps']} updates of batch {cfg['batch_size']}
({metrics['train_tokens']:,} tokens) in {metrics['train_seconds'] / 60:.1f} min wall time (stopped by the
{stopped}; the time includes the periodic 100-problem evaluations below). AdamW peak lr
{cfg['lr']}, weight decay {cfg['weight_decay']}, warmup {cfg['warmup_steps']} steps then cosine to
{cfg['min_lr_frac']}x over max(fraction of --minutes, fraction of --max-steps); init std
{cfg['init_scale']}/sqrt(hidden); seed {cfg['seed']}. Final training loss (EMA): {metrics['final_loss_ema']}.

    {metrics.get('command', '')}
{chr(10) + metrics['note'] + chr(10) if metrics.get('note') else ''}
## Measured on the fixed test split (`task.test_split({g['n']})`, 100 per level)

Greedy accuracy **{g['accuracy']:.3f}**, step error rate {g['step_error_rate']:.3f}.
Temperature 1.0 single-sample accuracy **{smp['accuracy']:.3f}**, step error rate {smp['step_error_rate']:.3f}.

| level | steps | greedy acc | greedy step err | T=1 acc | T=1 step err |
|---|---|---|---|---|---|
{rows}

A step's error is judged locally (`task.grade_steps`): right running value, the next
instruction, correct arithmetic. Greedy step error rate by step position:
{g['per_step_index_error_rate']}. Greedy error kinds: {g['error_kinds']}.
Arithmetic error rate per operation (steps with the right operands): greedy
{g['arith_error_rate_by_op']}, T=1 {smp['arith_error_rate_by_op']}.

## Learning curve (greedy, first 100 test problems)

| update | minutes | train loss | acc | step err |
|---|---|---|---|---|
{curve}

Prompt: `<bos>` + question + `"\\n"`; the model writes "Step k: a op b = c" lines and
"The answer is X", each ending in "\\n", then `<eos>`.
"""


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path, card: str, metrics: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    portable_tokenizer_files(out)
    write_card(out, card, metrics)


def write_card(out: Path, card: str, metrics: dict) -> None:
    """A checkpoint's model card and the metrics.json it is rendered from."""
    (out / "README.md").write_text(card)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--max-steps", type=int, default=None, help="also stop after this many optimizer steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, default=None, help="training state for --resume (default runs/builtin/policy-SIZE)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--lr", type=float, default=None, help="peak LR (default: per size)")
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--threads", type=int, default=TrainConfig.threads)
    ap.add_argument("--eval-n", type=int, default=TrainConfig.eval_n)
    ap.add_argument("--warmup-steps", type=int, default=TrainConfig.warmup_steps)
    ap.add_argument("--init-scale", type=float, default=TrainConfig.init_scale)
    ap.add_argument("--eval-every-s", type=float, default=0.0)
    args = ap.parse_args(argv)
    cfg = TrainConfig(size=args.size, minutes=args.minutes, max_steps=args.max_steps, seed=args.seed, lr=args.lr or SIZES[args.size].lr, batch_size=args.batch_size, threads=args.threads, eval_n=args.eval_n, warmup_steps=args.warmup_steps, init_scale=args.init_scale, eval_every_s=args.eval_every_s)
    work_dir = args.work_dir or Path("runs/builtin") / f"policy-{args.size}"
    command = "python -m experiments.builtin.train_policy " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    model, tokenizer, stats = train(cfg, work_dir, args.resume)
    n_params = non_embedding_parameters(model)
    t = time.time()
    greedy = evaluate(model, tokenizer, cfg.eval_n, greedy=True)
    sampled = evaluate(model, tokenizer, cfg.eval_n, greedy=False, seed=cfg.seed)
    stats["eval_seconds"] = round(time.time() - t, 1)
    metrics = {"command": command, "config": asdict(cfg), "non_embedding_params": n_params, **stats, "greedy": asdict(greedy), "sampled_t1": asdict(sampled)}
    metrics = json.loads(json.dumps(metrics))  # the on-disk form (string keys), which the card reads
    print(json.dumps(metrics, indent=2))
    save(model, tokenizer, args.out, model_card(metrics), metrics)
    discard_state(work_dir)


if __name__ == "__main__":
    main()
