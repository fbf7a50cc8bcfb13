"""The safe parser: a normalized scalar answer -> a plain tuple AST, never evaluating the text.

sympy's string entry points (``sympify``, ``parse_expr``, ``parse_latex``) all call ``eval``, so a
small recursive-descent parser reads LaTeX-ish and plain math instead. Exponents, roots and
factorials are bounded while parsing, so ``9^{9^{9}}`` is refused instead of computed.

Nodes: ("num", p, q, is_decimal) ("sym", name) ("const", "pi"|"E"|"I"|"oo") ("add", [..]) ("mul", [..])
       ("neg", x) ("inv", x) ("pow", base, exp) ("func", name, x) ("fact", x) ("eq", lhs, rhs)
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from .evaluate import MAX_BITS, MAX_EXPONENT, MAX_FACTORIAL, Ast, EvalError, NotRational, approx, exact

MAX_PARSE_CHARS = 500  # longer normalized scalars are not parsed (no real answer is that long)

# Nodes: ("num", p, q, is_decimal) ("sym", name) ("const", "pi"|"I"|"oo") ("add", [..]) ("mul", [..])
#        ("neg", x) ("inv", x) ("pow", base, exp) ("func", name, x) ("fact", x) ("eq", lhs, rhs)



class ParseError(ValueError):
    pass


class Unsafe(ParseError):
    """The expression would be too expensive to build or evaluate (e.g. 9^{9^{9}})."""


_FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
          "log", "ln", "exp"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
          "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}
_LETTER_CONSTANTS = {"i": "I", "e": "E"}  # the imaginary unit and Euler's number
_TIMES = {"*", "\\cdot", "\\times"}
_DIVIDE = {"/", "\\div"}
_TOKEN = re.compile(r"\s*(?:([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)|(\\[a-zA-Z]+)|(\*\*|[-+*/^(){}\[\]!=])|([a-zA-Z]))")


def _tokenize(s: str) -> list[str]:
    tokens, i = [], 0
    s = s.rstrip()
    while i < len(s):
        m = _TOKEN.match(s, i)
        if not m:
            raise ParseError(f"unexpected {s[i]!r}")
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
            raise ParseError(f"expected {expected or 'a token'}, got {t!r}")
        self.i += 1
        return t

    def parse(self) -> Ast:
        node = self.expr()
        if self.peek() == "=":
            self.take()
            node = ("eq", node, self.expr())
        if self.peek() is not None:
            raise ParseError(f"trailing {self.peek()!r}")
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
            return ("const", _LETTER_CONSTANTS[t]) if t in _LETTER_CONSTANTS else ("sym", t)
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
        raise ParseError(f"unsupported {t!r}")

    def root(self) -> Ast:
        """'\\sqrt{x}' or '\\sqrt[n]{x}' as x^(1/n), for a constant integer 2 <= n <= MAX_EXPONENT."""
        index = Fraction(2)
        if self.peek() == "[":
            self.take()
            node = self.expr()
            self.take("]")
            try:
                index = exact(node)
            except NotRational:
                raise ParseError("root index must be an integer") from None
            if index.denominator != 1 or not 2 <= index <= MAX_EXPONENT:
                raise Unsafe(f"root index {index}")
        return _make_pow(self.group(), ("num", 1, int(index), False))

    def mixed_number(self, whole: Ast) -> Ast:
        """'2\\frac{1}{2}' is two and a half, not one: a MATH convention for mixed numbers."""
        if self.peek() != "\\frac":
            return whole
        m = re.match(r"\{([0-9]+)\}\{([0-9]+)\}", "".join(self.toks[self.i + 1:self.i + 7]))
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


def free_symbols(node: Any) -> set[str]:
    if isinstance(node, tuple) and node and node[0] == "sym":
        return {node[1]}
    out: set[str] = set()
    if isinstance(node, (tuple, list)):
        for child in node[1:] if isinstance(node, tuple) else node:
            out |= free_symbols(child)
    return out


def has(node: Any, kind: str, value: Any = None) -> bool:
    """Whether the AST contains a node of ``kind`` (with first field ``value`` if given)."""
    if isinstance(node, tuple) and node and node[0] == kind and (value is None or node[1] == value):
        return True
    children = node[1:] if isinstance(node, tuple) else node if isinstance(node, list) else ()
    return any(has(c, kind, value) for c in children)


def _make_pow(base: Ast, exp: Ast) -> Ast:
    """Build base^exp, refusing constant exponents or results too large to handle quickly."""
    if not free_symbols(exp):
        try:
            e: Fraction | complex = exact(exp)
        except NotRational:
            try:
                e = approx(exp, {})
            except EvalError:
                raise Unsafe("exponent cannot be evaluated") from None
        if abs(e) > MAX_EXPONENT:
            raise Unsafe("exponent too large")
        if isinstance(e, Fraction) and not free_symbols(base):
            try:
                b = exact(base)
            except NotRational:
                b = None
            if b is not None and abs(e) * max(b.numerator.bit_length(), b.denominator.bit_length()) > MAX_BITS:
                raise Unsafe("power too large")
    return ("pow", base, exp)


def _make_factorial(x: Ast) -> Ast:
    if not free_symbols(x):
        try:
            n = exact(x)
        except NotRational:
            raise Unsafe("factorial of a non-rational") from None
        if n.denominator != 1 or not 0 <= n <= MAX_FACTORIAL:
            raise Unsafe(f"factorial of {n}")
    return ("fact", x)


def parse_math(text: str) -> Ast:
    """AST of a normalized scalar answer; raises ParseError (or Unsafe) on anything else."""
    if len(text) > MAX_PARSE_CHARS:
        raise Unsafe("too long")
    try:
        return _Parser(text).parse()
    except RecursionError:
        raise Unsafe("nested too deeply") from None

