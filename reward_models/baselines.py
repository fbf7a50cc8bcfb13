"""Trivial verifiers: the floor a PRM has to beat on a benchmark, at no cost.

``constant`` calls every step right (score 1.0, or the ``score`` given: 0.0 calls every step
wrong); ``random`` draws a uniform score per step, fixed by (seed, question, steps up to it) so
that the same chain always scores the same; ``position`` scores step k (0-based) ``decay**k``, a
verifier that trusts later steps less and, at threshold 0.5 with the default 0.9, flags every
chain's eighth step.
"""
from __future__ import annotations

from .callable import CallablePRM
from .oracle import flip_draw
from .registry import register_prm


@register_prm("constant")
def _constant(score: float = 1.0) -> CallablePRM:
    def constant(question: str, steps: list[str]) -> list[float]:
        return [float(score)] * len(steps)

    return CallablePRM(constant)


@register_prm("random")
def _random(seed: int = 0) -> CallablePRM:
    def random(question: str, steps: list[str]) -> list[float]:
        return [flip_draw(seed, question, steps[:k + 1]) for k in range(len(steps))]

    return CallablePRM(random)


@register_prm("position")
def _position(decay: float = 0.9) -> CallablePRM:
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must lie in (0, 1], got {decay}")

    def position(question: str, steps: list[str]) -> list[float]:
        return [decay ** k for k in range(len(steps))]

    return CallablePRM(position)
