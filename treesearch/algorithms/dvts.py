"""Diverse verifier tree search (DVTS, Beeching et al. 2024, HuggingFace search-and-learn)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..tree import Node, Tree
from ..work import Search, expand, score


@dataclass(frozen=True)
class DVTS:
    """The budget N split into N/M independent subtrees, each a beam search of one beam and width M.

    Each round, every live subtree samples M next steps from its current node (the first round
    samples all N first steps from the question and deals them out M per subtree); the finished
    ones are candidates, and the subtree moves on to its best unfinished step by PRM score
    (it ends when all M are finished). Subtrees never compete for budget, so one strong
    verifier preference cannot collapse the search onto a single prefix, which is DVTS's
    point against beam search at large N. Every round costs N steps, as beam search's does.
    All finished steps come back as candidates, and only finished ones (the reference
    implementation can return unfinished beams).
    """

    n: int = 16
    beam_width: int = 4
    budget_param: ClassVar[str | None] = "n"
    needs_prm: ClassVar[bool] = True
    name: str = "dvts"

    def __post_init__(self) -> None:
        if self.n < 1 or self.beam_width < 1:
            raise ValueError(f"DVTS needs n >= 1 and beam_width >= 1, got {self.n}, {self.beam_width}")

    @property
    def subtrees(self) -> int:
        return max(1, self.n // self.beam_width)

    def __call__(self, tree: Tree) -> Search:
        m = self.beam_width
        # The subtrees' first steps are one request of N samples from the question (iid draws, so
        # the same as N/M requests of M, which would share the root's seed and draw alike).
        (first,) = yield from expand([tree.root], self.subtrees * m)
        groups = [first[i * m:(i + 1) * m] for i in range(self.subtrees)]
        finished: list[Node] = []
        while groups:
            values = iter((yield from score([c for g in groups for c in g])))
            current = []
            for kids in groups:
                scored = [(next(values), i, c) for i, c in enumerate(kids)]
                finished.extend(c for _, _, c in scored if c.terminal)
                open_ = [(v, i, c) for v, i, c in scored if not c.terminal]
                if open_:
                    current.append(max(open_, key=lambda t: (t[0], -t[1]))[2])
            groups = (yield from expand(current, m)) if current else []
        return finished
