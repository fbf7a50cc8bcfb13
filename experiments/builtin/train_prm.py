"""Train the built-in task's PRM on steps the built-in policies themselves sampled, on CPU.

    python -m experiments.builtin.train_prm                          # the committed PRM (likelihood head, exact labels)
    python -m experiments.builtin.train_prm --head value --labels mc --init-from large --out runs/prm-mc

Two label sources, as in the literature:

* ``--labels exact`` (PRM800K's human labels, here the task's checker): each step of each
  sampled solution is labelled "right so far" (``task.on_gold_path``), so the labels
  carry the policies' real errors.
* ``--labels mc`` (Math-Shepherd): from every step, ``--k-rollouts`` completions; the label
  is the share that reach the gold answer.

Two heads:

* ``--head likelihood`` (default): the step's token log-probabilities under a language
  model stronger than the policies (``--init-from xl``, kept frozen) through a 3-parameter
  logistic head, chained along the steps (``reward_models.likelihood``).
* ``--head value``: a linear value head on the LM's hidden state at each step's end,
  trained with the backbone (``reward_models.train_value_head``).

The card reports what a search needs of a verifier: on sibling steps the policies sample
from one test prefix, how often the right step outscores the wrong one (per policy), the
step AUC, and answer selection over sampled solutions.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shlex
import sys
import time
from pathlib import Path

import torch

from reward_models import LabelledChain, SampledSolution, monte_carlo_labels, score_solutions, selection_accuracy, \
    step_auc, train_value_head
from reward_models.likelihood import CHAINS, LikelihoodHead, LikelihoodPRM
from reward_models.training import fit_likelihood_head
from treesearch.algorithms import Sampling
from treesearch.builtin.task import on_gold_path, test_split, train_split
from treesearch.builtin.tokenizer import build_tokenizer, portable_tokenizer_files
from treesearch.runner import Runner

from .models import CHECKPOINTS, LIMITS, POLICIES, PRM_DIR, load_policy, policy_dir
from .siblings import eval_problems, format_rows, sample_groups, verifier_rows

REPO = Path(__file__).resolve().parents[2]


def _shown(path: str | Path) -> str:
    """A path as the card shows it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def exact(answer: str | None, gold: str) -> bool:
    return answer is not None and answer.strip() == gold.strip()


def lm_dir(name: str) -> Path:
    """A built-in LM by size name (policies, or "xl", the verifier's LM), else a path."""
    if name in POLICIES:
        return policy_dir(name)
    if (CHECKPOINTS / f"lm-{name}").is_dir():
        return CHECKPOINTS / f"lm-{name}"
    return Path(name)


def exact_labels(policy, problems, n_solutions: int, seed: int) -> list[LabelledChain]:
    """Sampled solutions, each step labelled by the checker: is the solution right up to here?"""
    results = Runner(policy, None, LIMITS, progress=False).run([p.question for p in problems],
                                                               Sampling(n=n_solutions), seed=seed)
    return [LabelledChain(p.question, c.steps, tuple(float(v) for v in on_gold_path(p.question, c.steps)))
            for p, r in zip(problems, results) for c in r.candidates if c.steps]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.builtin.train_prm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", choices=("likelihood", "value"), default="likelihood")
    ap.add_argument("--labels", choices=("exact", "mc"), default="exact")
    ap.add_argument("--policies", default=",".join(POLICIES), help="policies whose samples make the labels")
    ap.add_argument("--problems", type=int, default=200, help="training problems per policy")
    ap.add_argument("--n-solutions", type=int, default=4, help="sampled solutions per training problem")
    ap.add_argument("--k-rollouts", type=int, default=4, help="completions per step (--labels mc)")
    ap.add_argument("--init-from", default="xl",
                    help="the LM: a built-in size (small, large, xl) or a checkpoint directory")
    ap.add_argument("--chain", choices=CHAINS, default="prod", help="likelihood head: how step verdicts chain")
    ap.add_argument("--epochs", type=int, default=4, help="value head")
    ap.add_argument("--lr", type=float, default=2e-3, help="value head")
    ap.add_argument("--eval-problems", type=int, default=100, help="test problems for sibling pairs and voting")
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(PRM_DIR))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    names = [n for n in args.policies.split(",") if n]
    lm = lm_dir(args.init_from)

    # 1. Labelled chains from each policy's own samples on training problems (disjoint from the test split).
    train = train_split(args.problems * len(names), seed=args.seed + 101)
    chains: list[LabelledChain] = []
    for i, name in enumerate(names):
        part = train[i * args.problems:(i + 1) * args.problems]
        if args.labels == "exact":
            chains += exact_labels(load_policy(name), part, args.n_solutions, seed=args.seed + i)
        else:
            chains += monte_carlo_labels(load_policy(name), part, args.n_solutions, args.k_rollouts, exact,
                                         limits=LIMITS, seed=args.seed + i)
    label_seconds = time.time() - t0
    random.Random(args.seed).shuffle(chains)
    n_val = max(1, len(chains) // 10)
    val, fit = chains[:n_val], chains[n_val:]
    steps = sum(len(c.labels) for c in chains)
    print(f"{len(chains)} labelled chains, {steps} steps ({label_seconds:.0f} s); mean label "
          f"{sum(sum(c.labels) for c in chains) / steps:.3f}")

    # 2. The head.
    t1 = time.time()
    if args.head == "likelihood":
        prm = LikelihoodPRM(str(lm), head=LikelihoodHead(chain=args.chain), device="cpu")
        prm.likelihood_head = fit_likelihood_head(prm, fit, chain=args.chain)
        prm = LikelihoodPRM(str(lm), head=prm.likelihood_head, device="cpu")  # fresh score cache
        prm.save(args.out)
        portable_tokenizer_files(args.out)
    else:
        prm = train_value_head(str(lm), fit, build_tokenizer(), epochs=args.epochs, lr=args.lr, batch_size=32,
                               warmup_steps=20, seed=args.seed, output_dir=args.out)
    train_seconds = time.time() - t1
    auc_val = step_auc(prm, val)

    # 3. Test problems: sibling pairs per policy, and answer selection over sampled solutions.
    problems = eval_problems(args.eval_problems)
    groups = {n: sample_groups(load_policy(n), problems, seed=args.seed + 999) for n in names}
    rows = verifier_rows(prm, groups)
    print(format_rows(rows))
    test = test_split(args.eval_problems)
    voting = {}
    for name in names:
        res = Runner(load_policy(name), None, LIMITS, progress=False).run(
            [p.question for p in test], Sampling(n=args.eval_samples), seed=args.seed + 7)
        sols = [[SampledSolution(p.question, c.steps, c.answer, exact(c.answer, p.answer)) for c in r.candidates]
                for p, r in zip(test, res)]
        scored = score_solutions(prm, sols)
        voting[name] = {agg: selection_accuracy(scored, agg=agg) for agg in ("last", "min")}
    metrics = {"head": args.head, "labels": args.labels, "lm": _shown(lm), "labelled_chains": len(chains),
               "labelled_steps": steps, "label_seconds": round(label_seconds, 1),
               "train_seconds": round(train_seconds, 1), "step_auc_validation": round(auc_val, 4),
               "siblings": [dataclasses.asdict(r) for r in rows], f"voting_at_{args.eval_samples}": voting,
               "non_embedding_parameters": prm.num_parameters, "total_seconds": round(time.time() - t0, 1),
               "args": {**vars(args), "out": _shown(args.out)}}
    if args.head == "likelihood":
        metrics["likelihood_head"] = dataclasses.asdict(prm.likelihood_head)
    Path(args.out, "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_card(Path(args.out), metrics, argv if argv is not None else sys.argv[1:])
    print(json.dumps({k: v for k, v in metrics.items() if k != "siblings"}, indent=2))


def write_card(out: Path, m: dict, argv: list[str]) -> None:
    n = m["args"]["eval_samples"]
    prm_type = "likelihood" if m["head"] == "likelihood" else "value_head"
    sib = "\n".join(f"| {r['policy']} | {r['groups']} | {r['pairs']} | {r['pairwise']:.3f} | {r['auc']:.3f} |"
                    for r in m["siblings"] if r["depth"] == 0)
    depth = "\n".join(f"| {r['policy']} | {r['depth']} | {r['pairs']} | {r['pairwise']:.3f} | {r['auc']:.3f} |"
                      for r in m["siblings"] if r["depth"] > 0)
    vote = "\n".join(f"| {name} | {agg} | {v['majority']:.3f} | {v['best_of_n']:.3f} | {v['weighted']:.3f} | "
                     f"{v['pass_at_n']:.3f} |" for name, by in m[f"voting_at_{n}"].items() for agg, v in by.items())
    if m["head"] == "likelihood":
        h = m["likelihood_head"]
        what = (f"The language model `{m['args']['init_from']}` ({m['non_embedding_parameters']:,} non-embedding "
                f"parameters, frozen) reads each step; a logistic head on the mean and the minimum of the step's "
                f"token log-probabilities gives P(step right) = sigmoid({h['weight'][0]:.3f}·mean + "
                f"{h['weight'][1]:.3f}·min + {h['bias']:.3f}), and the step score is its running "
                f"{'product' if h['chain'] == 'prod' else 'minimum' if h['chain'] == 'min' else 'value (not chained)'} "
                f"along the chain (P(right so far)). Load: `load_prm(\"likelihood\", path=...)`.")
    else:
        what = (f"A Llama backbone ({m['non_embedding_parameters']:,} non-embedding parameters, initialised from "
                f"`{m['args']['init_from']}`) with a linear value head; the score of a step is the sigmoid of the head "
                f"at the step's last token. Load: `load_prm(\"value_head\", path=...)`.")
    labels = ("exact: the task's checker labels each step of each sampled solution right-so-far or not"
              if m["labels"] == "exact" else
              f"Math-Shepherd: {m['args']['k_rollouts']} rollouts from every step, soft label = share reaching the gold answer")
    out.joinpath("README.md").write_text(f"""# Built-in PRM ({m['head']} head, {m['labels']} labels)

{what}

    python -m experiments.builtin.train_prm {shlex.join(argv)}

- Labels ({labels}) on {m['labelled_chains']} chains ({m['labelled_steps']} steps): {m['args']['n_solutions']} sampled
  solutions per training problem, {m['args']['problems']} problems per policy ({m['args']['policies']}).
  Labelling took {m['label_seconds']} s, fitting {m['train_seconds']} s on a 2-core CPU; seed {m['args']['seed']}.
- Step AUC on held-out training chains: {m['step_auc_validation']}.

## Sibling steps on test problems (what REBASE and beam search decide)

From each of {m['args']['eval_problems']} test problems (levels 2-5) the policy samples 6 first steps, then 6 next
steps from up to 4 distinct right nodes per depth, 4 depths (`experiments/builtin/siblings.py`); a pair is a right
and a wrong child of the same parent. Same numbers: `treesearch eval-prm --prm {prm_type} --prm-path DIR`.

| policy | mixed parents | pairs | right > wrong | step AUC |
|---|---|---|---|---|
{sib}

| policy | depth | pairs | right > wrong | step AUC |
|---|---|---|---|---|
{depth}

## Answer selection over {n} samples per test problem ({m['args']['eval_problems']} problems)

| policy | aggregation | majority | best-of-{n} | weighted | pass@{n} |
|---|---|---|---|---|---|
{vote}
""")


if __name__ == "__main__":
    main()
