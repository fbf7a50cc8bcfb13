"""Particle filtering (Puri et al. 2025, as shipped by its_hub): PRM-weighted resampling of partial solutions.

Each of N particles is a partial solution. Every round the unfinished particles advance one
step, the PRM scores the new steps, and the particles are weighted by their current scores
(softmax(score / T), the paper's choice, or proportional to the score). When the weights get
uneven (effective sample size below ``ess_threshold`` times the number of unfinished
particles; 1.0 resamples every round, as the paper does) the unfinished particles are
resampled: good prefixes are continued several times, poor ones dropped, and the count of
unfinished particles stays the same. A node resampled k times is expanded with width k, so
its copies take k independent next steps. Unlike beam search and REBASE, which keep the
best prefixes deterministically, the draw keeps some low-score prefixes alive, which is the
paper's point: the PRM is a noisy likelihood, not a ranking to trust.

Choices here, against its_hub: weights are the current step's score (not accumulated over
rounds: the PRM's score of a prefix already judges the whole prefix); finished particles
leave the pool and are never resampled away (its_hub resamples them with the rest), so
exactly N solutions come back, as for the other algorithms at budget N; its_hub weights by
softmax(logit(score)). Resampling draws come from ``random.Random`` seeded by a blake2b hash
of (seed, question, round), so a rerun grows the same tree.

Particle Gibbs (several iterations, each conditioned on a reference particle from the
last) is not implemented: free particles that resample onto the reference path must draw
fresh next steps from nodes that already have a child, and the Runner seeds an expansion
by (problem, node), so re-expanding a node repeats the draws it already made. It needs a
Runner change (a fresh seed per re-expansion), not a second class here.
"""
from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..tree import Node, Tree
from ..work import Search, expand, score

WEIGHTINGS = ("softmax", "score")
RESAMPLINGS = ("multinomial", "systematic")


def particle_weights(scores: Sequence[float], temperature: float, weighting: str) -> list[float]:
    """Normalized weights: softmax(score / temperature), or proportional to the (non-negative) scores."""
    if not scores:
        return []
    if weighting == "softmax":
        top = max(scores)
        raw = [math.exp((s - top) / temperature) for s in scores]  # shift by max: same ratios, no overflow
    elif weighting == "score":
        if min(scores) < 0:
            raise ValueError(f"weighting='score' needs scores >= 0, got {min(scores)}")
        raw = list(scores) if sum(scores) > 0 else [1.0] * len(scores)
    else:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    total = sum(raw)
    return [r / total for r in raw]


def effective_sample_size(weights: Sequence[float]) -> float:
    """1 / sum(w^2) of the normalized weights: n when uniform, 1 when one particle has it all."""
    total = sum(weights)
    return 1.0 / sum((w / total) ** 2 for w in weights)


def systematic_resample(weights: Sequence[float], n: int, rng: random.Random) -> list[int]:
    """Copies per particle from n evenly spaced points (u + i) / n, one draw u = rng.random()."""
    cum = [0.0] * len(weights)
    acc, total = 0.0, sum(weights)
    for i, w in enumerate(weights):
        acc += w / total
        cum[i] = acc
    counts = [0] * len(weights)
    u = rng.random()
    for i in range(n):
        counts[min(bisect_right(cum, (u + i) / n), len(weights) - 1)] += 1  # min: float noise at the end
    return counts


def multinomial_resample(weights: Sequence[float], n: int, rng: random.Random) -> list[int]:
    """Copies per particle from n independent draws by weight."""
    counts = [0] * len(weights)
    for i in rng.choices(range(len(weights)), weights=weights, k=n):
        counts[i] += 1
    return counts


def round_rng(seed: int, question: str, round_: int) -> random.Random:
    """The resampling RNG of one round: a stable hash, the same in every Python run."""
    digest = hashlib.blake2b(f"{seed}\x1f{question}\x1f{round_}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


@dataclass(frozen=True)
class ParticleFiltering:
    """``particles`` = N solutions; weights by ``weighting`` at ``temperature``; resample below the ESS threshold."""

    particles: int = 16
    temperature: float = 1.0
    weighting: str = "softmax"
    resampling: str = "multinomial"
    ess_threshold: float = 1.0
    seed: int = 0
    budget_param: ClassVar[str | None] = "particles"
    needs_prm: ClassVar[bool] = True
    independent_samples: ClassVar[bool] = False
    name: str = "particle_filtering"

    def __post_init__(self) -> None:
        if self.particles < 1:
            raise ValueError(f"ParticleFiltering.particles must be >= 1, got {self.particles}")
        if not self.temperature > 0:
            raise ValueError(f"ParticleFiltering.temperature must be > 0, got {self.temperature}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"ParticleFiltering.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.resampling not in RESAMPLINGS:
            raise ValueError(f"ParticleFiltering.resampling must be one of {RESAMPLINGS}, got {self.resampling!r}")
        if not 0 < self.ess_threshold <= 1:
            raise ValueError(f"ParticleFiltering.ess_threshold must be in (0, 1], got {self.ess_threshold}")

    def __call__(self, tree: Tree) -> Search:
        resample = systematic_resample if self.resampling == "systematic" else multinomial_resample
        (frontier,) = yield from expand([tree.root], self.particles)
        finished: list[Node] = []
        round_ = 0
        while frontier:
            scores = yield from score(frontier)
            finished.extend(n for n in frontier if n.terminal)
            open_ = [(n, s) for n, s in zip(frontier, scores) if not n.terminal]
            if not open_:
                break
            weights = particle_weights([s for _, s in open_], self.temperature, self.weighting)
            if self.ess_threshold >= 1 or effective_sample_size(weights) < self.ess_threshold * len(open_):
                copies = resample(weights, len(open_), round_rng(self.seed, tree.question, round_))
            else:
                copies = [1] * len(open_)
            kept = [(n, k) for (n, _), k in zip(open_, copies) if k > 0]
            children = yield from expand([n for n, _ in kept], [k for _, k in kept])
            frontier = [c for kids in children for c in kids]
            round_ += 1
        return finished
