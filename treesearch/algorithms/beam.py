"""Step-level beam search as in Snell et al. 2024 (N beams, beam width M)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..tree import Node, Tree
from ..work import Search, expand, score


def split_budget(open_nodes: Sequence[Node], values: Sequence[float], remaining: int,
                 beam_width: int) -> tuple[list[Node], list[int]]:
    """The beams to keep and how many children each gets: ``remaining`` children in all.

    The best ceil(remaining / M) open nodes are kept (ties: earlier first) and get M children
    each, the last one the remainder, so exactly ``remaining`` children are sampled even when it
    is not a multiple of M (15 left, M = 4: 4 + 4 + 4 + 3). (In beam search there are always
    ``remaining`` open nodes, since each open path is one solution still missing; should there
    be fewer, the children are spread over those there are, the best getting the extra.)
    """
    if remaining <= 0 or not open_nodes:
        return [], []
    order = sorted(range(len(open_nodes)), key=lambda i: (-values[i], i))
    wanted = math.ceil(remaining / beam_width)
    keep = min(len(order), wanted)
    if keep == wanted:
        widths = [beam_width] * (keep - 1) + [remaining - beam_width * (keep - 1)]
    else:
        widths = [remaining // keep + (1 if i < remaining % keep else 0) for i in range(keep)]
    return [open_nodes[i] for i in order[:keep]], widths


@dataclass(frozen=True)
class BeamSearch:
    """Keep the top N/M unfinished steps by PRM score, expand each M times, until N solutions finish.

    Finished beams leave the search and shrink the number of beams still running; every round
    samples exactly as many children as solutions are still missing, so N come back (the same
    count as sampling at budget N).
    """

    n: int = 16
    beam_width: int = 4
    budget_param: ClassVar[str | None] = "n"
    needs_prm: ClassVar[bool] = True
    name: str = "beam"

    def __post_init__(self) -> None:
        if self.n < 1 or self.beam_width < 1:
            raise ValueError(f"BeamSearch needs n >= 1 and beam_width >= 1, got {self.n}, {self.beam_width}")

    def __call__(self, tree: Tree) -> Search:
        (frontier,) = yield from expand([tree.root], self.n)
        finished: list[Node] = []
        while frontier:
            rewards = yield from self.values(frontier)
            finished.extend(n for n in frontier if n.terminal)
            open_ = [(n, r) for n, r in zip(frontier, rewards) if not n.terminal]
            beams, widths = split_budget([n for n, _ in open_], [r for _, r in open_], self.n - len(finished),
                                         self.beam_width)
            if not beams:
                break
            children = yield from expand(beams, widths)
            frontier = [c for kids in children for c in kids]
        return finished

    def values(self, nodes: list[Node]):
        """How candidate steps are ranked: their PRM scores (lookahead search overrides this)."""
        return (yield from score(nodes))
