"""The graders a config names (``dataset.grader``): answer equivalence ``fn(answer, gold) -> bool``.

Built in: "exact" (normalized strings), "math" (the safe symbolic grader), "math_verify" (the
optional Math-Verify, for cross-checks); a plug-in adds its own with ``@register_grader("mine")``
and a config names it like the others (or by import path ``pkg.mod:fn``). Built-ins are made on
first use, so naming "exact" never imports sympy.
"""
from __future__ import annotations

from typing import Callable

Grader = Callable[[str, str], bool]

_FACTORIES: dict[str, Callable[[], Grader]] = {}


def register_grader(name: str) -> Callable[[Grader], Grader]:
    """Decorator: the grader function itself, named ``name`` in configs."""
    def add(fn: Grader) -> Grader:
        if name in _FACTORIES:
            raise ValueError(f"grader {name!r} is registered already")
        _FACTORIES[name] = lambda: fn
        return fn

    return add


def available_graders() -> list[str]:
    return sorted(_FACTORIES)


def make_grader(name: str) -> Grader:
    """The grader registered as ``name``; ValueError (with the fix) for one that is unknown or unavailable."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown grader {name!r}: use auto, {', '.join(available_graders())} or 'pkg.mod:fn'")
    return _FACTORIES[name]()


def _exact() -> Grader:
    from treesearch.voting import normalized_equal
    return normalized_equal


def _math() -> Grader:
    from .grading import grade
    return grade


def _math_verify() -> Grader:
    from .grading import math_verify
    if not math_verify.available():
        raise ValueError(math_verify.MISSING)
    return math_verify.grade


_FACTORIES.update(exact=_exact, math=_math, math_verify=_math_verify)
