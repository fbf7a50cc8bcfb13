"""Grade a results directory with both graders and list where they disagree.

    python -m experiments.grading.crosscheck RESULTS_DIR [--show 50] [--json PATH]
    treesearch crosscheck RESULTS_DIR                      # the same

Every distinct (answer, gold) pair in the records (each candidate's answer and each vote's) is
graded by the project's grader and by Math-Verify (``experiments.grading.math_verify``; needs
``pip install "math-verify>=0.7"``). Prints how often they agree, the disagreeing pairs
(most frequent first), and per voting rule how many records' verdicts the other grader would flip,
so a difference between reported numbers can be told apart from a difference between graders.
Each pair is also sorted into a kind (``kinds.classify``: prose, numbers, relations, labelled,
other, by what the two strings contain) and the agreement is printed per kind, so a user sees where
the two graders part.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..records import Record
from . import grade as ours
from .kinds import classify

Grader = Callable[[str, str], bool]


@dataclass(frozen=True)
class Disagreement:
    answer: str
    gold: str
    ours: bool
    theirs: bool
    occurrences: int  # candidates and votes with this answer to this gold
    kind: str = "other"  # kinds.classify(answer, gold)


@dataclass
class Crosscheck:
    pairs: int  # distinct (answer, gold) pairs graded
    agreed: int
    disagreements: list[Disagreement]
    flipped_votes: dict[str, int]  # rule -> records whose verdict the other grader changes
    records: int
    per_kind: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (agreed, pairs)


def _answers(rec: Record) -> Iterable[str]:
    for c in rec.candidates:
        if c.answer is not None:
            yield c.answer
    for v in rec.votes.values():
        if v.answer is not None:
            yield v.answer


def crosscheck(records: Sequence[Record], theirs: Grader, mine: Grader = ours) -> Crosscheck:
    """Both graders' verdicts on every distinct (answer, gold) pair of ``records``."""
    counts = Counter((a, str(rec.gold)) for rec in records for a in _answers(rec))
    verdicts = {pair: (bool(mine(*pair)), bool(theirs(*pair))) for pair in counts}
    kinds = {pair: classify(*pair) for pair in verdicts}
    disagreements = sorted((Disagreement(a, g, o, t, counts[a, g], kinds[a, g])
                            for (a, g), (o, t) in verdicts.items() if o != t),
                           key=lambda d: (-d.occurrences, d.gold, d.answer))
    per_kind: dict[str, tuple[int, int]] = {}
    for pair, (o, t) in verdicts.items():
        agreed, n = per_kind.get(kinds[pair], (0, 0))
        per_kind[kinds[pair]] = (agreed + (o == t), n + 1)
    flipped: Counter[str] = Counter()
    for rec in records:
        for rule, v in rec.votes.items():
            if v.answer is not None:
                o, t = verdicts[v.answer, str(rec.gold)]
                flipped[rule] += o != t
    return Crosscheck(len(verdicts), len(verdicts) - len(disagreements), disagreements, dict(flipped), len(records),
                      dict(sorted(per_kind.items())))


def format_report(result: Crosscheck, show: int = 50) -> str:
    rate = result.agreed / result.pairs if result.pairs else 1.0
    lines = [f"{result.records} records, {result.pairs} distinct (answer, gold) pairs: graders agree on "
             f"{result.agreed} ({rate:.1%})"]
    for rule, n in sorted(result.flipped_votes.items()):
        lines.append(f"  {rule}: {n} of {result.records} records would change verdict")
    if result.per_kind:
        lines += ["", f"{'kind':>10} {'pairs':>6} {'agree':>6} {'rate':>7}"]
        for kind, (agreed, n) in result.per_kind.items():
            lines.append(f"{kind:>10} {n:>6} {agreed:>6} {agreed / n:7.1%}")
    if result.disagreements:
        lines += ["", f"{'ours':>5} {'math_verify':>11} {'count':>5} {'kind':>9}  answer | gold"]
        for d in result.disagreements[:show]:
            lines.append(f"{str(d.ours):>5} {str(d.theirs):>11} {d.occurrences:>5} {d.kind:>9}  {d.answer!r} | {d.gold!r}")
        if len(result.disagreements) > show:
            lines.append(f"... and {len(result.disagreements) - show} more (--show N)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.grading.crosscheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="results directory (its records*.jsonl)")
    ap.add_argument("--show", type=int, default=50, help="disagreements to print (most frequent first)")
    ap.add_argument("--json", metavar="PATH", help="also write the full result as JSON")
    args = ap.parse_args(argv)
    from ..records import RecordsError, load_dir
    from . import math_verify

    if not math_verify.available():
        print(f"crosscheck: {math_verify.MISSING}", file=sys.stderr)
        return 2
    try:
        records = load_dir(args.results)
    except (OSError, RecordsError) as e:
        print(f"crosscheck: {e}", file=sys.stderr)
        return 2
    if not records:
        print(f"crosscheck: no records*.jsonl with records in {args.results}", file=sys.stderr)
        return 2
    result = crosscheck(records, math_verify.grade)
    print(format_report(result, args.show))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
