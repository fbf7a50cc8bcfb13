"""Train the built-in task's value-head PRM with the Math-Shepherd recipe, on CPU.

    python -m experiments.builtin.train_prm --out experiments/builtin/checkpoints/prm

Labels come from rollouts of the built-in policies themselves (``reward_models.monte_carlo_labels``:
n sampled solutions per training problem, k completions from every step, soft label = share
of completions that reach the gold answer); the PRM is a small Llama with a value head
(``reward_models.train_value_head``). Held-out problems give the step-level AUC and the
best-of-N / weighted-voting lift over majority voting, written to the model card.
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig

from reward_models import SampledSolution, monte_carlo_labels, score_solutions, selection_accuracy, step_auc, \
    train_value_head
from treesearch.algorithms import Sampling
from treesearch.policy_hf import TransformersPolicy
from treesearch.runner import Runner
from treesearch.step_format import StepFormat

from .demo import LIMITS
from .task import test_split, train_split
from .tokenizer import build_tokenizer

CHECKPOINTS = Path(__file__).parent / "checkpoints"


def load_policy(name: str, temperature: float = 1.0) -> TransformersPolicy:
    return TransformersPolicy.from_pretrained(str(CHECKPOINTS / f"policy-{name}"), step_format=StepFormat.preset("newline"),
                                              temperature=temperature, max_step_tokens=LIMITS.max_step_tokens,
                                              max_batch_rows=512)


def exact(answer: str | None, gold: str) -> bool:
    return answer is not None and answer.strip() == gold.strip()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.builtin.train_prm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default="small,large", help="policies whose rollouts make the labels")
    ap.add_argument("--problems", type=int, default=400, help="training problems (per policy)")
    ap.add_argument("--n-solutions", type=int, default=4)
    ap.add_argument("--k-rollouts", type=int, default=4)
    ap.add_argument("--eval-problems", type=int, default=100, help="held-out test problems for AUC and voting")
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--init-from", default="large",
                    help="start the backbone from this built-in policy (it already reads arithmetic), "
                         "or 'scratch' for a random Llama of --layers x --hidden")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(CHECKPOINTS / "prm"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    names = [n for n in args.policies.split(",") if n]

    # 1. Monte-Carlo labels from each policy's rollouts on training problems (disjoint from the test split).
    train = train_split(args.problems * len(names), seed=args.seed + 101)
    chains = []
    for i, name in enumerate(names):
        part = train[i * args.problems:(i + 1) * args.problems]
        chains += monte_carlo_labels(load_policy(name), part, args.n_solutions, args.k_rollouts, exact,
                                     limits=LIMITS, seed=args.seed + i)
    label_seconds = time.time() - t0
    random.Random(args.seed).shuffle(chains)
    n_val = max(1, len(chains) // 10)
    val, fit = chains[:n_val], chains[n_val:]
    print(f"{len(chains)} labelled chains ({label_seconds:.0f} s); mean label "
          f"{sum(sum(c.labels) / len(c.labels) for c in chains) / len(chains):.3f}")

    # 2. A value head on a Llama backbone: a policy's (as Math-Shepherd and Wu et al. start the PRM
    #    from a pretrained LM) or a random one.
    tok = build_tokenizer()
    if args.init_from == "scratch":
        backbone = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                               num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                               max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    else:
        backbone = str(CHECKPOINTS / f"policy-{args.init_from}")
    t1 = time.time()
    prm = train_value_head(backbone, fit, tok, epochs=args.epochs, lr=args.lr, batch_size=32, warmup_steps=20,
                           seed=args.seed, output_dir=args.out)
    train_seconds = time.time() - t1
    auc_val = step_auc(prm, val)

    # 3. Held-out test problems: step AUC on fresh rollouts, and voting with the PRM.
    test = test_split(args.eval_problems)
    eval_chains = monte_carlo_labels(load_policy(names[0]), test, 2, args.k_rollouts, exact, limits=LIMITS,
                                     seed=args.seed + 999, progress=False)
    auc_test = step_auc(prm, eval_chains)
    voting = {}
    for name in names:
        res = Runner(load_policy(name), None, LIMITS, progress=False).run(
            [p.question for p in test], Sampling(n=args.eval_samples), seed=args.seed + 7)
        sols = [[SampledSolution(p.question, c.steps, c.answer, exact(c.answer, p.answer)) for c in r.candidates]
                for p, r in zip(test, res)]
        voting[name] = selection_accuracy(score_solutions(prm, sols), agg="last")
    metrics = {"labelled_chains": len(chains), "label_seconds": round(label_seconds, 1),
               "train_seconds": round(train_seconds, 1), "step_auc_validation": round(auc_val, 4),
               "step_auc_test": round(auc_test, 4), f"voting_at_{args.eval_samples}": voting,
               "non_embedding_parameters": prm.num_parameters, "args": vars(args)}
    Path(args.out, "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_card(Path(args.out), metrics, argv if argv is not None else sys.argv[1:])
    print(json.dumps(metrics, indent=2))


def write_card(out: Path, m: dict, argv: list[str]) -> None:
    n = m["args"]["eval_samples"]
    rows = "\n".join(f"| {name} | {v['majority']:.3f} | {v['best_of_n']:.3f} | {v['weighted']:.3f} | {v['pass_at_n']:.3f} |"
                     for name, v in m[f"voting_at_{n}"].items())
    out.joinpath("README.md").write_text(f"""# Built-in value-head PRM

A Llama backbone ({m['non_embedding_parameters']:,} non-embedding parameters; initialised from
{"a random " + str(m['args']['layers']) + "-layer, " + str(m['args']['hidden']) + "-wide Llama" if m['args']['init_from'] == "scratch" else "the built-in policy-" + m['args']['init_from']}) with a linear value head; the score of a step is the sigmoid of the head
at the step's last token. Trained with the Math-Shepherd recipe on rollouts of the built-in policies.

    python -m experiments.builtin.train_prm {shlex.join(argv)}

- Data: {m['labelled_chains']} labelled chains from policies {m['args']['policies']}: {m['args']['n_solutions']} sampled
  solutions per training problem ({m['args']['problems']} per policy), {m['args']['k_rollouts']} rollouts from every step,
  soft labels (share of rollouts reaching the gold answer). Labelling took {m['label_seconds']} s, training
  {m['train_seconds']} s on a 2-core CPU; seed {m['args']['seed']}.
- Step-level AUC (label >= 0.5 as positive): {m['step_auc_validation']} on held-out training chains,
  {m['step_auc_test']} on fresh rollouts of {m['args']['eval_problems']} test problems.
- Answer selection over {n} samples per test problem ({m['args']['eval_problems']} problems, last-step score):

| policy | majority | best-of-{n} | weighted | pass@{n} |
|---|---|---|---|---|
{rows}
""")


if __name__ == "__main__":
    main()
