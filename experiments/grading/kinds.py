"""Kinds of answer a grader can get wrong, and the agreement per kind.

``tests/data/grading_kinds.jsonl`` holds hand-written labelled cases, one JSON object a line:
``kind`` (one of ``KINDS``), ``task`` ("equal": pred and gold are answers; "extract": pred is a
whole solution, its answer is extracted first), ``pred``, ``gold``, ``equal`` (the label),
``policy`` (optional: the ``GradingPolicy`` settings the label assumes) and ``note``.

``classify(answer, gold)`` sorts any (answer, gold) pair into one of those kinds by what the two
strings contain (used by ``crosscheck`` to report where two graders part):

* ``prose``: words outside math (three letters in a row that are not a LaTeX command, \\text{}
  or a unit), or more than 40 characters: a sentence rather than an answer;
* ``numbers``: one number with a comma between digits ('3,45', '2,500.75 km'), a currency sign,
  '\\!' or a trailing backslash;
* ``relations``: a relation sign (<, >, \\le, \\ge, \\ne, !=, \\in, |x|), or a list joined by
  "or"/"and"/"\\quad";
* ``labelled``: a name or ratio of names left of '=', or a choice letter ('B.', '(B)');
* ``other``: none of these.
The first that matches wins, in that order.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .policy import GradingPolicy

KINDS = ("prose", "numbers", "relations", "labelled", "wrong_acceptance")
CASES = Path(__file__).resolve().parents[2] / "tests" / "data" / "grading_kinds.jsonl"


def load_cases(path: str | Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def verdict(case: Mapping[str, Any]) -> bool:
    """Our grader's verdict on one labelled case, under the policy the case names."""
    from . import is_equivalent, solution_answer

    pred = solution_answer(case["pred"]) if case.get("task") == "extract" else case["pred"]
    return is_equivalent(pred, case["gold"], policy=GradingPolicy(**case.get("policy", {})))


def agreement(cases: Iterable[Mapping[str, Any]], judge: Callable[[Mapping[str, Any]], bool] = verdict
              ) -> dict[str, tuple[int, int, list[Mapping[str, Any]]]]:
    """kind -> (agreed, cases, the cases that disagree), and "all"."""
    out: dict[str, tuple[int, int, list[Mapping[str, Any]]]] = {}
    for case in cases:
        agreed, n, wrong = out.get(case["kind"], (0, 0, []))
        ok = judge(case) == case["equal"]
        out[case["kind"]] = (agreed + ok, n + 1, wrong if ok else wrong + [case])
    total = (sum(v[0] for v in out.values()), sum(v[1] for v in out.values()),
             [c for v in out.values() for c in v[2]])
    return {**dict(sorted(out.items())), "all": total}


def format_agreement(table: Mapping[str, tuple[int, int, list[Any]]]) -> str:
    lines = [f"{'kind':>17} {'agree':>9} {'rate':>7}"]
    for kind, (agreed, n, _) in table.items():
        lines.append(f"{kind:>17} {agreed:>4}/{n:<4} {agreed / n if n else 1.0:7.1%}")
    return "\n".join(lines)


_UNIT_OR_TEXT = re.compile(r"\\text\{[^{}]*\}|\\[a-zA-Z]+")
_WORD = re.compile(r"(?<![a-zA-Z])[a-zA-Z]{3,}")
_NUMBER_MARKS = re.compile(r"[€£¥]|\\\$|,\\!|(?<!\\)\\\s*$")
_SEPARATED = re.compile(r"\s*\$?\s*-?[0-9]+(?:[.,][0-9]+)*,[0-9]+(?:[.,][0-9]+)*\s*[a-zA-Z\\%$²]*\s*")
_RELATION = re.compile(r"<|>|!=|\\(?:le|ge|leq|geq|lt|gt|ne|neq|in)(?![a-zA-Z])|\|[^|]*[a-z][^|]*\||"
                       r"\s(?:or|and)\s|\\text\{\s*(?:or|and)\s*\}|\\q?quad")
_LABEL = re.compile(r"^\s*(?:[A-Za-z](?:_\{?\w+\}?)?|[A-Z]{2,3}|\\frac\{[A-Z]{1,3}\}\{[A-Z]{1,3}\}|[a-zA-Z]\([^()=]*\))"
                    r"(?:\s*:\s*[A-Za-z_0-9{}]+)*\s*=|^\s*\(?[A-E]\)?[.:)]\s|^\s*\\text\{\([A-E]\)")
_UNITS = {"units", "square", "cubic", "degrees", "cm", "meters", "inches", "feet", "dollars", "cents", "percent",
          "hours", "minutes", "seconds", "days", "miles", "pounds"}


def _is_prose(s: str) -> bool:
    words = [w for w in _WORD.findall(_UNIT_OR_TEXT.sub(" ", s)) if w.lower() not in _UNITS]
    return bool(words) or len(s) > 40


def classify(answer: str, gold: str) -> str:
    """The kind of an (answer, gold) pair by what the strings contain (see the module docstring)."""
    both = (answer or "", gold or "")
    if any(_is_prose(s) for s in both):
        return "prose"
    if any(_NUMBER_MARKS.search(s) or _SEPARATED.fullmatch(s) for s in both):
        return "numbers"
    if any(_RELATION.search(s) for s in both):
        return "relations"
    if any(_LABEL.search(s) for s in both):
        return "labelled"
    return "other"


def kind_counts(pairs: Iterable[tuple[str, str]]) -> Counter[str]:
    return Counter(classify(a, g) for a, g in pairs)
