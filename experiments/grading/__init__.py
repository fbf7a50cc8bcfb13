"""Final-answer extraction and safe equivalence grading for MATH-style and GSM8K answers.

Model output is untrusted text, so nothing here evaluates it: no ``eval``/``exec`` and no sympy
string parsing. One job per module:

* ``treesearch.answers``: finding the final answer in a solution (the one extractor, shared with
  the search core's ``StepFormat``); re-exported here as ``extract_answer``.
* ``normalize``: a canonical string per answer (delimiters, boxes, units, names on the left, ...).
* ``structure``: tuples, intervals, inequalities, sets, lists, unions, matrices.
* ``parser``: the safe recursive-descent parser (a plain tuple AST, sizes bounded while parsing).
* ``evaluate``: exact rationals and complex floats in process.
* ``compare``: ``is_equivalent`` / ``grade``: normalize -> equal strings -> structure -> per scalar:
  text, numbers, then symbolic equivalence.
* ``worker``: the symbolic check in a killable sympy process, with a cache of reached verdicts.
* ``math_verify``: the optional Math-Verify grader; ``crosscheck``: both graders over a results directory.

Policies (docs/grading.md): bare comma lists are unordered unless compared with a tuple (or
``GradingPolicy(ordered_lists=True)``); a comma between digits lists or groups thousands (or is the
decimal mark: ``GradingPolicy(decimal_comma=True)``); only ASCII 0-9 are digits; a symbolic check
that timed out is not cached.
"""
from treesearch.answers import MARKERS, extract_answer

from .compare import DEFAULT_TIMEOUT, grade, is_equivalent
from .normalize import normalize_answer
from .parser import parse_math
from .policy import DEFAULT_POLICY, GradingPolicy


def solution_answer(text: str | None, markers: tuple[str, ...] = MARKERS) -> str | None:
    """The answer a whole solution states: ``extract_answer``, and without a marker the answer its
    last sentence states ('... Therefore the total is $10$.' -> '10'), as a reader grading it would."""
    return extract_answer(text, markers, last_sentence=True)


__all__ = ["extract_answer", "solution_answer", "normalize_answer", "is_equivalent", "grade", "parse_math", "DEFAULT_TIMEOUT",
           "GradingPolicy", "DEFAULT_POLICY"]
