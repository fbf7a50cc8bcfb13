"""In-process evaluation of a parsed answer: exact rationals, and complex floats for irrationals
and for probing expressions with variables at random points."""
from __future__ import annotations

import cmath
import math
import random
from fractions import Fraction
from typing import Any

Ast = tuple
MAX_EXPONENT = 1000  # |constant exponent| allowed in a power
MAX_BITS = 40_000  # size bound (bits) of an exact power's result, about 12,000 digits
MAX_FACTORIAL = 1000
REL_TOL = 1e-6  # numeric tolerance whenever a decimal or an irrational is involved


class NotRational(Exception):
    pass


class EvalError(Exception):
    pass


def _nth_root(x: Fraction, n: int) -> Fraction:
    """Exact n-th root of a rational, or NotRational."""
    def iroot(k: int) -> int:
        r = round(k ** (1.0 / n)) if k < 2 ** 1000 else None
        if r is None:
            raise NotRational
        for c in (r - 1, r, r + 1):
            if c >= 0 and c ** n == k:
                return c
        raise NotRational

    if x < 0:
        if n % 2 == 0:
            raise NotRational
        return -_nth_root(-x, n)
    return Fraction(iroot(x.numerator), iroot(x.denominator))


def exact(node: Ast) -> Fraction:
    """Exact value of a rational constant expression, else NotRational."""
    kind = node[0]
    if kind == "num":
        return Fraction(node[1], node[2])
    if kind == "add":
        return sum((exact(t) for t in node[1]), Fraction(0))
    if kind == "mul":
        out = Fraction(1)
        for f in node[1]:
            out *= exact(f)
        return out
    if kind == "neg":
        return -exact(node[1])
    if kind == "inv":
        v = exact(node[1])
        if v == 0:
            raise NotRational  # undefined; the float path reports it
        return 1 / v
    if kind == "pow":
        b, e = exact(node[1]), exact(node[2])
        if abs(e) > MAX_EXPONENT or abs(e) * max(b.numerator.bit_length(), b.denominator.bit_length()) > MAX_BITS:
            raise NotRational
        if b == 0 and e <= 0:
            raise NotRational
        root = b if e.denominator == 1 else _nth_root(b, e.denominator)
        return root ** e.numerator
    if kind == "fact":
        n = exact(node[1])
        if n.denominator != 1 or not 0 <= n <= MAX_FACTORIAL:
            raise NotRational
        return Fraction(math.factorial(int(n)))
    raise NotRational


def _cot(z: complex) -> complex:
    return 1 / cmath.tan(z)


_CFUNCS = {"sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "cot": _cot,
           "sec": lambda z: 1 / cmath.cos(z), "csc": lambda z: 1 / cmath.sin(z),
           "arcsin": cmath.asin, "arccos": cmath.acos, "arctan": cmath.atan,
           "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh,
           "log": cmath.log, "ln": cmath.log, "exp": cmath.exp}


def approx(node: Ast, env: dict[str, complex]) -> complex:
    """Complex float value; EvalError when undefined, infinite or overflowing."""
    try:
        return _approx_raw(node, env)
    except (OverflowError, ZeroDivisionError, ValueError, KeyError) as e:
        raise EvalError(str(e)) from None


def _approx_raw(node: Ast, env: dict[str, complex]) -> complex:
    kind = node[0]
    if kind == "num":
        return complex(node[1] / node[2])
    if kind == "sym":
        return env[node[1]]
    if kind == "const":
        if node[1] == "oo":
            raise ValueError("infinity")
        return {"pi": complex(math.pi), "E": complex(math.e), "I": 1j}[node[1]]
    if kind == "add":
        return sum((_approx_raw(t, env) for t in node[1]), 0j)
    if kind == "mul":
        out = 1 + 0j
        for f in node[1]:
            out *= _approx_raw(f, env)
        return out
    if kind == "neg":
        return -_approx_raw(node[1], env)
    if kind == "inv":
        return 1 / _approx_raw(node[1], env)
    if kind == "pow":
        b, e = _approx_raw(node[1], env), _approx_raw(node[2], env)
        if abs(e) > MAX_EXPONENT:
            raise OverflowError("exponent")
        if e.imag == 0 and e.real == int(e.real) and b != 0:
            return b ** int(e.real)  # exact repeated multiplication keeps (-2)^3 real
        return b ** e
    if kind == "func":
        return _CFUNCS[node[1]](_approx_raw(node[2], env))
    if kind == "fact":
        x = _approx_raw(node[1], env)
        if x.imag != 0:
            raise ValueError("complex factorial")
        return complex(math.gamma(x.real + 1))
    raise ValueError(f"cannot evaluate {kind}")


def close(a: complex, b: complex, rel: float) -> bool:
    diff = abs(a - b)
    return diff <= rel * max(abs(a), abs(b)) or diff <= 1e-12


_PROBES = 3


def probe(a: Ast, b: Ast, names: set[str], ratio: bool) -> bool | None:
    """Compare at random points: False on a clear difference, True after agreeing points, None if no
    point could be evaluated. With ``ratio`` the values must be proportional (equations)."""
    rng = random.Random(0)
    agreed, scale = 0, None
    for _ in range(4 * _PROBES):
        env = {n: complex(rng.uniform(0.3, 2.7)) for n in sorted(names)}
        try:
            va, vb = approx(a, env), approx(b, env)
        except EvalError:
            continue
        if ratio:
            if abs(vb) < 1e-9 or abs(va) < 1e-9:
                continue
            r = va / vb
            scale = r if scale is None else scale
            if not close(r, scale, 1e-7):
                return False
        elif not close(va, vb, 1e-7):
            return False
        agreed += 1
        if agreed == _PROBES:
            return True
    return None



def has_decimal(node: Any) -> bool:
    """Whether a decimal number is written anywhere in the AST (then comparisons use a tolerance)."""
    if isinstance(node, tuple) and node and node[0] == "num":
        return bool(node[3])
    children = node[1:] if isinstance(node, tuple) else node if isinstance(node, list) else ()
    return any(has_decimal(c) for c in children)
