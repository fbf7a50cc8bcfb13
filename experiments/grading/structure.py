"""Structure: an answer as nested tuples, intervals, sets, lists, unions and matrices of scalars.

Ordered: tuples and intervals (brackets kept: '(3,4)' is not '(3,4]'), matrices, and a bare comma
list compared with a parenthesised tuple (a point written without parentheses). Unordered: sets,
unions, and comma lists compared with lists or sets (a list of solutions: '-2, 1' = '1, -2').
Inequalities in one variable are intervals ('-2 \\le x \\le 7' = '[-2,7]', '5 \\ge x' = '(-\\infty,5]'),
and a list of them is their union ('x<-2 or x>3' = '(-\\infty,-2)\\cup(3,\\infty)').
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Union

from .normalize import split_top, strip_lhs

_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True)
class Seq:
    kind: str  # "tuple" (ordered, bracketed: points and intervals), "list"/"set"/"union" (unordered), "matrix", "row"
    items: tuple["Node", ...]
    left: str = ""
    right: str = ""


Node = Union[str, Seq]


def _encloses(s: str) -> bool:
    """True when the bracket opening ``s`` closes at its last character (so '(a)(b)' is not enclosed)."""
    depth = 0
    for i, c in enumerate(s):
        depth += c in _OPEN
        depth -= c in _CLOSE
        if depth == 0:
            return i == len(s) - 1
    return False


def _expand_pm(items: list[str]) -> list[str]:
    """'1\\pm\\sqrt{5}' stands for two answers."""
    out = []
    for it in items:
        if it.count("\\pm") == 1 and "\\mp" not in it:
            out += [it.replace("\\pm", "+"), it.replace("\\pm", "-")]
        else:
            out.append(it)
    return out


_COMPARE = re.compile(r"(<|>|\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|\\ne(?![a-zA-Z]))")
_VARIABLE = re.compile(r"[a-zA-Z]|\\(?!infty)[a-zA-Z]+")
_BELOW = {"<": ")", "\\le": "]"}
_ABOVE = {">": "(", "\\ge": "["}
_MIRROR = {"<": ">", "\\le": "\\ge", ">": "<", "\\ge": "\\le", "\\ne": "\\ne"}
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_ABS = re.compile(rf"\|([a-zA-Z])(?:([-+])({_NUMBER[2:]}))?\|")  # '|x|', '|x-1|'


def _negate(value: str) -> str:
    return value[1:] if re.fullmatch(_NUMBER, value) and value.startswith("-") else f"-{{{value}}}"


def _number_text(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"\\frac{{{f.numerator}}}{{{f.denominator}}}"


def _absolute(a: str, op: str, b: str) -> Seq | None:
    """'|x - c| < r' -> (c-r, c+r); '|x| \\ge r' -> (-\\infty,-r] \\cup [r,\\infty) (plain numbers only)."""
    m = _ABS.fullmatch(a)
    if not m or not re.fullmatch(_NUMBER, b) or op == "\\ne":
        return None
    r = Fraction(b)
    c = Fraction(m.group(3) or 0) * (-1 if m.group(2) == "+" else 1)
    lo, hi = _number_text(c - r), _number_text(c + r)
    if op in _BELOW:
        return Seq("tuple", (lo, hi), "[" if op == "\\le" else "(", _BELOW[op])
    closed = op == "\\ge"
    return Seq("union", (Seq("tuple", ("-\\infty", lo), "(", "]" if closed else ")"),
                         Seq("tuple", (hi, "\\infty"), "[" if closed else "(", ")")))


def inequality(s: str) -> Seq | None:
    """The interval an inequality in one variable describes, or None: 'x \\ge 2' -> [2,\\infty),
    '-x > -2' -> (-\\infty,2), 'x \\ne 2' -> (-\\infty,2) \\cup (2,\\infty), '|x-1| < 2' -> (-1,3)."""
    pieces = [p.strip() for p in _COMPARE.split(s)]
    values, ops = pieces[0::2], pieces[1::2]
    if not ops or len(ops) > 2 or not all(values):
        return None
    if len(ops) == 1:
        (a, b), op = values, ops[0]
        if (_VARIABLE.fullmatch(b) or _ABS.fullmatch(b)) and not (_VARIABLE.fullmatch(a) or _ABS.fullmatch(a)):
            a, b, op = b, a, _MIRROR[op]  # '5 \ge x' is 'x \le 5'
        if a.startswith("-") and _VARIABLE.fullmatch(a[1:]) and not _VARIABLE.fullmatch(b):
            a, b, op = a[1:], _negate(b), _MIRROR[op]  # '-x > -2' is 'x < 2'
        if _ABS.fullmatch(a):
            return _absolute(a, op, b)
        if not _VARIABLE.fullmatch(a) or _VARIABLE.fullmatch(b):
            return None  # 'a < b' orders two names; it is not an interval
        if op == "\\ne":
            return Seq("union", (Seq("tuple", ("-\\infty", b), "(", ")"), Seq("tuple", (b, "\\infty"), "(", ")")))
        if op in _BELOW:
            return Seq("tuple", ("-\\infty", b), "(", _BELOW[op])
        return Seq("tuple", (b, "\\infty"), _ABOVE[op], ")")
    lo, x, hi = values
    if "\\ne" in ops or not _VARIABLE.fullmatch(x) or _VARIABLE.fullmatch(lo) or _VARIABLE.fullmatch(hi):
        return None  # 'a < b < c' orders three names
    if ops[0] in _ABOVE and ops[1] in _ABOVE:  # 'hi > x > lo'
        lo, hi, ops = hi, lo, [_MIRROR[ops[1]], _MIRROR[ops[0]]]
    if ops[0] in _BELOW and ops[1] in _BELOW:
        return Seq("tuple", (lo, hi), "[" if ops[0] == "\\le" else "(", _BELOW[ops[1]])
    return None


def structure(s: str) -> Node:
    """Parse a normalized answer into nested sequences of scalar strings."""
    m = re.fullmatch(r"\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}", s, flags=re.DOTALL)
    if m:
        rows = [r for r in split_top(m.group(2), "\\\\") if r.strip()]
        return Seq("matrix", tuple(Seq("row", tuple(structure(c) for c in split_top(r, "&"))) for r in rows))
    parts = split_top(s, "\\cup")
    if len(parts) > 1:
        return Seq("union", tuple(structure(p) for p in parts))
    if s.startswith("\\{") and s.endswith("\\}"):
        return _unwrap_single(Seq("set", _members(split_top(s[2:-2], ","))))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _encloses(s):
        items = split_top(s[1:-1], ",")
        if len(items) > 1:
            return Seq("tuple", tuple(structure(p) for p in items), s[0], s[-1])
    items = split_top(s, ",")
    if len(items) > 1 or s.count("\\pm") == 1:
        members = _members(items)
        if len(members) > 1 and all(inequality(strip_lhs(p)) for p in items if p):
            return Seq("union", members)
        return Seq("list", members)
    return inequality(s) or s


def _members(parts: list[str]) -> tuple[Node, ...]:
    """Elements of an unordered answer list; 'x=1, x=-2' lists the same roots as '1, -2'."""
    return tuple(structure(strip_lhs(p)) for p in _expand_pm(parts) if p)


def _unwrap_single(node: Seq) -> Node:
    """'\\{5\\}' answers the same as '5'."""
    return node.items[0] if len(node.items) == 1 else node


def vector(node: Seq) -> tuple[Node, ...] | None:
    """Entries of a row or column matrix, which may be written as a tuple instead."""
    rows = node.items
    if len(rows) == 1:
        return rows[0].items
    if all(len(r.items) == 1 for r in rows):
        return tuple(r.items[0] for r in rows)
    return None


