"""Grader agreement per kind and speed per pair on the labelled set, ours beside Math-Verify.

    python benchmarks/grading.py            # Math-Verify's column only where math-verify is installed

Each pair is graded once in a fresh process state (no verdict cached before it); the time per pair
includes extraction for prose rows and any symbolic check in the worker (whose start-up is
excluded: it is started before timing).
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.grading import extract_answer, grade, math_verify  # noqa: E402

PAIRS = Path(__file__).resolve().parents[1] / "tests" / "data" / "grading_pairs.jsonl"


def run(grader, rows):
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # agreed, pairs, wrong acceptances
    start = time.perf_counter()
    for r in rows:
        pred = extract_answer(r["pred"]) if r.get("prose") else r["pred"]
        verdict = grader(pred, r["gold"])
        tally = per_kind[r.get("kind") or r["source"].split(":")[0]]
        tally[0] += verdict == r["equal"]
        tally[1] += 1
        tally[2] += verdict and not r["equal"]
    return per_kind, (time.perf_counter() - start) / len(rows)


def main() -> None:
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    grade("(x+1)^2", "x^2+2x+1")  # start the symbolic worker outside the timed part
    from experiments.grading import worker
    worker._VERDICTS.clear()
    graders = {"ours": grade}
    if math_verify.available():
        graders["math_verify"] = math_verify.grade
    results = {name: run(g, rows) for name, g in graders.items()}
    kinds = sorted(results["ours"][0])
    print(f"{'kind':>20} {'pairs':>5} " + " ".join(f"{n + ' agree':>17} {'wrong acc.':>10}" for n in graders))
    for kind in kinds + ["all"]:
        cells = []
        for name in graders:
            t = results[name][0]
            agreed, n, wrong = (sum(v[i] for v in t.values()) for i in range(3)) if kind == "all" else t[kind]
            cells.append(f"{agreed:>9}/{n:<3} {agreed / n:6.1%} {wrong:>10}")
        n = sum(v[1] for v in results["ours"][0].values()) if kind == "all" else results["ours"][0][kind][1]
        print(f"{kind:>20} {n:>5} " + " ".join(cells))
    print()
    for name in graders:
        print(f"{name}: {results[name][1] * 1e3:.3f} ms per pair")
    if "math_verify" in graders:
        print(f"time ratio math_verify / ours: {results['math_verify'][1] / results['ours'][1]:.1f}x")
    from experiments.grading.kinds import agreement, format_agreement, load_cases

    print("\nours on the hand-written cases per kind (tests/data/grading_kinds.jsonl, each under its policy):")
    print(format_agreement(agreement(load_cases())))


if __name__ == "__main__":
    main()
