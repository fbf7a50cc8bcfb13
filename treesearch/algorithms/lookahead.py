"""Lookahead search (Snell et al. 2024, §5): beam search that values a step by where it leads."""
from __future__ import annotations

from dataclasses import dataclass

from ..tree import Node
from ..work import expand, score
from .beam import BeamSearch


@dataclass(frozen=True)
class Lookahead(BeamSearch):
    """Beam search (N beams, width M) whose candidate steps are each rolled out ``k`` more steps
    at temperature 0 and valued by the PRM score at the end of that rollout.

    The rollout's steps stay in the tree (their tokens are paid for: about N(k+1) steps per
    round, as the paper counts) but are never beam steps or candidates; a step that is itself
    finished is valued by its own score. k = 0 is plain beam search.
    """

    k: int = 1
    name: str = "lookahead"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 0:
            raise ValueError(f"Lookahead needs k >= 0, got {self.k}")

    def values(self, nodes: list[Node]):
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
