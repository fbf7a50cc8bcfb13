"""Final-answer extraction and safe equivalence grading for MATH-style and GSM8K answers.

Model output is untrusted text, so nothing here evaluates it: no ``eval``/``exec`` and no sympy
string parsing (``sympify``, ``parse_expr`` and ``sympy.parsing.latex`` all call ``eval``). A small
recursive-descent parser turns an answer into a plain tuple AST; exponents and factorials are
bounded while parsing so ``9^{9^{9}}`` is refused instead of computed. Numbers are compared in
process with exact fractions or floats; only expressions that need real algebra go to sympy, and
that runs in a separate worker process which is killed when it exceeds its time limit, since a
slow ``simplify`` cannot be interrupted from inside the process.

Pipeline of ``is_equivalent``: normalize both strings (Hendrycks' MATH normalizer and the
PRM800K grader in spirit) -> equal strings -> structure (tuples, intervals, sets, lists, unions,
matrices; compared element-wise) -> per scalar: text, numbers, then symbolic equivalence.
"""
from __future__ import annotations

import atexit
import cmath
import functools
import json
import math
import os
import random
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Union

__all__ = ["extract_answer", "normalize_answer", "is_equivalent", "grade"]

DEFAULT_TIMEOUT = 1.0
MAX_INPUT_CHARS = 1000  # longer 'final answers' are not graded (real ones are < 100 chars)
MAX_PARSE_CHARS = 500  # longer normalized scalars are not parsed (no real answer is that long)
MAX_EXPONENT = 1000  # |constant exponent| allowed in a power
MAX_BITS = 40_000  # size bound (bits) of an exact power's result, about 12,000 digits
MAX_FACTORIAL = 1000
REL_TOL = 1e-6  # numeric tolerance whenever a decimal or an irrational is involved

# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is:?[ \t]*([^\n]*)")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BARE_TOKEN = re.compile(r"[ ]+([^\s$]+)")


def _brace_pairs(text: str) -> dict[int, int]:
    """Each '{' index mapped to its closing '}', in one pass (\\{ and \\} are literal, not grouping)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for j, c in enumerate(text):
        if c not in "{}" or (j > 0 and text[j - 1] == "\\"):
            continue
        if c == "{":
            stack.append(j)
        elif stack:
            pairs[stack.pop()] = j
    return pairs


def _match_brace(text: str, i: int) -> int | None:
    """Index of the '}' closing the '{' at ``text[i]``, or None if it never closes."""
    return _brace_pairs(text).get(i)


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    """(start, content) of every \\boxed{...} / \\fbox{...} (and '\\boxed 5'), brace-matched in linear time."""
    pairs = _brace_pairs(text)
    found = []
    for m in _BOXED.finditer(text):
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            if j in pairs:
                found.append((m.start(), text[j + 1:pairs[j]]))
        else:  # "\boxed 5": one whitespace-delimited token
            token = _BARE_TOKEN.match(text, m.end())
            if token:
                found.append((m.start(), token.group(1)))
    return found


def _clean_tail(answer: str) -> str:
    """Drop the Math-Shepherd step tag 'ки' and a sentence-final period."""
    answer = answer.strip()
    if answer.endswith("ки"):
        answer = answer[:-2].rstrip()
    return answer.rstrip(".").rstrip()


def extract_answer(text: str | None) -> str | None:
    """The final answer in a solution: the last of 'The answer is: X', \\boxed{X}, '#### X'.

    "Last" is by position, so 'The answer is \\boxed{5}.' yields '5'. Returns None when the
    text states no answer.
    """
    if not text:
        return None
    candidates: list[tuple[int, str]] = []
    for pattern in (_ANSWER_IS, _HASHES):
        candidates += [(m.start(), _clean_tail(m.group(1))) for m in pattern.finditer(text)]
    candidates += [(pos, content.strip()) for pos, content in _boxed_contents(text)]
    candidates = [c for c in candidates if c[1]]
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]


# --------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------

_UNITS = (
    r"units?|degrees?|radians?|cm|mm|km|centimeters?|millimeters?|kilometers?|meters?|inch(?:es)?|feet|foot|ft"
    r"|yards?|miles?|mph|seconds?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?|cents?|dollars?"
    r"|pounds?|lbs?|ounces?|oz|grams?|kg|kilograms?|liters?|litres?|gallons?|cups?|percent"
)
_TRAILING_UNIT = re.compile(
    rf"\s*(?:(?<![a-zA-Z\\])(?:sq(?:uare)?|cubic)\s*)?(?<![a-zA-Z\\])(?:{_UNITS})(?![a-zA-Z])"
    r"(?:\s*\^\s*\{?\d\}?)?\s*$"
)
_TEXT_CMDS = re.compile(r"\\(?:mbox|textrm|textbf|textit|textnormal|textup|mathrm|mathbf|mathit)(?![a-zA-Z])")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "π": "\\pi ", "∞": "\\infty ",
            "√": "\\sqrt ", "≤": "\\le ", "≥": "\\ge ", "∪": "\\cup ", "°": "^\\circ", "\u00a0": " "}


def _unwrap_command(s: str, command: re.Pattern[str]) -> str:
    """'\\cmd{X}' -> 'X' while the whole string is one such group."""
    while True:
        m = command.match(s)
        if not m:
            return s
        j = m.end()
        while j < len(s) and s[j] == " ":
            j += 1
        if j >= len(s) or s[j] != "{" or _match_brace(s, j) != len(s) - 1:
            return s
        s = s[j + 1:-1].strip()


_WHOLE_TEXT = re.compile(r"\\text(?![a-zA-Z])")


def _strip_spacing(s: str) -> str:
    """Remove LaTeX spacing commands (\\! \\, \\; \\: '\\ ') but keep '\\\\' row breaks."""
    keep = {"\\\\": "\\\\", "\\!": ""}
    return re.sub(r"\\\\|\\[!,;: ]|\\q?quad(?![a-zA-Z])", lambda m: keep.get(m.group(0), " "), s)


def _strip_text(s: str) -> str:
    """Unwrap an all-text answer; elsewhere treat \\text{...} as units/words and drop it."""
    s = _TEXT_CMDS.sub(r"\\text", s)
    s = _unwrap_command(s, _WHOLE_TEXT)
    s = re.sub(r"\\text\{\s*(?:and|or)\s*\}", ",", s)
    stripped = re.sub(r"\\text\{[^{}]*\}(?:\s*\^\s*\{?\d\}?)?", " ", s).strip()
    return stripped or s


def _strip_units(s: str) -> str:
    """Drop a trailing unit word ('5 cm', '12 inches^2') when a quantity remains before it."""
    m = _TRAILING_UNIT.search(s)
    if m and m.start() > 0 and not re.fullmatch(r"[a-zA-Z ]*", s[:m.start()]):
        return s[:m.start()].strip()
    return s


_ARG = re.compile(r"\s*(\{|\\[a-zA-Z]+|[0-9a-zA-Z])")


def _brace_arguments(s: str) -> str:
    """'\\frac12' -> '\\frac{1}{2}', '\\frac 59' -> '\\frac{5}{9}', '\\sqrt2' -> '\\sqrt{2}'."""
    out = []
    i = 0
    for m in re.finditer(r"\\(frac|sqrt)(?![a-zA-Z])", s):
        if m.start() < i:
            continue
        out.append(s[i:m.end()])
        i = m.end()
        for _ in range(2 if m.group(1) == "frac" else 1):
            a = _ARG.match(s, i)
            if not a:
                break
            if a.group(1) == "{":
                end = _match_brace(s, a.start(1))
                if end is None:
                    break
                out.append("{" + _brace_arguments(s[a.start(1) + 1:end]) + "}")
                i = end + 1
            else:
                out.append("{" + a.group(1) + "}")
                i = a.end()
    out.append(s[i:])
    return "".join(out)


def _strip_lhs(s: str) -> str:
    """'x = 5' -> '5', 'f(x)=...' -> '...', 'x \\in [a,b]' -> '[a,b]': the name is not the answer."""
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in\s*", "", s)
    m = re.match(r"^\s*(?:[a-zA-Z](?:_\d|_\{\d+\})?|\\[a-zA-Z]+|[a-zA-Z]\([a-zA-Z]\))\s*=(?!=)", s)
    if m and s.count("=") == 1:
        return s[m.end():]
    return s


def _collapse_spaces(s: str) -> str:
    """Remove spaces, except one between a command and a following letter ('\\cot x')."""
    s = re.sub(r"(?<!\\)(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x00", s)
    return re.sub(r"\s+", "", s).replace("\x00", " ")


def _tidy_number(s: str) -> str:
    """Canonical spelling of a plain number: '.5'->'0.5', '18.90'->'18.9', '5.0'->'5', '3/4'->'\\frac{3}{4}'."""
    s = re.sub(r"(?<![\w}.\\])\.(\d)", r"0.\1", s)
    if re.fullmatch(r"-?\d+\.\d+", s):
        s = s.rstrip("0").rstrip(".")
    m = re.fullmatch(r"(-?)(\d+)/(\d+)", s)
    if m:
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    if re.fullmatch(r"-?\d+", s):
        s = str(int(s))  # '007' -> '7', '-0' -> '0'
    return s


def normalize_answer(s: str | None) -> str:
    """A canonical string for an answer, so most equal answers become equal strings."""
    if s is None:
        return ""
    s = str(s).strip()
    if len(s) > MAX_INPUT_CHARS:
        return s
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = s.replace("\\$", "").replace("$", "").strip()
    s = _unwrap_command(s, _BOXED)
    s = re.sub(r"\\(?:displaystyle|textstyle)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\(?:left|right)(?:\.|(?![a-zA-Z]))", "", s)
    s = re.sub(r"\\(?:bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])", "", s)
    s = re.sub(r",\\!\s*", ",", s)  # '10,\!080': LaTeX-formatted thousands
    s = _strip_spacing(s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _strip_text(s)
    s = _strip_units(s)
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = _brace_arguments(s)
    s = _strip_lhs(s).strip()
    s = re.sub(r"\s+", " ", s).replace("{,}", ",")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _collapse_spaces(s)
    s = s.rstrip(".")
    if len(s) > 1 and s[0] == "{" and _match_brace(s, 0) == len(s) - 1:
        s = s[1:-1]
    s = re.sub(r"_\{(\d+)\}", r"_\1", s)
    choice = re.fullmatch(r"\(([A-Ea-e])\)", s)
    if choice:
        s = choice.group(1).upper()
    return _tidy_number(s)


# --------------------------------------------------------------------------------------------
# Structure: tuples, intervals, sets, lists, unions, matrices
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Seq:
    kind: str  # "tuple" (ordered, bracketed: points and intervals), "list"/"set"/"union" (unordered), "matrix"
    items: tuple["_Node", ...]
    left: str = ""
    right: str = ""


_Node = Union[str, _Seq]
_OPEN, _CLOSE = "([{", ")]}"


def _split_top(s: str, sep: str) -> list[str]:
    """Split on ``sep`` where no bracket of any kind is open."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return parts


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


def _structure(s: str) -> _Node:
    """Parse a normalized answer into nested sequences of scalar strings."""
    m = re.fullmatch(r"\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}", s, flags=re.DOTALL)
    if m:
        rows = [r for r in _split_top(m.group(2), "\\\\") if r.strip()]
        return _Seq("matrix", tuple(_Seq("row", tuple(_structure(c) for c in _split_top(r, "&"))) for r in rows))
    parts = _split_top(s, "\\cup")
    if len(parts) > 1:
        return _Seq("union", tuple(_structure(p) for p in parts))
    if s.startswith("\\{") and s.endswith("\\}"):
        return _unwrap_single(_Seq("set", _members(_split_top(s[2:-2], ","))))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _encloses(s):
        items = _split_top(s[1:-1], ",")
        if len(items) > 1:
            return _Seq("tuple", tuple(_structure(p) for p in items), s[0], s[-1])
    items = _split_top(s, ",")
    if len(items) > 1 or s.count("\\pm") == 1:
        return _Seq("list", _members(items))
    return s


def _members(parts: list[str]) -> tuple[_Node, ...]:
    """Elements of an unordered answer list; 'x=1, x=-2' lists the same roots as '1, -2'."""
    return tuple(_structure(_strip_lhs(p)) for p in _expand_pm(parts) if p)


def _unwrap_single(node: _Seq) -> _Node:
    """'\\{5\\}' answers the same as '5'."""
    return node.items[0] if len(node.items) == 1 else node


def _vector(node: _Seq) -> tuple[_Node, ...] | None:
    """Entries of a row or column matrix, which may be written as a tuple instead."""
    rows = node.items
    if len(rows) == 1:
        return rows[0].items
    if all(len(r.items) == 1 for r in rows):
        return tuple(r.items[0] for r in rows)
    return None


def _nodes_equal(a: _Node, b: _Node, deadline: float) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return _scalar_equal(a, b, deadline)
    if isinstance(a, str) or isinstance(b, str):
        return False
    if {a.kind, b.kind} == {"matrix", "tuple"}:
        mat, tup = (a, b) if a.kind == "matrix" else (b, a)
        vec = _vector(mat)
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
    return _unordered_equal(a.items, b.items, deadline)  # set/list in either spelling


def _ordered_equal(xs: tuple[_Node, ...], ys: tuple[_Node, ...], deadline: float) -> bool:
    return len(xs) == len(ys) and all(_nodes_equal(x, y, deadline) for x, y in zip(xs, ys))


def _unordered_equal(xs: tuple[_Node, ...], ys: tuple[_Node, ...], deadline: float) -> bool:
    """Multiset equality; greedy matching suffices because equivalence is transitive."""
    if len(xs) != len(ys):
        return False
    rest = list(ys)
    for x in xs:
        hit = next((k for k, y in enumerate(rest) if _nodes_equal(x, y, deadline)), None)
        if hit is None:
            return False
        rest.pop(hit)
    return True


# --------------------------------------------------------------------------------------------
# Parser: LaTeX-ish / plain math -> tuple AST (never evaluates text)
# --------------------------------------------------------------------------------------------
# Nodes: ("num", p, q, is_decimal) ("sym", name) ("const", "pi"|"I"|"oo") ("add", [..]) ("mul", [..])
#        ("neg", x) ("inv", x) ("pow", base, exp) ("func", name, x) ("fact", x) ("eq", lhs, rhs)

Ast = tuple


class _ParseError(ValueError):
    pass


class _Unsafe(_ParseError):
    """The expression would be too expensive to build or evaluate (e.g. 9^{9^{9}})."""


class _NotRational(Exception):
    pass


_FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
          "log", "ln", "exp"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
          "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}
_TIMES = {"*", "\\cdot", "\\times"}
_DIVIDE = {"/", "\\div"}
_TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|(\\[a-zA-Z]+)|(\*\*|[-+*/^(){}\[\]!=])|([a-zA-Z]))")


def _tokenize(s: str) -> list[str]:
    tokens, i = [], 0
    s = s.rstrip()
    while i < len(s):
        m = _TOKEN.match(s, i)
        if not m:
            raise _ParseError(f"unexpected {s[i]!r}")
        tokens.append(m.group(m.lastindex))
        i = m.end()
    return tokens


def _number(token: str) -> Ast:
    f = Fraction(token)  # Fraction's own decimal parser: digits only, nothing is evaluated
    return ("num", f.numerator, f.denominator, "." in token)


def _is_number_token(t: str | None) -> bool:
    return t is not None and (t[0].isdigit() or t[0] == ".")


class _Parser:
    """Recursive descent: expr := term (+|- term)*; term := unary ((*|/|implicit) unary)*;
    unary := -unary | power; power := postfix (^ exponent)?; postfix := atom !*."""

    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        t = self.peek()
        if t is None or (expected is not None and t != expected):
            raise _ParseError(f"expected {expected or 'a token'}, got {t!r}")
        self.i += 1
        return t

    def parse(self) -> Ast:
        node = self.expr()
        if self.peek() == "=":
            self.take()
            node = ("eq", node, self.expr())
        if self.peek() is not None:
            raise _ParseError(f"trailing {self.peek()!r}")
        return node

    def expr(self) -> Ast:
        terms = [self.term()]
        while self.peek() in ("+", "-"):
            op = self.take()
            t = self.term()
            terms.append(t if op == "+" else ("neg", t))
        return terms[0] if len(terms) == 1 else ("add", terms)

    def term(self) -> Ast:
        factors = [self.unary()]
        while True:
            t = self.peek()
            if t in _TIMES:
                self.take()
                factors.append(self.unary())
            elif t in _DIVIDE:
                self.take()
                factors.append(("inv", self.unary()))
            elif self.starts_atom(t):
                factors.append(self.power())
            else:
                break
        return factors[0] if len(factors) == 1 else ("mul", factors)

    def unary(self) -> Ast:
        if self.peek() == "-":
            self.take()
            return ("neg", self.unary())
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Ast:
        base = self.postfix()
        if self.peek() in ("^", "**"):
            self.take()
            return _make_pow(base, self.unary())  # right-associative: 9^9^9 = 9^(9^9)
        return base

    def postfix(self) -> Ast:
        node = self.atom()
        while self.peek() == "!":
            self.take()
            node = _make_factorial(node)
        return node

    def starts_atom(self, t: str | None) -> bool:
        if t is None:
            return False
        if t in ("(", "{") or t[0].isalnum() or t[0] == ".":
            return True
        return t.startswith("\\") and t[1:] in _FUNCS | _GREEK | {"frac", "sqrt", "pi", "infty"}

    def group(self) -> Ast:
        if self.peek() == "{":
            self.take()
            node = self.expr()
            self.take("}")
            return node
        return self.atom()

    def atom(self) -> Ast:
        t = self.take()
        if _is_number_token(t):
            starts_term = self.i < 2 or self.toks[self.i - 2] in ("+", "-", "(", "{", "=")
            return self.mixed_number(_number(t)) if t.isdigit() and starts_term else _number(t)
        if t.isalpha() and len(t) == 1:
            return ("const", "I") if t == "i" else ("sym", t)
        if t in ("(", "{"):
            node = self.expr()
            self.take(")" if t == "(" else "}")
            return node
        name = t[1:] if t.startswith("\\") else ""
        if name == "frac":
            num = self.group()
            return ("mul", [num, ("inv", self.group())])
        if name == "sqrt":
            return self.root()
        if name == "pi":
            return ("const", "pi")
        if name == "infty":
            return ("const", "oo")
        if name in _GREEK:
            return ("sym", name)
        if name in _FUNCS:
            return self.function(name)
        raise _ParseError(f"unsupported {t!r}")

    def root(self) -> Ast:
        """'\\sqrt{x}' or '\\sqrt[n]{x}' as x^(1/n), for a constant integer 2 <= n <= MAX_EXPONENT."""
        index = Fraction(2)
        if self.peek() == "[":
            self.take()
            node = self.expr()
            self.take("]")
            try:
                index = _exact(node)
            except _NotRational:
                raise _ParseError("root index must be an integer") from None
            if index.denominator != 1 or not 2 <= index <= MAX_EXPONENT:
                raise _Unsafe(f"root index {index}")
        return _make_pow(self.group(), ("num", 1, int(index), False))

    def mixed_number(self, whole: Ast) -> Ast:
        """'2\\frac{1}{2}' is two and a half, not one: a MATH convention for mixed numbers."""
        if self.peek() != "\\frac":
            return whole
        m = re.match(r"\{(\d+)\}\{(\d+)\}", "".join(self.toks[self.i + 1:self.i + 7]))
        if not m or m.group(0) != "".join(self.toks[self.i + 1:self.i + 7]) or int(m.group(2)) == 0:
            return whole
        self.i += 7
        value = Fraction(whole[1]) + Fraction(int(m.group(1)), int(m.group(2)))
        return ("num", value.numerator, value.denominator, False)

    def function(self, name: str) -> Ast:
        """'\\sin x', '\\sin(2x)', '\\sin 2x', '\\sin^2 x'."""
        power = None
        if self.peek() == "^":
            self.take()
            power = self.group() if self.peek() == "{" else self.atom()
        if self.peek() in ("(", "{"):
            arg = self.atom()
        else:
            factors = [self.power()]
            while self.starts_atom(self.peek()) and not (self.peek() or "")[1:] in _FUNCS:
                factors.append(self.power())
            arg = factors[0] if len(factors) == 1 else ("mul", factors)
        node = ("func", name, arg)
        return node if power is None else _make_pow(node, power)


def _free_symbols(node: Any) -> set[str]:
    if isinstance(node, tuple) and node and node[0] == "sym":
        return {node[1]}
    out: set[str] = set()
    if isinstance(node, (tuple, list)):
        for child in node[1:] if isinstance(node, tuple) else node:
            out |= _free_symbols(child)
    return out


def _has(node: Any, kind: str, value: Any = None) -> bool:
    """Whether the AST contains a node of ``kind`` (with first field ``value`` if given)."""
    if isinstance(node, tuple) and node and node[0] == kind and (value is None or node[1] == value):
        return True
    children = node[1:] if isinstance(node, tuple) else node if isinstance(node, list) else ()
    return any(_has(c, kind, value) for c in children)


def _make_pow(base: Ast, exp: Ast) -> Ast:
    """Build base^exp, refusing constant exponents or results too large to handle quickly."""
    if not _free_symbols(exp):
        try:
            e: Fraction | complex = _exact(exp)
        except _NotRational:
            try:
                e = _approx(exp, {})
            except _EvalError:
                raise _Unsafe("exponent cannot be evaluated") from None
        if abs(e) > MAX_EXPONENT:
            raise _Unsafe("exponent too large")
        if isinstance(e, Fraction) and not _free_symbols(base):
            try:
                b = _exact(base)
            except _NotRational:
                b = None
            if b is not None and abs(e) * max(b.numerator.bit_length(), b.denominator.bit_length()) > MAX_BITS:
                raise _Unsafe("power too large")
    return ("pow", base, exp)


def _make_factorial(x: Ast) -> Ast:
    if not _free_symbols(x):
        try:
            n = _exact(x)
        except _NotRational:
            raise _Unsafe("factorial of a non-rational") from None
        if n.denominator != 1 or not 0 <= n <= MAX_FACTORIAL:
            raise _Unsafe(f"factorial of {n}")
    return ("fact", x)


def parse_math(text: str) -> Ast:
    """AST of a normalized scalar answer; raises _ParseError (or _Unsafe) on anything else."""
    if len(text) > MAX_PARSE_CHARS:
        raise _Unsafe("too long")
    try:
        return _Parser(text).parse()
    except RecursionError:
        raise _Unsafe("nested too deeply") from None


# --------------------------------------------------------------------------------------------
# In-process evaluation: exact rationals, and complex floats for irrationals / probing
# --------------------------------------------------------------------------------------------

class _EvalError(Exception):
    pass


def _nth_root(x: Fraction, n: int) -> Fraction:
    """Exact n-th root of a rational, or _NotRational."""
    def iroot(k: int) -> int:
        r = round(k ** (1.0 / n)) if k < 2 ** 1000 else None
        if r is None:
            raise _NotRational
        for c in (r - 1, r, r + 1):
            if c >= 0 and c ** n == k:
                return c
        raise _NotRational

    if x < 0:
        if n % 2 == 0:
            raise _NotRational
        return -_nth_root(-x, n)
    return Fraction(iroot(x.numerator), iroot(x.denominator))


def _exact(node: Ast) -> Fraction:
    """Exact value of a rational constant expression, else _NotRational."""
    kind = node[0]
    if kind == "num":
        return Fraction(node[1], node[2])
    if kind == "add":
        return sum((_exact(t) for t in node[1]), Fraction(0))
    if kind == "mul":
        out = Fraction(1)
        for f in node[1]:
            out *= _exact(f)
        return out
    if kind == "neg":
        return -_exact(node[1])
    if kind == "inv":
        v = _exact(node[1])
        if v == 0:
            raise _NotRational  # undefined; the float path reports it
        return 1 / v
    if kind == "pow":
        b, e = _exact(node[1]), _exact(node[2])
        if abs(e) > MAX_EXPONENT or abs(e) * max(b.numerator.bit_length(), b.denominator.bit_length()) > MAX_BITS:
            raise _NotRational
        if b == 0 and e <= 0:
            raise _NotRational
        root = b if e.denominator == 1 else _nth_root(b, e.denominator)
        return root ** e.numerator
    if kind == "fact":
        n = _exact(node[1])
        if n.denominator != 1 or not 0 <= n <= MAX_FACTORIAL:
            raise _NotRational
        return Fraction(math.factorial(int(n)))
    raise _NotRational


def _cot(z: complex) -> complex:
    return 1 / cmath.tan(z)


_CFUNCS = {"sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "cot": _cot,
           "sec": lambda z: 1 / cmath.cos(z), "csc": lambda z: 1 / cmath.sin(z),
           "arcsin": cmath.asin, "arccos": cmath.acos, "arctan": cmath.atan,
           "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh,
           "log": cmath.log, "ln": cmath.log, "exp": cmath.exp}


def _approx(node: Ast, env: dict[str, complex]) -> complex:
    """Complex float value; _EvalError when undefined, infinite or overflowing."""
    try:
        return _approx_raw(node, env)
    except (OverflowError, ZeroDivisionError, ValueError, KeyError) as e:
        raise _EvalError(str(e)) from None


def _approx_raw(node: Ast, env: dict[str, complex]) -> complex:
    kind = node[0]
    if kind == "num":
        return complex(node[1] / node[2])
    if kind == "sym":
        return env[node[1]]
    if kind == "const":
        if node[1] == "oo":
            raise ValueError("infinity")
        return complex(math.pi) if node[1] == "pi" else 1j
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


def _close(a: complex, b: complex, rel: float) -> bool:
    diff = abs(a - b)
    return diff <= rel * max(abs(a), abs(b)) or diff <= 1e-12


_PROBES = 3


def _probe(a: Ast, b: Ast, names: set[str], ratio: bool) -> bool | None:
    """Compare at random points: False on a clear difference, True after agreeing points, None if no
    point could be evaluated. With ``ratio`` the values must be proportional (equations)."""
    rng = random.Random(0)
    agreed, scale = 0, None
    for _ in range(4 * _PROBES):
        env = {n: complex(rng.uniform(0.3, 2.7)) for n in sorted(names)}
        try:
            va, vb = _approx(a, env), _approx(b, env)
        except _EvalError:
            continue
        if ratio:
            if abs(vb) < 1e-9 or abs(va) < 1e-9:
                continue
            r = va / vb
            scale = r if scale is None else scale
            if not _close(r, scale, 1e-7):
                return False
        elif not _close(va, vb, 1e-7):
            return False
        agreed += 1
        if agreed == _PROBES:
            return True
    return None


# --------------------------------------------------------------------------------------------
# Scalar comparison
# --------------------------------------------------------------------------------------------

def _is_text(s: str) -> bool:
    """A word answer ('Evelyn', 'even', 'ellipse'): three letters in a row outside a command."""
    return re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}", s) is not None


def _base_digits(s: str) -> tuple[str, str | None] | None:
    """'52_8' -> ('52', '8'); '52' -> ('52', None); else None ('x_1' is a variable, not a base)."""
    m = re.fullmatch(r"([0-9][0-9A-Za-z]*)(?:_(\d+))?", s)
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
    except _ParseError:
        return False
    return _ast_equal(ta, tb, deadline)


def _canonical(node: Any) -> Any:
    """Flatten and sort sums and products, fold their numbers, write -x as (-1)*x: commuted
    spellings ('2\\sqrt{3}' and '\\sqrt{3}\\cdot 2', '6-5i' and '-5i+6') then match without sympy."""
    if not isinstance(node, tuple) or node[0] in ("num", "sym", "const"):
        return ("num", node[1], node[2], False) if node[0] == "num" else node
    if node[0] == "neg":
        return _canonical(("mul", [("num", -1, 1, False), node[1]]))
    if node[0] not in ("add", "mul"):
        return (node[0],) + tuple(c if isinstance(c, str) else _canonical(c) for c in node[1:])
    flat: list[Any] = []
    for child in map(_canonical, node[1]):
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
    if ta == tb or _canonical(ta) == _canonical(tb):
        return True
    if (ta[0] == "eq") != (tb[0] == "eq"):
        return False
    if _has(ta, "const", "oo") or _has(tb, "const", "oo"):
        return False  # infinities only match spelled the same way (ta == tb above)
    names = _free_symbols(ta) | _free_symbols(tb)
    if ta[0] == "eq":
        diff_a = ("add", [ta[1], ("neg", ta[2])])
        diff_b = ("add", [tb[1], ("neg", tb[2])])
        if _probe(diff_a, diff_b, names, ratio=True) is False:
            return False
        return _symbolic_equal(diff_a, diff_b, "ratio", deadline)
    if names:
        if _probe(ta, tb, names, ratio=False) is False:
            return False
        return _symbolic_equal(ta, tb, "diff", deadline)
    return _numbers_equal(ta, tb, deadline)


def _numbers_equal(ta: Ast, tb: Ast, deadline: float) -> bool:
    """Exact for integers and fractions; within REL_TOL when a decimal is written; otherwise floats
    reject and sympy confirms (so 1000 and sqrt(1000001) are not 'equal within 1e-6')."""
    decimal = _has_decimal(ta) or _has_decimal(tb)
    try:
        fa, fb = _exact(ta), _exact(tb)
        if not decimal:
            return fa == fb
        return abs(fa - fb) <= Fraction(REL_TOL) * max(abs(fa), abs(fb))
    except _NotRational:
        pass
    try:
        za, zb = _approx(ta, {}), _approx(tb, {})
    except _EvalError:
        return False
    if not _close(za, zb, REL_TOL):
        return False
    return decimal or _symbolic_equal(ta, tb, "diff", deadline)


def _has_decimal(node: Any) -> bool:
    if isinstance(node, tuple) and node and node[0] == "num":
        return bool(node[3])
    children = node[1:] if isinstance(node, tuple) else node if isinstance(node, list) else ()
    return any(_has_decimal(c) for c in children)


# --------------------------------------------------------------------------------------------
# Symbolic check in a killable worker process
# --------------------------------------------------------------------------------------------

class _Worker:
    """A persistent `python` child that builds sympy objects from ASTs and answers 1/0 per line.

    A plain subprocess (not multiprocessing) so it neither forks a threaded parent (torch) nor
    re-imports the caller's __main__. A child that runs out of time is killed and a replacement is
    spawned at once, so its start-up overlaps whatever the caller does next.
    """

    STARTUP_TIMEOUT = 60.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._owner = 0  # pid that started it; a forked child must not use the parent's pipe
        self._buf = b""
        self._lock = threading.Lock()

    def _spawn(self) -> None:
        boot = ("import sys\nif sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"
                "import importlib.util as u\n"
                f"s = u.spec_from_file_location('_treesearch_grading_worker', {os.path.abspath(__file__)!r})\n"
                "m = sys.modules[s.name] = u.module_from_spec(s); s.loader.exec_module(m); m._serve()\n")
        self._proc = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, bufsize=0)
        self._ready, self._owner, self._buf = False, os.getpid(), b""

    def _ready_proc(self) -> subprocess.Popen[bytes]:
        """The running child, spawning it and waiting for its 'ready' line if needed."""
        if self._proc is not None and self._owner != os.getpid():
            self._proc = None  # inherited through fork: the pipe belongs to the parent
        if self._proc is not None and self._proc.poll() is not None:
            self.stop()
        if self._proc is None:
            self._spawn()
        if not self._ready:
            if self._read_line(self.STARTUP_TIMEOUT) != b"ready":
                self.stop()
                raise RuntimeError("grading worker failed to start")
            self._ready = True
        assert self._proc is not None
        return self._proc

    def _read_line(self, timeout: float) -> bytes | None:
        """One line from the child within ``timeout`` seconds, else None."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.strip()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._owner == os.getpid():
            proc.kill()
            proc.wait()

    def check(self, payload: dict[str, Any], deadline: float) -> bool:
        """True iff the child proves equality before ``deadline`` (time.monotonic(), not counting
        its start-up); running out of time or any failure is False."""
        with self._lock:
            started = time.monotonic()
            try:
                proc = self._ready_proc()
                left = deadline - started  # start-up time is not the answer's fault
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(payload).encode() + b"\n")
                answer = self._read_line(left) if left > 0 else None
            except (OSError, RuntimeError):
                answer = None
            if answer in (b"0", b"1"):
                return answer == b"1"
            self.stop()
            if self._owner == os.getpid():
                self._spawn()  # warm a replacement while the caller moves on
            return False


_WORKER = _Worker()
atexit.register(_WORKER.stop)


def _symbolic_equal(a: Ast, b: Ast, mode: str, deadline: float) -> bool:
    return _WORKER.check({"mode": mode, "a": a, "b": b}, deadline)


def _to_sympy(node: Any, sp: Any) -> Any:
    """Sympy object from an AST via constructors only (never from a string)."""
    kind = node[0]
    if kind == "num":
        return sp.Rational(int(node[1]), int(node[2]))
    if kind == "sym":
        if not re.fullmatch(r"[A-Za-z]+", node[1]):
            raise ValueError("bad symbol")
        return sp.Symbol(node[1])
    if kind == "const":
        return {"pi": sp.pi, "I": sp.I, "oo": sp.oo}[node[1]]
    if kind == "add":
        return sp.Add(*(_to_sympy(t, sp) for t in node[1]))
    if kind == "mul":
        return sp.Mul(*(_to_sympy(f, sp) for f in node[1]))
    if kind == "neg":
        return -_to_sympy(node[1], sp)
    if kind == "inv":
        return sp.Pow(_to_sympy(node[1], sp), -1)
    if kind == "pow":
        return sp.Pow(_to_sympy(node[1], sp), _to_sympy(node[2], sp))
    if kind == "fact":
        return sp.factorial(_to_sympy(node[1], sp))
    if kind == "func":
        funcs = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
                 "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
                 "tanh": sp.tanh, "log": sp.log, "ln": sp.log, "exp": sp.exp}
        return funcs[node[1]](_to_sympy(node[2], sp))
    raise ValueError(f"unknown node {kind!r}")


def _worker_check(request: dict[str, Any]) -> bool:
    import sympy as sp

    a, b = _to_sympy(request["a"], sp), _to_sympy(request["b"], sp)
    if request["mode"] == "ratio":  # equations: lhs-rhs equal up to a nonzero constant
        if b == 0:
            return a == 0
        r = sp.simplify(a / b)
        return not r.free_symbols and r.is_finite is True and r.is_zero is False
    d = a - b
    if d == 0 or sp.simplify(d) == 0:
        return True
    return d.equals(0) is True


def _serve() -> None:
    """Worker main loop: one JSON request per line in, '1' or '0' per line out."""
    try:
        import resource
        limit = 2 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a runaway simplify dies instead of swapping
    except (ImportError, ValueError, OSError):
        pass
    import sympy  # noqa: F401  (import before 'ready' so the first timeout measures work, not import)

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            ok = _worker_check(json.loads(line))
        except Exception:  # any failure to prove equality is "not equal"
            ok = False
        out.write("1\n" if ok else "0\n")
        out.flush()


# --------------------------------------------------------------------------------------------
# Public comparison
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=65536)
def _equal_normalized(a: str, b: str, timeout: float) -> bool:
    """Cached: answer voting compares the same few strings many times."""
    if a == b:
        return True
    try:
        return _nodes_equal(_structure(a), _structure(b), time.monotonic() + timeout)
    except (ArithmeticError, ValueError, RecursionError):  # odd input must grade as wrong, not crash a run
        return False


def is_equivalent(pred: str | None, gold: str | None, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether a predicted final answer equals the gold one (never executes ``pred``).

    Integers and fractions compare exactly; once a decimal is written, within a relative 1e-6.
    Percent signs, degrees, units and '\\text{}' words are dropped ('50\\%' equals '50', as in
    PRM800K), tuples and intervals compare in order with their brackets, sets and comma lists in any
    order. Equal normalized strings and numbers are decided in process; symbolic checks run in a
    worker bounded by ``timeout`` seconds, and a timeout counts as not equal.
    """
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if pred == gold:
        return bool(pred)
    if len(pred) > MAX_INPUT_CHARS or len(gold) > MAX_INPUT_CHARS:
        return False
    a, b = normalize_answer(pred), normalize_answer(gold)
    if not a or not b:
        return False
    return _equal_normalized(a, b, float(timeout))


def grade(pred: str | None, gold: str | None) -> bool:
    """``is_equivalent`` with the default time limit: the ``equal`` function for answer voting."""
    return is_equivalent(pred, gold)

