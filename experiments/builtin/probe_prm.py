"""Does the PRM see an arithmetic error? Score gold step k against the same step with its result
changed, on test problems, and count how often the right step scores higher (0.5 = blind).

    python -m experiments.builtin.probe_prm                      # the committed PRM
    python -m experiments.builtin.probe_prm --type value_head --prm DIR --problems 100

Step-level AUC on policy rollouts mixes two things: which problems are hard (their steps all
get low Monte-Carlo labels) and which steps are wrong. This probe holds the problem and the
prefix fixed, so only the second one counts.
"""
from __future__ import annotations

import argparse

from reward_models import Chain, load_prm

from treesearch.builtin.task import test_split

CHECKPOINT = "experiments/builtin/checkpoints/prm"
CHECKPOINT_TYPE = "likelihood"


def off_by(step: str, delta: int) -> str:
    """``Step k: a op b = c`` with c replaced by c + delta."""
    head, _, value = step.rstrip("\n").rpartition("= ")
    return f"{head}= {int(value) + delta}\n"


def probe(prm, problems, step: int, delta: int) -> tuple[float, float, float]:
    """(share of problems where the right step outscores the wrong one, mean right, mean wrong)."""
    right = [Chain(p.question, tuple(p.solution_steps[:step + 1])) for p in problems]
    wrong = [Chain(p.question, tuple(p.solution_steps[:step]) + (off_by(p.solution_steps[step], delta),))
             for p in problems]
    scores = [s.scores[-1] for s in prm.score(right + wrong)]
    r, w = scores[:len(right)], scores[len(right):]
    return sum(a > b for a, b in zip(r, w)) / len(r), sum(r) / len(r), sum(w) / len(w)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prm", default=CHECKPOINT, help="a PRM checkpoint directory")
    ap.add_argument("--type", default=CHECKPOINT_TYPE, help="its reward_models registry name")
    ap.add_argument("--problems", type=int, default=100, help="first test problems with >= 3 steps")
    args = ap.parse_args(argv)
    prm = load_prm(args.type, path=args.prm)
    problems = [p for p in test_split(500) if len(p.solution_steps) >= 4][:args.problems]
    print(f"{len(problems)} test problems; PRM {args.prm}")
    print(f"{'step':>4} {'error':>6} {'right > wrong':>14} {'mean right':>11} {'mean wrong':>11}")
    for step in (0, 1, 2):
        for delta in (1, -7, 10, 100):
            share, r, w = probe(prm, problems, step, delta)
            print(f"{step + 1:>4} {delta:>+6} {share:>14.0%} {r:>11.3f} {w:>11.3f}")


if __name__ == "__main__":
    main()
