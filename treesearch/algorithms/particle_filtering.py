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

Particle Gibbs (``ParticleGibbs``, the paper's Algorithm 2, its_hub's ``num_iterations > 1``)
runs the filter ``iterations`` times. After each run one finished particle, drawn by its weight,
becomes the *reference*; the next run is a conditional particle filter: the reference holds one
of the N slots, its particle at round r is its own recorded node (a particle is a node, so it
just moves down its path: no policy call, and its stored score, no PRM call), it is weighted
with the others, and resampling refills only the other N - 1 slots. A free particle drawn onto
the reference continues from that node with fresh steps: every expansion asks the Runner to
``redraw`` (a node that already has children gets a seed counting them), the seam adaptive
sampling added; in plain particle filtering no node is expanded twice, so its draws stay the same.
"""
from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from typing import ClassVar, Generator, Sequence

from ..tree import Node, Tree
from ..work import Search, Work, expand, score

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


def round_rng(seed: int, question: str, *key: object) -> random.Random:
    """The RNG of one draw, keyed by (seed, question, round, ...): a stable hash, the same in every Python run."""
    digest = hashlib.blake2b("\x1f".join(map(str, (seed, question, *key))).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def filter_particles(tree: Tree, pf: ParticleFiltering, n: int, reference: Sequence[Node] = (),
                     key: tuple = ()) -> Generator[Work, object, list[Node]]:
    """One particle filter of ``n`` particles, set as ``pf`` says; returns its ``n`` finished particles.

    With a ``reference`` (a finished particle's path, ``Tree.path``) it is the conditional filter of
    particle Gibbs: the reference's particle at round r is ``reference[r]``, already in the tree and
    scored, weighted with the free ones; resampling draws only the free slots (n - 1 while it is
    open), so it survives every round and keeps its steps. ``key`` sets the resampling draws apart
    from other runs' (() is particle filtering's own).
    """
    resample = systematic_resample if pf.resampling == "systematic" else multinomial_resample
    ref = reference[0] if reference else None
    todo = [(tree.root, n - (ref is not None))]  # (node, copies) to advance this round
    finished: list[Node] = []
    round_ = 0
    while True:
        todo = [(node, k) for node, k in todo if k > 0]
        # redraw: the root and the reference's nodes have children from earlier runs; new ones are new draws.
        children = yield from expand([node for node, _ in todo], [k for _, k in todo], redraw=True)
        fresh = [c for kids in children for c in kids]
        pool = list(zip(fresh, (yield from score(fresh)))) + ([(ref, ref.score)] if ref is not None else [])
        finished.extend(node for node, _ in pool if node.terminal)
        open_ = [(node, s) for node, s in pool if not node.terminal]
        if not open_:
            return finished
        held = ref is not None and not ref.terminal  # the reference is open: last in open_, its slot kept
        free = len(open_) - held
        weights = particle_weights([s for _, s in open_], pf.temperature, pf.weighting)
        if pf.ess_threshold >= 1 or effective_sample_size(weights) < pf.ess_threshold * len(open_):
            copies = resample(weights, free, round_rng(pf.seed, tree.question, round_, *key))
        else:
            copies = [1] * free + [0] * held
        todo = [(node, k) for (node, _), k in zip(open_, copies)]
        ref = reference[round_ + 1] if held else None
        round_ += 1


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
        cls = type(self).__name__
        if self.particles < 1:
            raise ValueError(f"{cls}.particles must be >= 1, got {self.particles}")
        if not self.temperature > 0:
            raise ValueError(f"{cls}.temperature must be > 0, got {self.temperature}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"{cls}.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.resampling not in RESAMPLINGS:
            raise ValueError(f"{cls}.resampling must be one of {RESAMPLINGS}, got {self.resampling!r}")
        if not 0 < self.ess_threshold <= 1:
            raise ValueError(f"{cls}.ess_threshold must be in (0, 1], got {self.ess_threshold}")

    def __call__(self, tree: Tree) -> Search:
        return (yield from filter_particles(tree, self, self.particles))


@dataclass(frozen=True)
class ParticleGibbs(ParticleFiltering):
    """``iterations`` conditional particle filters of ``particles / iterations`` particles each.

    ``particles`` is the budget, in all iterations together (its_hub's count: budget = N x
    iterations), so budget b costs about b solutions, as for sampling, REBASE and particle
    filtering at b, and the study compares them at equal FLOPs along one budget axis (the ledger
    counts the real cost: the reference's replayed steps cost nothing, so a run generates
    b - (iterations - 1) solutions). Per-iteration particles instead would make budget b cost
    ``iterations`` times the others' b. The filter's options are particle filtering's, for every
    iteration and for drawing the reference (by the weight of its final score).

    Candidates are every finished particle of every iteration, each once (the reference, kept
    from one run to the next, is one node): voting then sees every solution the budget paid
    for. its_hub instead picks from the last iteration only; the harness's voting rules
    (best-of-N, weighted vote) do the picking here, as for every other algorithm.
    """

    iterations: int = 2
    name: str = "particle_gibbs"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 1:
            raise ValueError(f"ParticleGibbs.iterations must be >= 1, got {self.iterations}")
        if self.particles % self.iterations:
            raise ValueError(f"ParticleGibbs.particles ({self.particles}) must be a multiple of iterations "
                             f"({self.iterations})")
        if self.iterations > 1 and self.particles < 2 * self.iterations:
            raise ValueError(f"ParticleGibbs.particles ({self.particles}) must be >= 2 x iterations "
                             f"({self.iterations}): with 1 particle per iteration later ones only replay it")

    def __call__(self, tree: Tree) -> Search:
        n = self.particles // self.iterations
        found: dict[int, Node] = {}  # every finished particle once, in the order first found
        reference: list[Node] = []
        for it in range(self.iterations):
            # Iteration 0 draws as particle filtering does (key ()); later ones draw apart.
            finished = yield from filter_particles(tree, self, n, reference, (it,) if it else ())
            found.update((node.id, node) for node in finished)
            weights = particle_weights([node.score for node in finished], self.temperature, self.weighting)
            reference = Tree.path(round_rng(self.seed, tree.question, "reference", it).choices(
                finished, weights=weights)[0])
        return list(found.values())
