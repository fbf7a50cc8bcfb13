"""How far can search take a built-in policy? Greedy accuracy and pass@k of temperature-1 samples.

    python -m experiments.builtin.pass_at_k                 # both policies, 500 test problems, k up to 32

pass@k (some of the first k samples is right) bounds every voting rule and every verifier; a
policy whose pass@32 is far above its greedy accuracy makes mostly stochastic errors, which
search can fix, rather than capability walls, which it cannot.
"""
from __future__ import annotations

import argparse
import time

from treesearch.algorithms import Greedy, Sampling
from treesearch.builtin.task import test_split
from treesearch.runner import Runner

from .models import LIMITS, POLICIES, load_policy


def pass_at_k(name: str, n: int = 500, k: int = 32, seed: int = 1) -> dict:
    """Greedy accuracy, pass@1..k (powers of two) overall and pass@k per level, on the first n test problems."""
    policy = load_policy(name)
    problems = test_split(n)
    questions = [p.question for p in problems]
    greedy = Runner(policy, None, LIMITS, progress=False).run(questions, Greedy(), seed=seed)
    sampled = Runner(policy, None, LIMITS, progress=False).run(questions, Sampling(n=k), seed=seed)
    hits = [[c.answer == p.answer for c in r.candidates] for p, r in zip(problems, sampled)]
    ks = [2 ** i for i in range(k.bit_length()) if 2 ** i <= k]
    levels = sorted({p.level for p in problems})
    return {
        "policy": name, "problems": n, "num_parameters": policy.num_parameters,
        "greedy": sum(r.candidates[0].answer == p.answer for p, r in zip(problems, greedy)) / n,
        "pass_at": {j: sum(any(h[:j]) for h in hits) / n for j in ks},
        f"pass_at_{k}_by_level": {lv: sum(any(h) for h, p in zip(hits, problems) if p.level == lv)
                                  / sum(p.level == lv for p in problems) for lv in levels},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.builtin.pass_at_k", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("-k", type=int, default=32)
    args = ap.parse_args(argv)
    for name in args.policies.split(","):
        t = time.time()
        m = pass_at_k(name, args.problems, args.k)
        ks = "  ".join(f"pass@{j} {v:.3f}" for j, v in m["pass_at"].items())
        lv = " ".join(f"L{lv} {v:.2f}" for lv, v in m[f"pass_at_{args.k}_by_level"].items())
        print(f"{name} ({m['num_parameters']:,} params): greedy {m['greedy']:.3f}  {ks}\n"
              f"  pass@{args.k} by level: {lv}   ({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
