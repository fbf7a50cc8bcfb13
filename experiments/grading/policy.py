"""Grading policies: the choices an answer's spelling leaves open, made once per study.

``GradingPolicy()`` is the default and grades as the grader always has; a config chooses another
with a ``grading:`` mapping in its ``dataset`` (docs/grading.md, "Policies").
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GradingPolicy:
    """``decimal_comma``: a comma between digits of one number is its decimal mark ('3,45' = 3.45,
    '1,000' = 1, '2.500,75' = 2500.75); by default it separates list items ('3,45' = '3, 45') or, in
    groups of three, thousands ('1,000' = 1000). Either way a number with both marks takes the
    later one as the decimal mark, and '0,5' is 0.5.

    ``ordered_lists``: a bare comma list ('8, 1, -3') is ordered, like a tuple; by default it is an
    unordered list of solutions ('-2, 1' = '1, -2'). Sets written with braces stay unordered.
    """

    decimal_comma: bool = False
    ordered_lists: bool = False


DEFAULT_POLICY = GradingPolicy()
