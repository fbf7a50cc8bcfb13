"""The graders a config names (``dataset.grader``): answer equivalence ``fn(answer, gold) -> bool``.

Built in: "exact" (normalized strings), "math" (the safe symbolic grader), "math_verify" (the
optional Math-Verify, for cross-checks); a plug-in adds its own with ``@register_grader("mine")``
and a config names it like the others, or by import path (``pkg.mod:fn``: the function itself).
An entry is a maker, so built-ins are made on first use and naming "exact" never imports sympy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from treesearch.registry import Registry

Grader = Callable[[str, str], bool]


@dataclass(frozen=True)
class GraderEntry:
    """A grader function, or a maker of one (the built-ins: their heavy import happens on first use)."""

    grader: Grader | None = None
    make: Callable[[], Grader] | None = None

    def build(self) -> Grader:
        return self.grader if self.grader is not None else self.make()


_REGISTRY: Registry[GraderEntry] = Registry("grader", wrap=lambda fn: GraderEntry(grader=fn))


def register_grader(name: str, *, overwrite: bool = False) -> Callable[[Grader], Grader]:
    """Decorator: the grader function itself, named ``name`` in configs."""
    def add(fn: Grader) -> Grader:
        _REGISTRY.add(name, GraderEntry(grader=fn), overwrite=overwrite)
        return fn

    return add


def available_graders() -> list[str]:
    return _REGISTRY.names()


def grader_entry(name: str) -> GraderEntry:
    """The entry a config names, not yet built; ValueError naming the registered ones for an unknown name."""
    return _REGISTRY.get(name)


def make_grader(name: str) -> Grader:
    """The grader a config names (registered, or an import path); ValueError with the fix for one that is
    unknown or unavailable."""
    return grader_entry(name).build()


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


for _name, _make in (("exact", _exact), ("math", _math), ("math_verify", _math_verify)):
    _REGISTRY.add(_name, GraderEntry(make=_make))
