"""Equivalence: structures element-wise, then per scalar: text, numbers, then symbolic algebra.

Integers and fractions compare exactly; once a decimal is written, within a relative ``REL_TOL``.
Irrational constants are compared as floats to reject and by sympy (in the worker) to accept, so
1000 and sqrt(1000001) are not "equal within 1e-6". Expressions with variables are probed at random
points first (a clear difference rejects without sympy), then proved in the worker.
"""
from __future__ import annotations

import math
import re
import time
from fractions import Fraction
from typing import Any

from .evaluate import REL_TOL, Ast, EvalError, NotRational, approx, close, exact, has_decimal, probe
from .normalize import MAX_INPUT_CHARS, normalize_answer, split_top
from .parser import ParseError, free_symbols, has, parse_math
from .policy import DEFAULT_POLICY, GradingPolicy
from .structure import Node, structure, vector
from .worker import symbolic_equal

DEFAULT_TIMEOUT = 1.0


def nodes_equal(a: Node, b: Node, deadline: float, policy: GradingPolicy = DEFAULT_POLICY) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return _scalar_equal(a, b, deadline)
    if isinstance(a, str) or isinstance(b, str):
        return False
    if {a.kind, b.kind} == {"matrix", "tuple"}:
        mat, tup = (a, b) if a.kind == "matrix" else (b, a)
        vec = vector(mat)
        return vec is not None and tup.left == "(" and _ordered_equal(vec, tup.items, deadline)
    if a.kind in ("matrix", "row") or b.kind in ("matrix", "row"):
        return a.kind == b.kind and _ordered_equal(a.items, b.items, deadline)
    if a.kind == "tuple" and b.kind == "tuple":
        return (a.left, a.right) == (b.left, b.right) and _ordered_equal(a.items, b.items, deadline)
    if {a.kind, b.kind} == {"tuple", "list"}:  # '(6,31,-1)' written without parentheses
        tup = a if a.kind == "tuple" else b
        return tup.left == "(" and tup.right == ")" and _ordered_equal(a.items, b.items, deadline)
    if a.kind == "union" or b.kind == "union":
        return a.kind == b.kind and _unordered_equal(a.items, b.items, deadline)
    if policy.ordered_lists and a.kind == b.kind == "list":  # '8, 1, -3' is not '1, 8, -3'
        return _ordered_equal(a.items, b.items, deadline)
    return _unordered_equal(a.items, b.items, deadline)  # set/list in either spelling


def _ordered_equal(xs: tuple[Node, ...], ys: tuple[Node, ...], deadline: float) -> bool:
    return len(xs) == len(ys) and all(nodes_equal(x, y, deadline) for x, y in zip(xs, ys))


def _unordered_equal(xs: tuple[Node, ...], ys: tuple[Node, ...], deadline: float) -> bool:
    """Multiset equality; greedy matching suffices because equivalence is transitive."""
    if len(xs) != len(ys):
        return False
    rest = list(ys)
    for x in xs:
        hit = next((k for k, y in enumerate(rest) if nodes_equal(x, y, deadline)), None)
        if hit is None:
            return False
        rest.pop(hit)
    return True


def _is_text(s: str) -> bool:
    """A word answer ('Evelyn', 'even', 'ellipse'): three letters in a row outside a command."""
    return re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s) is not None


def _base_digits(s: str) -> tuple[str, str | None] | None:
    """'52_8' -> ('52', '8'); '52' -> ('52', None); else None ('x_1' is a variable, not a base)."""
    m = re.fullmatch(r"([0-9][0-9A-Za-z]*)(?:_([0-9]+))?", s)
    return (m.group(1).upper(), m.group(2)) if m else None


def _scalar_equal(a: str, b: str, deadline: float) -> bool:
    if a == b:
        return True
    if not a or not b:
        return False
    if _is_text(a) or _is_text(b):
        return a.casefold() == b.casefold()
    da, db = _base_digits(a), _base_digits(b)
    if da and db and (da[1] or db[1]):  # '52_8' vs '52': same digits, the base is implied by the question
        return da[0] == db[0] and (da[1] is None or db[1] is None or da[1] == db[1])
    try:
        ta, tb = parse_math(a), parse_math(b)
    except ParseError:
        return False
    return _ast_equal(ta, tb, deadline)


def canonical(node: Any) -> Any:
    """Flatten and sort sums and products, fold their numbers, write -x as (-1)*x: commuted
    spellings ('2\\sqrt{3}' and '\\sqrt{3}\\cdot 2', '6-5i' and '-5i+6') then match without sympy."""
    if not isinstance(node, tuple) or node[0] in ("num", "sym", "const"):
        return ("num", node[1], node[2], False) if node[0] == "num" else node
    if node[0] == "neg":
        return canonical(("mul", [("num", -1, 1, False), node[1]]))
    if node[0] not in ("add", "mul"):
        return (node[0],) + tuple(c if isinstance(c, str) else canonical(c) for c in node[1:])
    flat: list[Any] = []
    for child in map(canonical, node[1]):
        flat += child[1] if child[0] == node[0] else [child]
    numbers = [Fraction(c[1], c[2]) for c in flat if c[0] == "num"]
    rest = sorted((c for c in flat if c[0] != "num"), key=repr)
    value = sum(numbers, Fraction(0)) if node[0] == "add" else math.prod(numbers, start=Fraction(1))
    if node[0] == "mul" and value == 0:
        return ("num", 0, 1, False)
    if value != (0 if node[0] == "add" else 1) or not rest:
        rest.insert(0, ("num", value.numerator, value.denominator, False))
    return rest[0] if len(rest) == 1 else (node[0], rest)


def _ast_equal(ta: Ast, tb: Ast, deadline: float) -> bool:
    if ta == tb or canonical(ta) == canonical(tb):
        return True
    if (ta[0] == "eq") != (tb[0] == "eq"):
        return False
    if has(ta, "const", "oo") or has(tb, "const", "oo"):
        return False  # infinities only match spelled the same way (ta == tb above)
    names = free_symbols(ta) | free_symbols(tb)
    if ta[0] == "eq":
        diff_a = ("add", [ta[1], ("neg", ta[2])])
        diff_b = ("add", [tb[1], ("neg", tb[2])])
        if probe(diff_a, diff_b, names, ratio=True) is False:
            return False
        return symbolic_equal(diff_a, diff_b, "ratio", deadline)
    if names:
        if probe(ta, tb, names, ratio=False) is False:
            return False
        return symbolic_equal(ta, tb, "diff", deadline)
    return _numbers_equal(ta, tb, deadline)


def _numbers_equal(ta: Ast, tb: Ast, deadline: float) -> bool:
    """Exact for integers and fractions; within REL_TOL when a decimal is written; otherwise floats
    reject and sympy confirms (so 1000 and sqrt(1000001) are not 'equal within 1e-6')."""
    decimal = has_decimal(ta) or has_decimal(tb)
    try:
        fa, fb = exact(ta), exact(tb)
        if not decimal:
            return fa == fb
        return abs(fa - fb) <= Fraction(REL_TOL) * max(abs(fa), abs(fb))
    except NotRational:
        pass
    try:
        za, zb = approx(ta, {}), approx(tb, {})
    except EvalError:
        return False
    if not close(za, zb, REL_TOL):
        return False
    return decimal or symbolic_equal(ta, tb, "diff", deadline)


_CHOICE = re.compile(r"\s*(?:\\text\{\s*)?(?:\(([A-E])\)|([A-E])[.:)])(?:\s*\}|\s)\s*\S.*|\s*\(?([A-E])\)?\s*",
                     flags=re.DOTALL)


def _choice(s: str) -> tuple[str, bool] | None:
    """A multiple-choice answer: (its letter, whether text follows it): 'B' -> ('B', False),
    'B. y = 17' and '(B) 17' -> ('B', True); None for anything else ('Bob', '17')."""
    m = _CHOICE.fullmatch(s.strip().strip("$"))
    if not m:
        return None
    letter = m.group(1) or m.group(2) or m.group(3)
    return letter, m.group(3) is None


def _equations(pred: str, gold: str, policy: GradingPolicy, deadline: float) -> bool:
    """Both are equations once names on the left are kept ('y = 2x+3' and '2x - y + 3 = 0': one line)."""
    a, b = normalize_answer(pred, policy, keep_lhs=True), normalize_answer(gold, policy, keep_lhs=True)
    if len(split_top(a, "=")) != 2 or len(split_top(b, "=")) != 2 or "," in a + b:
        return False
    return _scalar_equal(a, b, deadline)


def is_equivalent(pred: str | None, gold: str | None, timeout: float = DEFAULT_TIMEOUT,
                  policy: GradingPolicy = DEFAULT_POLICY) -> bool:
    """Whether a predicted final answer equals the gold one (never executes ``pred``).

    Integers and fractions compare exactly; once a decimal is written, within a relative 1e-6.
    Percent signs, degrees, units and '\\text{}' words are dropped ('50\\%' equals '50', as in
    PRM800K), tuples and intervals compare in order with their brackets, sets and comma lists in any
    order. Equal normalized strings and numbers are decided in process; symbolic checks run in a
    worker bounded by ``timeout`` seconds; a timeout counts as not equal for this call but is not
    cached, so the same pair is tried again next time (see ``worker.symbolic_equal``). ``policy``
    settles the spellings left open (decimal commas, ordered lists; ``GradingPolicy``).
    """
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if pred == gold:
        return bool(pred)
    if len(pred) > MAX_INPUT_CHARS or len(gold) > MAX_INPUT_CHARS:
        return False
    choices = _choice(pred), _choice(gold)
    if choices[0] and choices[1] and not (choices[0][1] and choices[1][1]):
        return choices[0][0] == choices[1][0]  # 'B. y = 17' answers 'B'
    a, b = normalize_answer(pred, policy), normalize_answer(gold, policy)
    if not a or not b:
        return False
    if a == b:
        return True
    deadline = time.monotonic() + float(timeout)
    try:
        if nodes_equal(structure(a), structure(b), deadline, policy):
            return True
        return "=" in pred and "=" in gold and _equations(pred, gold, policy, deadline)
    except (ArithmeticError, ValueError, RecursionError):  # odd input must grade as wrong, not crash a run
        return False


def grade(pred: str | None, gold: str | None, policy: GradingPolicy = DEFAULT_POLICY) -> bool:
    """``is_equivalent`` with the default time limit: the ``equal`` function for answer voting."""
    return is_equivalent(pred, gold, policy=policy)

