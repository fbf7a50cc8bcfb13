"""Train the built-in revision model: policy-small fine-tuned to revise its own wrong attempts, on CPU.

    python -m experiments.builtin.train_revision --minutes 24      # the committed checkpoints/revision-small

Sequential revisions (Snell et al. 2024, ``treesearch.algorithms.Revisions``) need a model that, shown
a question and its earlier attempts, writes a better one. As Snell et al. did, the data are the
policy's own attempts: policy-small samples ``--samples`` attempts (temperature 1.0) per *training*
problem, the task's checker grades each, and every problem gives one example per history size
h = 0..min(4, its wrong attempts): the context is the revision prompt over h of its WRONG attempts
(a random subset, oldest first, laid out by ``PromptFormat.revision_text`` exactly as a search
lays it out), the target a RIGHT solution. Snell paired a wrong attempt with the right one closest
in edit distance; here the target is the policy's right attempt closest (character edit distance)
to the last wrong attempt in context (with no history: its first right attempt), else, where the
policy never got the problem right, the task's gold solution. The 0-history examples keep the
first attempts good. Loss is on the target and ``<eos>`` only.

The model starts from policy-small's weights (same architecture; RoPE, so only
``max_position_embeddings`` grows to the longest sequence a history-4 revision can reach) and is
trained by ``train_policy.fit`` (warmup + cosine LR over the wall-clock or update budget,
resumable state under ``--work-dir``). The sampled attempts are saved there too, so ``--resume``
does not sample again. At the end it is evaluated on the test split against resampling (see
``evaluate``) and saved with a model card; ``--eval-only`` evaluates a saved one again and
re-renders its card.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from treesearch.algorithms import Revisions, Sampling
from treesearch.builtin.task import LEVELS, BuiltinProblem, check_solution, grade_steps, parse_answer, render, split_steps, test_split, train_split
from treesearch.builtin.tokenizer import build_tokenizer
from treesearch.ledger import non_embedding_parameters
from treesearch.runner import Runner, SearchLimits

from .models import LIMITS, PROMPT, REVISION_DIR, REVISION_PROMPT, builtin_policy, load_policy, policy_dir
from .train_policy import SIZES, TrainConfig, bucketed, discard_state, fit, save, write_card

MAX_HISTORY = 4  # wrong attempts a training context holds at most (Snell used up to 4)


# ---------------------------------------------------------------- data

@dataclass(frozen=True)
class Sampled:
    """A training problem and the policy's attempts at it (each its steps joined), in sampling order."""

    problem: BuiltinProblem
    attempts: tuple[str, ...]


@dataclass(frozen=True)
class RevisionExample:
    """One training sequence: the revision prompt over ``history`` (wrong attempts, oldest first), then ``target``."""

    question: str
    level: int
    history: tuple[str, ...]
    target: str
    source: str  # "policy": the policy's own right attempt; "gold": the task's solution (the policy never got it)


def verdict(problem: BuiltinProblem, attempt: str) -> str:
    """"right" (the checker passes every step and the answer), "wrong" (the final answer is not gold) or "unclear".

    Why three: an attempt that reaches the gold answer through a flawed step is neither a
    solution to imitate nor a wrong attempt to revise away from (its answer is right), so it is
    used for neither."""
    steps = split_steps(attempt)
    if check_solution(replace(problem, solution_steps=steps)):
        return "right"
    answer = parse_answer(steps[-1]) if steps else None
    return "unclear" if answer == problem.answer else "wrong"


def edit_distance(a: str, b: str) -> int:
    """Character Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def pick_target(right: Sequence[str], history: Sequence[str], gold: str) -> tuple[str, str]:
    """(target, source): the right attempt closest to the last one in context (ties: the earliest), else gold.

    Why the closest (Snell et al.): the revision should look like a correction of the attempt it
    follows, not an unrelated solution. With no history there is nothing to be close to: the
    first right attempt. Where the policy never got the problem right: the gold solution."""
    if not right:
        return gold, "gold"
    if not history:
        return right[0], "policy"
    return min(right, key=lambda r: edit_distance(r, history[-1])), "policy"


def build_examples(sampled: Sampled, rng: random.Random, max_history: int = MAX_HISTORY) -> list[RevisionExample]:
    """One example per history size 0..min(max_history, wrong attempts): only wrong attempts in context."""
    p = sampled.problem
    verdicts = [verdict(p, a) for a in sampled.attempts]
    wrong = [a for a, v in zip(sampled.attempts, verdicts) if v == "wrong"]
    right = [a for a, v in zip(sampled.attempts, verdicts) if v == "right"]
    out = []
    for h in range(min(max_history, len(wrong)) + 1):
        history = tuple(wrong[i] for i in sorted(rng.sample(range(len(wrong)), h)))  # oldest first
        target, source = pick_target(right, history, p.solution)
        out.append(RevisionExample(p.question, p.level, history, target, source))
    return out


def encode(tokenizer: PreTrainedTokenizerFast, ex: RevisionExample) -> tuple[list[int], int]:
    """Token ids of ``<bos> revision prompt target <eos>`` and where the target starts (the loss mask).

    The context is ``PROMPT.revision_ids``, the very ids a search's revision prompt gets
    (``TransformersPolicy.encode_revision``), so training and search see the same layout."""
    context = list(PROMPT.revision_ids(tokenizer, ex.question, ex.history))
    return context + tokenizer.encode(ex.target, add_special_tokens=False) + [tokenizer.eos_token_id], len(context)


def position_budget(limits: SearchLimits = LIMITS, history: int = MAX_HISTORY, revision: str = REVISION_PROMPT) -> int:
    """``max_position_embeddings`` for a history-``history`` revision, rounded up to 128.

    The longest sequence: ``<bos>``, the longest question and its newline, ``history`` attempts
    of at most ``limits.max_solution_tokens`` each followed by the request, the new attempt and
    ``<eos>`` (one token per character)."""
    question = max(len(render(s.max_start, [("*", s.max_factor)] * s.n_ops)[0]) for s in LEVELS.values())
    longest = 1 + question + 1 + history * (limits.max_solution_tokens + len(revision)) + limits.max_solution_tokens + 1
    return 128 * math.ceil(longest / 128)


def sample_attempts(policy, problems: Sequence[BuiltinProblem], n: int, seed: int) -> list[Sampled]:
    """``n`` independent attempts per problem from ``policy`` (its temperature), as a search samples them."""
    results = Runner(policy, None, LIMITS, progress=False).run([p.question for p in problems], Sampling(n=n), seed=seed)
    return [Sampled(p, tuple("".join(c.steps) for c in r.candidates)) for p, r in zip(problems, results)]


def save_sampled(path: Path, sampled: Sequence[Sampled], seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seconds": seconds, "problems": [{"problem": asdict(s.problem), "attempts": list(s.attempts)} for s in sampled]}))


def load_sampled(path: Path) -> tuple[list[Sampled], float]:
    d = json.loads(path.read_text())
    return [Sampled(BuiltinProblem(**s["problem"]), tuple(s["attempts"])) for s in d["problems"]], d["seconds"]


def data_summary(sampled: Sequence[Sampled], examples: Sequence[RevisionExample], encoded: Sequence[tuple[list[int], int]]) -> dict:
    """What the card says about the data: verdicts per level, examples per history size and where targets came from."""
    graded = [(s, [verdict(s.problem, a) for a in s.attempts]) for s in sampled]
    counts = Counter((s.problem.level, v) for s, vs in graded for v in vs)
    levels = sorted({s.problem.level for s in sampled})
    right = [(s, a) for s, vs in graded for a, v in zip(s.attempts, vs) if v == "right"]
    reached = Counter(s.problem.level for s, vs in graded if "right" in vs)
    per_level = Counter(s.problem.level for s in sampled)
    lengths = [len(ids) for ids, _ in encoded]
    return {
        "problems": len(sampled),
        "attempts": sum(len(s.attempts) for s in sampled),
        "verdicts_by_level": {lv: {v: counts[lv, v] for v in ("right", "wrong", "unclear")} for lv in levels},
        "problems_with_a_right_attempt_by_level": {lv: round(reached[lv] / per_level[lv], 4) for lv in levels},
        "policy_right_attempts": len(right),
        "right_attempts_differing_from_gold_text": sum(a != s.problem.solution for s, a in right),
        "examples": len(examples),
        "examples_by_history": dict(sorted(Counter(len(e.history) for e in examples).items())),
        "target_source": dict(Counter(e.source for e in examples)),
        "target_source_by_history": {h: dict(Counter(e.source for e in examples if len(e.history) == h)) for h in sorted({len(e.history) for e in examples})},
        "target_source_by_level": {lv: dict(Counter(e.source for e in examples if e.level == lv)) for lv in levels},
        "tokens_longest": max(lengths),
        "tokens_mean": round(sum(lengths) / len(lengths), 1),
    }


def epochs(encoded: Sequence[tuple[list[int], int]], rng: random.Random) -> Iterator[tuple[list[int], int]]:
    """Endless passes over a fixed example set, each in a fresh random order."""
    while True:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        yield from (encoded[i] for i in order)


# ---------------------------------------------------------------- evaluation

@dataclass
class ChainStats:
    """Accuracy of a chain's attempts by index, and how often an attempt reverses its predecessor's verdict.

    Transitions pool every consecutive pair (j, j+1) of every chain: ``right_after_wrong`` is
    P(attempt j+1 right | attempt j wrong), ``wrong_after_right`` P(attempt j+1 wrong | attempt j right)."""

    attempts: int
    chains: int
    problems: int
    history: int
    accuracy: list[float]
    accuracy_by_level: dict[int, list[float]]
    right_after_wrong: float | None
    wrong_after_right: float | None
    right_after_wrong_by_level: dict[int, float | None]
    wrong_after_right_by_level: dict[int, float | None]
    pairs_after_wrong: int
    pairs_after_right: int
    step_kinds: list[dict[str, int]]  # by attempt index: its steps' verdicts (task.grade_steps: ok, arith, copy, ...)
    per_problem: list[list[list[bool]]] = field(repr=False)  # [problem][chain][attempt] right?


def _rate(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def run_chains(policy, problems: Sequence[BuiltinProblem], attempts: int, chains: int, history: int, seed: int) -> ChainStats:
    """``chains`` chains of ``attempts`` per problem with ``Revisions`` (history 0: independent resamples), graded by answer.

    The first attempts depend only on the policy and the seed (the root is expanded alike
    whatever the history), so runs with the same seed share them: revised and resampled second
    attempts are then paired."""
    results = Runner(policy, None, LIMITS, progress=False).run([p.question for p in problems], Revisions(n=attempts * chains, chains=chains, history=history), seed=seed)
    per_problem, kinds = [], [Counter() for _ in range(attempts)]
    for p, r in zip(problems, results):
        by_chain: list[list[bool]] = [[] for _ in range(chains)]
        for c in r.candidates:  # chain by chain, each in attempt order
            kinds[len(by_chain[c.chain])].update(g.kind for g in grade_steps(p.question, c.steps))
            by_chain[c.chain].append(c.answer == p.answer)
        per_problem.append(by_chain)
    return chain_stats(problems, per_problem, history, [dict(sorted(k.items())) for k in kinds])


def chain_stats(problems: Sequence[BuiltinProblem], per_problem: list[list[list[bool]]], history: int,
                step_kinds: list[dict[str, int]] | None = None) -> ChainStats:
    """Accuracies and transition rates, overall and per level, from per-problem chain verdicts."""
    levels = sorted({p.level for p in problems})

    def summarize(idx: Sequence[int]) -> tuple[list[float], tuple[int, int, int, int]]:
        chains = [ch for i in idx for ch in per_problem[i]]
        length = len(chains[0]) if chains else 0
        acc = [round(sum(ch[j] for ch in chains) / len(chains), 4) for j in range(length)]
        pairs = [(a, b) for ch in chains for a, b in zip(ch, ch[1:])]
        after_wrong = [b for a, b in pairs if not a]
        after_right = [b for a, b in pairs if a]
        return acc, (sum(after_wrong), len(after_wrong), sum(not b for b in after_right), len(after_right))

    acc, (rw, nw, wr, nr) = summarize(range(len(problems)))
    by_level = {lv: summarize([i for i, p in enumerate(problems) if p.level == lv]) for lv in levels}
    return ChainStats(
        attempts=len(acc), chains=len(per_problem[0]) if per_problem else 0, problems=len(problems), history=history,
        accuracy=acc, accuracy_by_level={lv: a for lv, (a, _) in by_level.items()},
        right_after_wrong=_rate(rw, nw), wrong_after_right=_rate(wr, nr),
        right_after_wrong_by_level={lv: _rate(t[0], t[1]) for lv, (_, t) in by_level.items()},
        wrong_after_right_by_level={lv: _rate(t[2], t[3]) for lv, (_, t) in by_level.items()},
        pairs_after_wrong=nw, pairs_after_right=nr, step_kinds=step_kinds or [], per_problem=per_problem,
    )


def paired_gain(a: ChainStats, b: ChainStats, attempt: int = 1) -> dict:
    """Mean per-problem difference in attempt ``attempt``'s accuracy (a - b), with its standard error over problems."""
    diffs = [sum(x[attempt] for x in pa) / len(pa) - sum(y[attempt] for y in pb) / len(pb) for pa, pb in zip(a.per_problem, b.per_problem)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
    return {"mean": round(mean, 4), "se": round(math.sqrt(var / len(diffs)), 4)}


def evaluate(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, base_policy, n: int, chains: int, seed: int) -> dict:
    """Does revising beat resampling? On ``test_split(n)``, all at temperature 1.0, the same seed (shared first attempts):

    * revised: the revision model's first attempt (no history), then a revision of it (history 1);
    * resampled: the revision model's first attempt, then an independent second one (history 0);
    * policy_fresh: the same pair from the starting policy (policy-small's own resampling);
    * policy_revising: the starting policy given the revision prompt it was never trained on;
    * chain5: the revision model's chains of 5 attempts, each revising the last 4 (Snell's setting).
    """
    policy = builtin_policy(model, tokenizer)
    problems = test_split(n)
    out = {
        "revised": run_chains(policy, problems, 2, chains, 1, seed),
        "resampled": run_chains(policy, problems, 2, chains, 0, seed),
        "policy_fresh": run_chains(base_policy, problems, 2, chains, 0, seed),
        "policy_revising": run_chains(base_policy, problems, 2, chains, 1, seed),
        "chain5": run_chains(policy, problems, 5, max(1, chains // 2), MAX_HISTORY, seed),
    }
    gains = {"revised_minus_resampled": paired_gain(out["revised"], out["resampled"]),
             "revised_minus_policy_fresh": paired_gain(out["revised"], out["policy_fresh"])}
    return {k: {f: v for f, v in asdict(s).items() if f != "per_problem"} for k, s in out.items()} | {"paired_gains": gains, "n": n, "chains": chains, "seed": seed}


@torch.no_grad()
def target_loss(model: LlamaForCausalLM, encoded: Sequence[tuple[list[int], int]], pad_id: int, batch_size: int = 32) -> float:
    """Mean loss per target token (nats) of the examples, as training counts it."""
    model.eval()
    total, count = 0.0, 0
    for ids, mask, labels in bucketed(iter(encoded), batch_size, pad_id, random.Random(0)):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        gold = labels[:, 1:]
        total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=-100, reduction="sum"))
        count += int((gold != -100).sum())
    return total / max(1, count)


def history_probe(tokenizer: PreTrainedTokenizerFast, held_out: Sequence[RevisionExample]) -> tuple[list, list]:
    """Held-out examples with history, encoded with it and with it stripped (same targets).

    Why: the difference of the two losses says whether the model uses the wrong attempts in
    context to predict the right solution, free of the problem mix that history size implies."""
    with_h = [e for e in held_out if e.history]
    return [encode(tokenizer, e) for e in with_h], [encode(tokenizer, replace(e, history=())) for e in with_h]


# ---------------------------------------------------------------- training

@dataclass
class RevisionConfig:
    """A revision model's run: the data it samples, the model it starts from, how it is evaluated."""

    train: TrainConfig  # optimizer, budgets, threads, curve and checkpoint cadence: train_policy's
    init_from: str = "small"  # the built-in policy whose weights start the model and whose attempts are the data
    problems: int = 5000  # training problems sampled
    samples: int = 8  # attempts per problem (temperature 1.0)
    held_out: int = 100  # of those problems, kept out of training for the curve's validation losses
    data_seed: int = 0
    max_positions: int = field(default_factory=position_budget)
    eval_n: int = 500
    eval_chains: int = 4
    curve_n: int = 100  # test problems of the periodic revision check


def prepare_data(cfg: RevisionConfig, tokenizer: PreTrainedTokenizerFast, work_dir: Path, resume: bool) -> tuple[list, list[RevisionExample], dict, float]:
    """Sampled attempts (from ``work_dir`` on resume), the training encodings, held-out examples, data counts and sampling seconds."""
    path = work_dir / "attempts.json"
    if resume and path.exists():
        sampled, seconds = load_sampled(path)
        print(f"loaded {len(sampled)} sampled problems from {path}")
    else:
        t = time.time()
        problems = train_split(cfg.problems, seed=cfg.data_seed)
        sampled = sample_attempts(load_policy(cfg.init_from), problems, cfg.samples, seed=cfg.data_seed)
        seconds = round(time.time() - t, 1)
        save_sampled(path, sampled, seconds)
        print(f"sampled {cfg.samples} attempts for each of {len(sampled)} training problems in {seconds:.0f} s")
    train_sampled, held_sampled = sampled[: len(sampled) - cfg.held_out], sampled[len(sampled) - cfg.held_out :]
    rng = random.Random(cfg.data_seed)
    train_ex = [e for s in train_sampled for e in build_examples(s, rng)]
    held_ex = [e for s in held_sampled for e in build_examples(s, rng)]
    encoded = [encode(tokenizer, e) for e in train_ex]
    summary = data_summary(train_sampled, train_ex, encoded) | {"held_out_problems": len(held_sampled), "held_out_examples": len(held_ex)}
    if summary["tokens_longest"] > cfg.max_positions:
        raise ValueError(f"an example has {summary['tokens_longest']} tokens, more than max_positions {cfg.max_positions}")
    return encoded, held_ex, summary, seconds


def start_model(cfg: RevisionConfig) -> LlamaForCausalLM:
    """The starting policy's weights, with room for history-4 revisions (RoPE: no new parameters)."""
    return LlamaForCausalLM.from_pretrained(policy_dir(cfg.init_from), max_position_embeddings=cfg.max_positions)


def train(cfg: RevisionConfig, work_dir: Path, resume: bool) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, dict]:
    torch.set_num_threads(cfg.train.threads)
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = cfg.max_positions
    encoded, held_ex, summary, sample_seconds = prepare_data(cfg, tokenizer, work_dir, resume)
    with_history, without_history = history_probe(tokenizer, held_ex)
    model = start_model(cfg)
    curve_problems = test_split(cfg.curve_n)

    def curve_point(model: LlamaForCausalLM) -> tuple[dict, dict]:
        s = run_chains(builtin_policy(model, tokenizer), curve_problems, 2, cfg.eval_chains, 1, seed=cfg.train.seed + 1)
        return {"val_loss_history": round(target_loss(model, with_history, tokenizer.pad_token_id), 4),
                "val_loss_no_history": round(target_loss(model, without_history, tokenizer.pad_token_id), 4),
                "first_acc": s.accuracy[0], "revised_acc": s.accuracy[1],
                "right_after_wrong": s.right_after_wrong, "wrong_after_right": s.wrong_after_right}, {}

    start = {"step": 0, **curve_point(start_model(cfg))[0]}  # where the starting policy stands
    t = cfg.train
    stats = fit(model, t, lambda step: bucketed(epochs(encoded, random.Random(t.seed * 1000 + step)), t.batch_size, tokenizer.pad_token_id, random.Random(t.seed * 1000 + step)),
                work_dir, resume, curve_point, desc="train revision")
    return model, tokenizer, stats | {"sampling_seconds": sample_seconds, "data": summary, "curve_start": start}


# ---------------------------------------------------------------- card

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def model_card(m: dict) -> str:
    """The checkpoint's README, rendered from its metrics.json (so the card can be re-rendered)."""
    cfg, d, ev = m["config"], m["data"], m["eval"]
    t = cfg["train"]
    s = SIZES[t["size"]]
    r, rs, pf, pr, c5 = (ev[k] for k in ("revised", "resampled", "policy_fresh", "policy_revising", "chain5"))
    levels = list(r["accuracy_by_level"])

    def cells(lv: str) -> str:
        """One table row: accuracies, then P(right | prev wrong) and P(wrong | prev right), for level ``lv`` or "all"."""
        def get(stats: dict, key: str) -> object:
            return stats[key] if lv == "all" else stats[key + "_by_level"][lv]
        acc = [get(r, "accuracy")[0], get(r, "accuracy")[1], get(rs, "accuracy")[1], get(pf, "accuracy")[1], get(pr, "accuracy")[1]]
        flips = [get(x, k) for k in ("right_after_wrong", "wrong_after_right") for x in (r, rs, pf)]
        shown = [_pct(a) for a in acc + flips]
        shown[1] = f"**{shown[1]}**"
        return f"| {lv} | " + " | ".join(shown) + " |"

    main_rows = [cells(lv) for lv in levels + ["all"]]
    chain_rows = "\n".join(f"| {lv} | " + " | ".join(_pct(a) for a in c5["accuracy_by_level"][lv]) + " |" for lv in levels)
    chain_rows += "\n| all | " + " | ".join(_pct(a) for a in c5["accuracy"]) + " |"
    curve = "\n".join(f"| {c['step']} | {c.get('minutes', 0)} | {c.get('loss', '-')} | {c['val_loss_history']} | {c['val_loss_no_history']} "
                      f"| {c['first_acc']:.3f} | {c['revised_acc']:.3f} | {_pct(c['right_after_wrong'])} | {_pct(c['wrong_after_right'])} |"
                      for c in [m["curve_start"]] + m["curve"])
    g = ev["paired_gains"]
    ev_time = m["eval_seconds"]
    rerun = f"; evaluated again, after training, with `{m['eval_command']}`" if m.get("eval_command") else ""
    by_h = ", ".join(f"{h}: {n}" for h, n in d["examples_by_history"].items())
    src = d["target_source"]
    n_src = sum(src.values())
    src_h = "; ".join(f"h={h}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for h, c in d["target_source_by_history"].items())
    ver = "; ".join(f"L{lv}: {v['right']} right, {v['wrong']} wrong, {v['unclear']} unclear" for lv, v in d["verdicts_by_level"].items())
    reach = " ".join(f"L{lv} {x:.2f}" for lv, x in d["problems_with_a_right_attempt_by_level"].items())
    stopped = "step budget" if t.get("max_steps") and m["steps"] >= t["max_steps"] else "time budget"
    return f"""# revision-small (built-in arithmetic task): policy-small fine-tuned to revise its attempts

LlamaForCausalLM, {s.layers} layers, hidden {s.hidden}, {s.heads} heads, MLP {s.intermediate}, tied embeddings,
char-level tokenizer (vocab 100), fp32 safetensors: policy-small's architecture and
**{m['non_embedding_params']:,} non-embedding parameters**, started from its weights;
`max_position_embeddings` {cfg['max_positions']} (policy-small: 512; RoPE, so no new parameters): the longest
sequence a history-4 revision can reach under the built-in limits (4 attempts of at most
{m['limits']['max_solution_tokens']} tokens, each followed by the request, the question and the new attempt).

For sequential revisions (`treesearch.algorithms.Revisions`, Snell et al. 2024): the prompt is the
question, then each earlier attempt followed by the revision request **{json.dumps(m['revision_prompt'])}**
(`experiments.builtin.models.REVISION_PROMPT`; in a study config, the policy key `revision_prompt`),
then the new attempt. With no earlier attempt it is the ordinary prompt (`question + "\\n"`).
In a study config:

    policies:
      - name: builtin-revision
        path: experiments/builtin/checkpoints/revision-small
        step_format: newline
        revision_prompt: {json.dumps(m['revision_prompt'])}
    methods:
      - {{name: revisions, algorithm: revisions, params: {{chains: 2, history: 4}}, budgets: [4, 8, 16]}}

Trained with (wall times below):

    {m['command']}

## Data: the policy's own attempts on training problems

policy-{cfg['init_from']} sampled {cfg['samples']} attempts (temperature 1.0, the built-in search limits) for each of
{d['problems'] + d['held_out_problems']:,} `task.train_split` problems (levels 1-5 alike; never a test problem) in
{m['sampling_seconds']:.0f} s; {d['held_out_problems']} of the problems are held out for the validation losses below.
The task's checker graded each attempt: *right* = `task.check_solution` passes (every step and the
answer), *wrong* = the final answer is not the gold one, *unclear* = the gold answer through a flawed
step (used neither as a target nor in context). Training problems: {ver}.
Share of problems the policy got right at least once: {reach}.

Each problem gives one example per history size h = 0..min(4, its wrong attempts): the context is
the revision prompt over a random h of its wrong attempts, oldest first (`PromptFormat.revision_text`,
the layout a search uses), the target a right solution: the policy's right attempt closest in
character edit distance to the last wrong attempt in context (h = 0: its first right attempt), or the
task's gold solution where the policy never got the problem right. Loss on the target and `<eos>` only.

* {d['examples']:,} training examples; by history size: {by_h}.
* Targets: {src.get('policy', 0):,} from the policy's own right attempts ({src.get('policy', 0) / n_src:.1%}), {src.get('gold', 0):,}
  from the gold solution ({src.get('gold', 0) / n_src:.1%}); {src_h}.
* In this task a right solution is unique (the steps are fixed by the question): of the policy's
  {d['policy_right_attempts']:,} right attempts, {d['right_attempts_differing_from_gold_text']} differ from the gold solution's text (spacing or
  digit padding the checker accepts), so "closest by edit distance" and the gold fallback give
  the same text; they differ in where it came from.
* Sequence lengths: mean {d['tokens_mean']} tokens, longest {d['tokens_longest']}.

## Training

{m['steps']:,} updates of batch {t['batch_size']} (length-bucketed, {m['train_tokens']:,} tokens) in
{m['train_seconds'] / 60:.1f} min (stopped by the {stopped}; the periodic checks below included), after
{m['sampling_seconds'] / 60:.1f} min of sampling: **{m['total_train_seconds'] / 60:.1f} min wall time** in all, on the
shared 2-core CPU with {t['threads']} torch thread. AdamW peak lr {t['lr']}, weight decay {t['weight_decay']}, warmup
{t['warmup_steps']} updates then cosine to {t['min_lr_frac']}x (`train_policy.fit`); seed {t['seed']}. Final
training loss (EMA) {m['final_loss_ema']}.

Learning curve. Validation losses (nats per target token) on the held-out problems' examples with
history: with their history in context, and the same targets with the history stripped (the
difference is what the model takes from the wrong attempts). Then on the first {cfg['curve_n']} test
problems, {cfg['eval_chains']} chains each at temperature 1.0: first-attempt accuracy, accuracy of its
revision (history 1), P(right | previous wrong), P(wrong | previous right). Update 0 is policy-small.

| update | minutes | train loss | val loss, history | val loss, no history | first acc | revised acc | P(right \\| prev wrong) | P(wrong \\| prev right) |
|---|---|---|---|---|---|---|---|---|
{curve}

## Evaluation: does revising beat resampling?

`task.test_split({ev['n']})` ({ev['n'] // len(levels)} per level), {ev['chains']} chains per problem, temperature 1.0, seed {ev['seed']}, graded
by the final answer ({ev_time:.0f} s{rerun}). All runs use the same seed, so the first attempts of the revision model's
runs are the same samples, and its revised and resampled second attempts are paired.

* **first**: the revision model's first attempt (no history).
* **revised**: its revision of that attempt (history 1).
* **resampled**: an independent second attempt from the revision model (history 0).
* **policy-small fresh**: an independent sample from policy-small (the control: resampling
  the starting policy); its P(...) columns pair two independent policy-small samples.
* **policy-small revising**: policy-small given the same revision prompt (never trained on it).

| level | first | revised | resampled | policy-small fresh | policy-small revising | P(right \\| prev wrong): revised | resampled | policy-small | P(wrong \\| prev right): revised | resampled | policy-small |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(main_rows)}

Paired over problems (mean per-problem difference ± standard error): revised - resampled
{g['revised_minus_resampled']['mean']:+.3f} ± {g['revised_minus_resampled']['se']:.3f}; revised - policy-small fresh
{g['revised_minus_policy_fresh']['mean']:+.3f} ± {g['revised_minus_policy_fresh']['se']:.3f}.

Chains of 5 attempts (each revising the chain's last 4, Snell's setting), {c5['chains']} per problem:
accuracy by attempt index (pooled P(right | previous wrong) {_pct(c5['right_after_wrong'])}, P(wrong | previous
right) {_pct(c5['wrong_after_right'])}).

| level | 1 | 2 | 3 | 4 | 5 |
|---|---|---|---|---|---|
{chain_rows}

{verdict_text(m)}
"""


def _compared(x: dict, what: str) -> str:
    """A paired gain in words, by a rule fixed before any result: 2 standard errors."""
    if x["mean"] > 2 * x["se"]:
        return f"beat {what} by {x['mean']:+.3f} ± {x['se']:.3f}"
    if x["mean"] < -2 * x["se"]:
        return f"are worse than {what} by {x['mean']:+.3f} ± {x['se']:.3f}"
    return f"are not distinguishable from {what} ({x['mean']:+.3f} ± {x['se']:.3f})"


def verdict_text(m: dict) -> str:
    """What the numbers say, in words: every figure and every either/or below is computed from ``m``."""
    ev = m["eval"]
    g = ev["paired_gains"]
    r, rs, pf, c5 = ev["revised"], ev["resampled"], ev["policy_fresh"], ev["chain5"]
    revising_helps = g["revised_minus_resampled"]["mean"] > 2 * g["revised_minus_resampled"]["se"]
    first_gain = r["accuracy"][0] - pf["accuracy"][1]
    out = [f"**Verdict**: revised attempts {_compared(g['revised_minus_resampled'], 'an independent resample from the revision model itself')} "
           "(mean per-problem difference ± standard error)."]
    out.append(f"They {_compared(g['revised_minus_policy_fresh'], 'fresh policy-small samples')}, but "
               f"the revision model's first attempts, with no history, are already {first_gain:+.3f} above policy-small: "
               f"its {m['steps']:,} updates on right solutions made it a better policy, so "
               + ("part of that gain is revising." if revising_helps else "that gain is a better policy, not revising."))
    last = m["curve"][-1] if m["curve"] else None
    if last:
        better = last["val_loss_history"] < last["val_loss_no_history"]
        out.append(f"On held-out training problems the model predicts the right solution {'better' if better else 'worse'} with the "
                   f"wrong attempts in context than without them ({last['val_loss_history']} vs {last['val_loss_no_history']} nats per "
                   f"token at update {last['step']:,}; policy-small: {m['curve_start']['val_loss_history']} vs "
                   f"{m['curve_start']['val_loss_no_history']}): it {'uses' if better else 'has not learnt to use'} them.")
        first = m["curve"][0]
        out.append(f"That gap (history minus none) went from {first['val_loss_history'] - first['val_loss_no_history']:+.4f} at update "
                   f"{first['step']:,} to {last['val_loss_history'] - last['val_loss_no_history']:+.4f} at update {last['step']:,}.")
    if len(r["step_kinds"]) > 1 and len(rs["step_kinds"]) > 1:
        kr, ks = r["step_kinds"][1], rs["step_kinds"][1]
        out.append(f"Step errors of the second attempts (`task.grade_steps`), revised vs resampled: {kr.get('copy', 0)} vs "
                   f"{ks.get('copy', 0)} *copy* errors (a wrong running value, operation or operand: the bookkeeping the "
                   f"model does by looking things up in its context), {kr.get('arith', 0)} vs {ks.get('arith', 0)} arithmetic "
                   f"errors, {kr.get('format', 0)} vs {ks.get('format', 0)} format errors.")
    out.append(f"Along chains of 5 attempts accuracy goes from {c5['accuracy'][0]:.3f} (first) to {c5['accuracy'][-1]:.3f} (fifth).")
    return out[0] + "\n\n" + "\n".join(f"* {line}" for line in out[1:])


def add_evaluation(metrics: dict, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> dict:
    """``metrics`` (as on disk) with the test evaluation of ``model`` (``evaluate``) and its time added."""
    cfg = metrics["config"]
    t = time.time()
    ev = evaluate(model, tokenizer, load_policy(cfg["init_from"]), cfg["eval_n"], cfg["eval_chains"], seed=cfg["train"]["seed"] + 2)
    return json.loads(json.dumps(metrics | {"eval": ev, "eval_seconds": round(time.time() - t, 1)}))  # on-disk form: string keys


def reevaluate(out: Path, command: str) -> dict:
    """Evaluate a saved revision model again (e.g. after the evaluation gained a measurement) and re-render its card.

    The training statistics and the command that trained it are kept; the evaluation settings
    are the run's own (its metrics.json); ``eval_command`` records this call."""
    metrics = json.loads((out / "metrics.json").read_text())
    torch.set_num_threads(metrics["config"]["train"]["threads"])
    model = LlamaForCausalLM.from_pretrained(out)
    tokenizer = build_tokenizer()
    tokenizer.model_max_length = model.config.max_position_embeddings
    metrics = add_evaluation(metrics, model, tokenizer) | {"eval_command": command}
    metrics["verdict"] = verdict_text(metrics)
    write_card(out, model_card(metrics), metrics)
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.builtin.train_revision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=None, help="cap on the training loop's wall time (sampling not included); required unless --eval-only")
    ap.add_argument("--max-steps", type=int, default=None, help="also stop after this many optimizer steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REVISION_DIR)
    ap.add_argument("--work-dir", type=Path, default=Path("runs/builtin/revision-small"), help="training state and sampled attempts for --resume")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the model in --out again and re-render its card (no training)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--problems", type=int, default=RevisionConfig.problems)
    ap.add_argument("--samples", type=int, default=RevisionConfig.samples)
    ap.add_argument("--held-out", type=int, default=RevisionConfig.held_out)
    ap.add_argument("--eval-every-s", type=float, default=180.0, help="the learning curve's checks (each ~30 s on a shared CPU)")
    ap.add_argument("--eval-n", type=int, default=RevisionConfig.eval_n)
    ap.add_argument("--eval-chains", type=int, default=RevisionConfig.eval_chains)
    ap.add_argument("--curve-n", type=int, default=RevisionConfig.curve_n)
    ap.add_argument("--checkpoint-every-s", type=float, default=TrainConfig.checkpoint_every_s)
    args = ap.parse_args(argv)
    command = "python -m experiments.builtin.train_revision " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.eval_only:
        print(verdict_text(reevaluate(args.out, command)))
        return
    if args.minutes is None:
        ap.error("--minutes is required to train")
    t0 = time.time()
    train_cfg = TrainConfig(size="small", minutes=args.minutes, max_steps=args.max_steps, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                            warmup_steps=args.warmup_steps, threads=args.threads, eval_n=args.eval_n, eval_every_s=args.eval_every_s,
                            checkpoint_every_s=args.checkpoint_every_s)
    cfg = RevisionConfig(train=train_cfg, problems=args.problems, samples=args.samples, held_out=args.held_out, data_seed=args.seed,
                         eval_n=args.eval_n, eval_chains=args.eval_chains, curve_n=args.curve_n)

    model, tokenizer, stats = train(cfg, args.work_dir, args.resume)
    metrics = {"name": "revision-small", "command": command, "config": asdict(cfg), "revision_prompt": REVISION_PROMPT, "limits": asdict(LIMITS),
               "non_embedding_params": non_embedding_parameters(model), **stats,
               "total_train_seconds": round(stats["sampling_seconds"] + stats["train_seconds"], 1)}
    metrics = add_evaluation(json.loads(json.dumps(metrics)), model, tokenizer) | {"wall_seconds": round(time.time() - t0, 1)}
    metrics["verdict"] = verdict_text(metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "curve"}, indent=2))
    save(model, tokenizer, args.out, model_card(metrics), metrics)
    discard_state(args.work_dir)


if __name__ == "__main__":
    main()
