"""Normalisation: a canonical string per answer, so most equal answers become equal strings.

In the spirit of Hendrycks' MATH normaliser and the PRM800K grader: math delimiters, boxes, LaTeX
spacing and sizing, degrees, percent signs and words, units and ``\\text{}`` words go; fractions
and roots get braced arguments; a name on the left ('x = 5', '(p,q) = (3,2)', '|AB| = 1') and the
working of a chain ('x = 5+5+1 = 11') go; 'and'/'or'/';' separate list items. Only ASCII 0-9 are
digits: other Unicode digits are left as they are (see docs/grading.md).
"""
from __future__ import annotations

import re

from treesearch.answers import boxed_answer, brace_pairs, strip_math_delimiters

from .policy import DEFAULT_POLICY, GradingPolicy

MAX_INPUT_CHARS = 1000  # longer 'final answers' are not graded (real ones are < 100 chars)

_UNITS = (
    r"units?|degrees?|radians?|cm|mm|km|centimeters?|millimeters?|kilometers?|meters?|inch(?:es)?|feet|foot|ft"
    r"|yards?|miles?|mph|seconds?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?|cents?|dollars?"
    r"|pounds?|lbs?|ounces?|oz|grams?|kg|kilograms?|liters?|litres?|gallons?|cups?"
    r"|percent(?:age)?(?:\s*points?)?|per\s*cent|pct"
)
_TRAILING_UNIT = re.compile(
    rf"\s*(?:(?<![a-zA-Z\\])(?:sq(?:uare)?|cubic)\s*)?(?<![a-zA-Z\\])(?:{_UNITS})(?![a-zA-Z])"
    r"(?:\s*\^\s*\{?[0-9]\}?)?\s*$"
)
_TEXT_CMDS = re.compile(r"\\(?:mbox|textrm|textbf|textit|textnormal|textup|mathrm|mathbf|mathit|operatorname)"
                        r"(?![a-zA-Z])")
_THOUSANDS = re.compile(r"-?[1-9][0-9]{0,2}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DECIMAL_COMMA = re.compile(r"(-?)0,([0-9]+)")  # '0,111' is 0.111: no thousands grouping starts with 0
_DOT_THOUSANDS = re.compile(r"-?[1-9][0-9]{0,2}(?:\.[0-9]{3})+,[0-9]+")  # '2.500,75': the later mark is the decimal
_ANY_COMMA_DECIMAL = re.compile(r"-?[0-9]+,[0-9]+")  # '3,45' under the decimal_comma policy
_CURRENCY = re.compile(r"[€£¥]|\\(?:euro|pounds)(?![a-zA-Z])")
_QUAD = "\x01"  # '\\quad' between two answers separates them; at either end it is spacing
_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "π": "\\pi ", "∞": "\\infty ",
            "√": "\\sqrt ", "≤": "\\le ", "≥": "\\ge ", "∪": "\\cup ", "∈": "\\in ", "≈": "\\approx ",
            "°": "^\\circ", "²": "^{2}", "³": "^{3}", "\u00a0": " "}
_COMPARISONS = {"\\leq": "\\le", "\\geq": "\\ge", "\\leqslant": "\\le", "\\geqslant": "\\ge", "\\lt": "<",
                "\\gt": ">", "\\thickapprox": "\\approx", "\\simeq": "\\approx", "\\neq": "\\ne"}
_OPEN, _CLOSE = "([{", ")]}"


def match_brace(text: str, i: int) -> int | None:
    """Index of the '}' closing the '{' at ``text[i]``, or None if it never closes."""
    return brace_pairs(text).get(i)


def split_top(s: str, sep: str) -> list[str]:
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


def _unwrap_command(s: str, command: re.Pattern[str]) -> str:
    """'\\cmd{X}' -> 'X' while the whole string is one such group."""
    while True:
        m = command.match(s)
        if not m:
            return s
        j = m.end()
        while j < len(s) and s[j] == " ":
            j += 1
        if j >= len(s) or s[j] != "{" or match_brace(s, j) != len(s) - 1:
            return s
        s = s[j + 1:-1].strip()


_WHOLE_TEXT = re.compile(r"\\text(?![a-zA-Z])")


def _strip_spacing(s: str) -> str:
    """Remove LaTeX spacing commands (\\! \\, \\; \\: '\\ ') but keep '\\\\' row breaks."""
    keep = {"\\\\": "\\\\", "\\!": ""}
    return re.sub(r"\\\\|\\[!,;: ]|\\q?quad(?![a-zA-Z])",
                  lambda m: _QUAD if "quad" in m.group(0) else keep.get(m.group(0), " "), s)


def _quad_lists(s: str) -> str:
    """'x = 2 \\quad x = -3' lists two answers; a '\\quad' at either end, or beside a comma, is spacing."""
    if _QUAD not in s:
        return s
    s = re.sub(rf"[\s{_QUAD}]*{_QUAD}[\s{_QUAD}]*", ", ", s)
    s = re.sub(r"(?:,\s*){2,}", ", ", s)
    return s.strip().strip(",").strip()


def _strip_text(s: str) -> str:
    """Unwrap an all-text answer; elsewhere treat \\text{...} as units/words and drop it."""
    s = _TEXT_CMDS.sub(r"\\text", s)
    s = _unwrap_command(s, _WHOLE_TEXT)
    s = re.sub(r"\\text\{\s*(?:and|or)\s*\}", ",", s)
    stripped = re.sub(r"\\text\{[^{}]*\}(?:\s*\^\s*\{?[0-9]\}?)?", " ", s).strip()
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
                end = match_brace(s, a.start(1))
                if end is None:
                    break
                out.append("{" + _brace_arguments(s[a.start(1) + 1:end]) + "}")
                i = end + 1
            else:
                out.append("{" + a.group(1) + "}")
                i = a.end()
    out.append(s[i:])
    return "".join(out)


# A name standing left of '=': x, x_1, a_{10}, \theta, f(x), f(2), AB, |AB|, \overline{AB}, m\angle ABC,
# \angle A, and tuples of names such as (p,q).
_NAME = (r"(?:[a-zA-Z](?:_[0-9]|_\{[0-9a-zA-Z]+\})?|\\[a-zA-Z]+|[a-zA-Z]\([^()=]*\)|[A-Z]{2,3}|\|[A-Za-z]{1,3}\|"
         r"|\\overline\{[A-Z]{2}\}|(?:m\s*)?\\angle\s*[A-Z]{1,3})")
_RATIO_NAME = rf"(?:{_NAME}(?:\s*:\s*{_NAME})+|\\frac\{{[A-Z]{{1,3}}\}}\{{[A-Z]{{1,3}}\}})"  # 'A_1:A_2', '\\frac{PQ}{QR}'
_LHS_NAME = re.compile(rf"\s*(?:{_NAME}|{_RATIO_NAME}|\(\s*{_NAME}(?:\s*,\s*{_NAME})+\s*\))\s*")
_PLAIN_NUMBER = re.compile(r"\s*-?[0-9]+(?:\.[0-9]+)?\s*")


_WORKING = re.compile(r"(?:[0-9.+\-*/^(){}\s]|\\(?:cdot|times|div|frac|sqrt|pi)(?![a-zA-Z]))+")  # '3 \\cdot 4': arithmetic


def _is_working(s: str) -> bool:
    """Arithmetic on numbers ('5+5+1', '3 \\cdot 4'): an operation, not a bare number ('5 = 3x+b' is an equation)."""
    return (_WORKING.fullmatch(s) is not None and re.search(r"[0-9]", s) is not None
            and re.search(r"(?<=[0-9.)}\s])[-+*/^]|\\(?:cdot|times|div|frac|sqrt|pi)|[(){}]", s) is not None)


def strip_lhs(s: str) -> str:
    """The value a statement gives: 'x = 5' -> '5', '(p,q)=(3,2)' -> '(3,2)', 'x \\in [a,b]' -> '[a,b]',
    'x = 5+5+1 = 11' and '3 \\cdot 4 = 12' -> '11', '12' (the working is not the answer), 'A \\approx 0.577' -> 'A' (the
    exact value; its rounding is not compared), 'x \\approx 0.577' -> '0.577'. 'x+y=5' stays an equation."""
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in(?![a-zA-Z])\s*", "", s)
    approx = split_top(s, "\\approx")
    if len(approx) > 1:
        named = [p for p in approx if not _LHS_NAME.fullmatch(p)]
        s = named[0] if named else approx[-1]
    sides = split_top(s, "=")
    if len(sides) > 2:
        return sides[-1]
    if len(sides) == 2 and (_LHS_NAME.fullmatch(sides[0]) or _is_working(sides[0])):
        return sides[1]
    if len(sides) == 2 and _PLAIN_NUMBER.fullmatch(sides[0]) and (_LHS_NAME.fullmatch(sides[1]) or _is_working(sides[1])):
        return sides[0]  # '12 = x', '10 = 2 \\cdot 5'
    return s


_ASSIGNMENT = re.compile(rf"\s*({_NAME})\s*=\s*([^=]+?)\s*")


def _named_groups(s: str) -> str:
    """'a=2, b=3; a=5, b=3' lists two points: '(2,3), (5,3)' (each group names the same variables, in order)."""
    groups = split_top(s, ";")
    if len(groups) < 2:
        return s
    rows = []
    for g in groups:
        items = [_ASSIGNMENT.fullmatch(p) for p in split_top(g, ",")]
        if len(items) < 2 or not all(items):
            return s
        rows.append(([m.group(1) for m in items], [m.group(2) for m in items]))
    if any(names != rows[0][0] for names, _ in rows):
        return s
    return ", ".join("(" + ", ".join(values) + ")" for _, values in rows)


def _collapse_spaces(s: str) -> str:
    """Remove spaces, except one between a command and a following letter ('\\cot x')."""
    s = re.sub(r"(?<!\\)(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x00", s)
    return re.sub(r"\s+", "", s).replace("\x00", " ")


def _tidy_number(s: str) -> str:
    """Canonical spelling of a plain number: '.5'->'0.5', '18.90'->'18.9', '5.0'->'5', '3/4'->'\\frac{3}{4}'."""
    s = re.sub(r"(?<![\w}.\\])\.([0-9])", r"0.\1", s)
    if re.fullmatch(r"-?[0-9]+\.[0-9]+", s):
        s = s.rstrip("0").rstrip(".")
    m = re.fullmatch(r"(-?)([0-9]+)/([0-9]+)", s)
    if m:
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    if re.fullmatch(r"-?[0-9]+", s):
        s = str(int(s))  # '007' -> '7', '-0' -> '0'
    return s


def _numbers(s: str, policy: GradingPolicy) -> str:
    """One number's separators: '1,000' (thousands) and '0,5' (a decimal) in either policy, '2,500.75' and
    '2.500,75' (the later mark is the decimal), '3,45' only under ``decimal_comma`` (else a list)."""
    if _DOT_THOUSANDS.fullmatch(s):
        return s.replace(".", "").replace(",", ".")
    if _DECIMAL_COMMA.fullmatch(s) or (policy.decimal_comma and _ANY_COMMA_DECIMAL.fullmatch(s)):
        return s.replace(",", ".")
    if _THOUSANDS.fullmatch(s):
        return s.replace(",", "")
    return s


def normalize_answer(s: str | None, policy: GradingPolicy = DEFAULT_POLICY, keep_lhs: bool = False) -> str:
    """A canonical string for an answer, so most equal answers become equal strings (``keep_lhs``: an
    equation keeps its left side, 'y = 2x+3' stays a line, to compare with an equation)."""
    if s is None:
        return ""
    s = str(s).strip()
    if len(s) > MAX_INPUT_CHARS:
        return s
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = strip_math_delimiters(s.replace("\\$", "")).replace("$", "").strip()
    s = _CURRENCY.sub("", s)
    s = re.sub(r"(?<!\\)\\\s*$", "", s).strip()  # '42\\': a stray trailing backslash
    if "\\boxed" in s or "\\fbox" in s:
        s = boxed_answer(s) or s
    s = re.sub(r"\\(?:displaystyle|textstyle)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\(?:left|right)(?:\.|(?![a-zA-Z]))", "", s)
    s = re.sub(r"\\(?:bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])", "", s)
    s = re.sub(r",\\!\s*", ",", s)  # '10,\!080': LaTeX-formatted thousands
    s = _strip_spacing(s)
    s = re.sub(r"\\(?:[a-zA-Z]+)(?![a-zA-Z])", lambda m: _COMPARISONS.get(m.group(0), m.group(0)), s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"\\(?:mathrm|mathit|operatorname)\s*\{\s*([ei])\s*\}", r"\1", s)  # Euler's e, the unit i: not words
    s = _strip_text(s)
    s = _strip_units(s)
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = _brace_arguments(s)
    s = _quad_lists(s)
    s = re.sub(r"\s+", " ", s).replace("{,}", ",").strip()
    s = _numbers(s, policy)
    s = re.sub(r"<=|=<", "\\\\le ", s)
    s = re.sub(r">=|=>", "\\\\ge ", s)
    s = re.sub(r"(?<=[a-zA-Z\s])!=", "\\\\ne ", s)
    s = _named_groups(s)
    s = re.sub(r"\s*;\s*|\s+(?:and|or)\s+", ", ", s)  # '1; 2', '1 and 2', 'x=1 or x=2' list their items
    if len(split_top(s, ",")) == 1 and not keep_lhs:
        s = strip_lhs(s).strip()
    s = _collapse_spaces(s)
    s = s.rstrip(".")
    if len(s) > 1 and s[0] == "{" and match_brace(s, 0) == len(s) - 1:
        s = s[1:-1]
    s = re.sub(r"_\{([0-9]+)\}", r"_\1", s)
    choice = re.fullmatch(r"\(([A-Ea-e])\)", s)
    if choice:
        s = choice.group(1).upper()
    return _tidy_number(s)
