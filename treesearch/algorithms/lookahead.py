"""Lookahead search (Snell et al. 2024, §5): beam search that values a step by where it leads."""
from __future__ import annotations

from dataclasses import dataclass

from ..tree import Node, Tree
from ..work import Search, expand, score
from .beam import split_budget


@dataclass(frozen=True)
class Lookahead:
    """Beam search (N beams, width M) whose candidate steps are each rolled out ``k`` more steps
    at temperature 0 and valued by the PRM score at the end of that rollout.

    The rollout's steps stay in the tree (their tokens are paid for: about N(k+1) steps per
    round, as the paper counts) but are never beam steps or candidates; a step that is itself
    finished is valued by its own score. k = 0 is plain beam search.
    """

    n: int = 16
    beam_width: int = 4
    k: int = 1
    name: str = "lookahead"

    def __post_init__(self) -> None:
        if self.n < 1 or self.beam_width < 1 or self.k < 0:
            raise ValueError(f"Lookahead needs n >= 1, beam_width >= 1 and k >= 0, got {self.n}, "
                             f"{self.beam_width}, {self.k}")

    def __call__(self, tree: Tree) -> Search:
        (frontier,) = yield from expand([tree.root], self.n)
        finished: list[Node] = []
        while frontier:
            values = yield from self._values(frontier)
            finished.extend(n for n in frontier if n.terminal)
            open_ = [(n, v) for n, v in zip(frontier, values) if not n.terminal]
            beams, widths = split_budget([n for n, _ in open_], [v for _, v in open_], self.n - len(finished),
                                         self.beam_width)
            if not beams:
                break
            children = yield from expand(beams, widths)
            frontier = [c for kids in children for c in kids]
        return finished

    def _values(self, nodes: list[Node]):
        """PRM score at the end of a k-step greedy rollout from each node (its own if it is finished)."""
        ends = list(nodes)
        for _ in range(self.k):
            open_idx = [i for i, e in enumerate(ends) if not e.terminal]
            if not open_idx:
                break
            children = yield from expand([ends[i] for i in open_idx], 1, greedy=True)
            for i, (child,) in zip(open_idx, children):
                ends[i] = child
        return (yield from score(ends))
