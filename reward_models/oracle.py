"""Reference verifiers: an exact step checker used as a PRM, and the same checker made wrong at a set rate.

Why they exist: they bound what any learned PRM can buy. The checker is the ceiling (search
with a perfect verifier); flipping a share of its verdicts shows how fast verifier errors
eat the gain (the "imperfect verifier" axis of inference scaling). Both cost no FLOPs.

A flip is decided per step by a hash of (seed, question, steps up to that step), so the
same chain always gets the same scores: the prefix cache, resumed runs and repeated
scoring of a node all agree, and different chains flip independently.

``flip="right"`` flips only verdicts that say right: a judge that rejects right steps but never
accepts wrong ones, the imperfect verifier of the repeated-sampling scaling law
(experiments.builtin.scaling_law). It uses the same draws, so its flips are exactly the
right-verdict flips of ``flip="both"`` at the same rate and seed.
"""
from __future__ import annotations

import difflib
import hashlib
import math
import typing
from dataclasses import dataclass
from typing import Callable, Sequence

from treesearch.builtin.task import on_gold_path
from treesearch.config_mapping import from_plain
from treesearch.imports import import_path
from treesearch.protocols import Chain, ChainScores

from .registry import Reference, register_prm

#: A step checker: per step, is the chain right up to and including that step?
Checker = Callable[[str, Sequence[str]], Sequence[bool]]
NOISY_FLIP_RATE = 0.2  # noisy_oracle's default
FLIPS = ("both", "right")  # which verdicts a flip may invert: any, or only "right" ones


def flip_draw(seed: int, question: str, steps: Sequence[str]) -> float:
    """A uniform number in [0, 1) fixed by the seed and the chain prefix."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(seed).encode())
    for part in (question, *steps):
        h.update(b"\x1f")
        h.update(part.encode())
    return int.from_bytes(h.digest(), "big") / 2 ** 64


@dataclass(frozen=True)
class CheckerPRM:
    """Scores ``right`` where the checker accepts the chain up to a step, ``wrong`` where it does not.

    With ``flip_rate`` p > 0 each step's verdict is inverted with probability p
    (deterministically per chain prefix, see :func:`flip_draw`); with ``flip="right"`` only
    verdicts True are (a right step is rejected with probability p, a wrong one never accepted).
    """

    check: Checker
    flip_rate: float = 0.0
    seed: int = 0
    flip: str = "both"
    right: float = 0.9
    wrong: float = 0.1
    num_parameters: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_rate <= 1.0:
            raise ValueError(f"flip_rate must lie in [0, 1], got {self.flip_rate}")
        if self.flip not in FLIPS:
            raise ValueError(f"flip must be one of {FLIPS}, got {self.flip!r}")
        if not (math.isfinite(self.right) and math.isfinite(self.wrong)):
            raise ValueError("right and wrong scores must be finite")

    def verdicts(self, question: str, steps: Sequence[str]) -> list[bool]:
        """The checker's verdict per step, after the configured flips."""
        raw = [bool(v) for v in self.check(question, list(steps))]
        if len(raw) != len(steps):
            raise ValueError(f"checker returned {len(raw)} verdicts for {len(steps)} steps")
        if self.flip_rate == 0.0:
            return raw
        out = []
        for k, v in enumerate(raw):
            if v or self.flip == "both":
                v = v != (flip_draw(self.seed, question, steps[:k + 1]) < self.flip_rate)
            out.append(v)
        return out

    def score(self, chains: Sequence[Chain]) -> list[ChainScores]:
        out = []
        for c in chains:
            if not c.steps:
                raise ValueError("a chain must have at least one step to score (got 0 steps)")
            out.append(ChainScores([self.right if v else self.wrong for v in self.verdicts(c.question, c.steps)]))
        return out


def _resolve(check: Checker | str) -> Checker:
    """A checker, or the one an import path ``"pkg.module:function"`` names (for YAML configs)."""
    if callable(check):
        return check
    if not isinstance(check, str):
        raise ValueError(f"check must be a function or an import path 'pkg.module:function', got {check!r}")
    return import_path(check)


def _check_options(**options) -> None:
    """Each option is a typed field of :class:`CheckerPRM` (``check`` is the checker entry's own, an import path)."""
    hints = typing.get_type_hints(CheckerPRM)
    for key, value in options.items():
        if key not in hints or (key == "check" and not isinstance(value, str)):
            close = difflib.get_close_matches(key, sorted(hints), n=1)
            raise ValueError(f"{key}: unknown option of the checker PRMs"
                             + (f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(hints))}"))
        if key != "check":
            from_plain(hints[key], value, key, "")
    if options.get("flip", "both") not in FLIPS:
        raise ValueError(f"flip: one of {', '.join(FLIPS)}, got {options['flip']!r}")


@register_prm("checker", check=_check_options)
def _checker(check: Checker | str, **kwargs) -> CheckerPRM:
    """Any step checker, e.g. ``{"type": "checker", "check": "my_task:verify_steps"}``."""
    return CheckerPRM(_resolve(check), **kwargs)


@register_prm("builtin_oracle", check=_check_options, reference=lambda **_: Reference(0.0))
def _builtin_oracle(**kwargs) -> CheckerPRM:
    """The built-in task's exact checker (``treesearch.builtin.task.on_gold_path``): the ceiling of any verifier."""
    return CheckerPRM(on_gold_path, **kwargs)


@register_prm("noisy_oracle", check=_check_options, reference=lambda flip_rate=NOISY_FLIP_RATE, flip="both", **_: Reference(flip_rate, flip))
def _noisy_oracle(flip_rate: float = NOISY_FLIP_RATE, **kwargs) -> CheckerPRM:
    """The built-in checker with each step's verdict flipped with probability ``flip_rate``
    (only right verdicts with ``flip="right"``)."""
    return CheckerPRM(on_gold_path, flip_rate=flip_rate, **kwargs)
