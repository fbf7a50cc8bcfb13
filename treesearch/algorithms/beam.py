"""Step-level beam search as in Snell et al. 2024 (N beams, beam width M)."""
from __future__ import annotations

from dataclasses import dataclass

from ..tree import Node, Tree
from ..work import Search, expand, score


@dataclass(frozen=True)
class BeamSearch:
    """Keep the top N/M unfinished steps by PRM score, expand each M times, until N solutions finish.

    Finished beams leave the search and shrink the number of beams still running,
    so at most N solutions come back (the same count as sampling at budget N).
    """

    n: int = 16
    beam_width: int = 4
    name: str = "beam"

    def __post_init__(self) -> None:
        if self.n < 1 or self.beam_width < 1:
            raise ValueError(f"BeamSearch needs n >= 1 and beam_width >= 1, got {self.n}, {self.beam_width}")

    def __call__(self, tree: Tree) -> Search:
        (frontier,) = yield from expand([tree.root], self.n)
        finished: list[Node] = []
        while frontier:
            rewards = yield from score(frontier)
            finished.extend(n for n in frontier if n.terminal)
            remaining = self.n - len(finished)
            open_ = sorted(((r, i, n) for i, (n, r) in enumerate(zip(frontier, rewards)) if not n.terminal),
                           key=lambda t: (-t[0], t[1]))
            if remaining <= 0 or not open_:
                break
            keep = max(1, remaining // self.beam_width)
            beams = [n for _, _, n in open_[:keep]]
            width = min(self.beam_width, remaining)
            children = yield from expand(beams, width)
            frontier = [c for kids in children for c in kids]
        return finished[: self.n]
