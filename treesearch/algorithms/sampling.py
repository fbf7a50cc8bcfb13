"""Sampling baselines: greedy decoding and N independent full solutions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..tree import Tree
from ..work import Search, complete, expand


@dataclass(frozen=True)
class Sampling:
    """N complete solutions sampled independently; majority / best-of-N / weighted voting pick the answer."""

    n: int = 16
    budget_param: ClassVar[str | None] = "n"
    needs_prm: ClassVar[bool] = False
    independent_samples: ClassVar[bool] = True
    name: str = "sampling"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"Sampling.n must be >= 1, got {self.n}")

    def __call__(self, tree: Tree) -> Search:
        (first,) = yield from expand([tree.root], self.n)
        return (yield from complete(first))


@dataclass(frozen=True)
class Greedy:
    """One solution at temperature 0."""

    budget_param: ClassVar[str | None] = None
    needs_prm: ClassVar[bool] = False
    name: str = "greedy"

    def __call__(self, tree: Tree) -> Search:
        (first,) = yield from expand([tree.root], 1, greedy=True)
        return (yield from complete(first, greedy=True))
