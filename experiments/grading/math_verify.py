"""The optional Math-Verify grader, for cross-checks: ``grader: math_verify`` in a config.

Math-Verify (Hugging Face's ``math-verify``, ``pip install "math-verify>=0.7"``) is the grader
many open reproductions report with; grading a study with it as well shows how much of a difference
between numbers is the grader's (``python -m experiments.grading.crosscheck``). The project's grader
stays the default.

Only its LaTeX extraction is used: its plain-expression extraction hands model text to sympy's
``parse_expr``, which calls ``eval``. Its time limits use ``signal.alarm``, so call it from the main
thread. A bare answer is wrapped in ``$...$`` so Math-Verify reads it as LaTeX, as its docs advise.
"""
from __future__ import annotations

import functools
import importlib.util
from typing import Any

MISSING = 'grader math_verify needs the math-verify package: pip install "math-verify>=0.7" (or, in a clone, pip install -e ".[math-verify]")'


def available() -> bool:
    return importlib.util.find_spec("math_verify") is not None


@functools.lru_cache(maxsize=1)
def _library() -> tuple[Any, Any, Any]:
    if not available():
        raise ImportError(MISSING)
    from math_verify import LatexExtractionConfig, parse, verify

    return parse, verify, [LatexExtractionConfig()]


def _as_latex(answer: str) -> str:
    """Math-Verify finds answers inside math delimiters or boxes; a bare answer gets '$...$'."""
    marked = any(m in answer for m in ("$", "\\boxed", "\\(", "\\["))
    return answer if marked else f"${answer}$"


def grade(pred: str | None, gold: str | None) -> bool:
    """Math-Verify's verdict on ``pred`` (an answer, or a whole solution) against ``gold``."""
    if not pred or not gold:
        return False
    parse, verify, config = _library()
    try:
        return bool(verify(parse(_as_latex(gold), extraction_config=config),
                           parse(_as_latex(pred), extraction_config=config)))
    except Exception:  # an outside library's failure to read an answer grades it wrong, as ours does
        return False
