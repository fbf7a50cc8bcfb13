"""REBASE (Wu et al. 2024, §3.1.2): reward-balanced expansion of a search tree, no rollouts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..tree import Node, Tree
from ..work import Search, expand, score


def allocate_widths(scores: Sequence[float], budget: int, temperature: float) -> list[int]:
    """Children per node: the official code's sequential-ceil softmax allocation.

    Nodes are visited by score, highest first (ties keep their order); each takes
    ``ceil(W_rem * e_j / S_rem)`` with ``e_j = exp(R_j / T)``, then ``W_rem`` and ``S_rem``
    shrink. The widths sum to exactly ``budget``; the best nodes get the round-up and the
    low-score tail may get 0 (pruned). Returned in the input order.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not scores:
        return []
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]  # shift by max: same ratios, no overflow
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    widths = [0] * len(scores)
    w_rem, s_rem = budget, sum(weights)
    for i in order:
        if w_rem <= 0:
            break
        # 1e-9 absorbs float noise so that an exact 2.0 is not rounded up to 3.
        n = min(w_rem, math.ceil(w_rem * weights[i] / s_rem - 1e-9)) if s_rem > 0 else w_rem
        widths[i] = n
        w_rem -= n
        s_rem -= weights[i]
    return widths


@dataclass(frozen=True)
class Rebase:
    """REBASE with ``width`` = N target solutions and balance temperature T_b.

    Per depth: score every new node; each finished one decrements the budget
    (B_i = B_{i-1} - C_i); the unfinished ones share B_i children by softmax(R/T).
    Paper T_b = 0.1, official code default 0.2.
    """

    width: int = 16
    temperature: float = 0.1
    budget_param: ClassVar[str | None] = "width"
    needs_prm: ClassVar[bool] = True
    name: str = "rebase"

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"Rebase.width must be >= 1, got {self.width}")
        if self.temperature <= 0:
            raise ValueError(f"Rebase.temperature must be > 0, got {self.temperature}")

    def __call__(self, tree: Tree) -> Search:
        budget = self.width
        (frontier,) = yield from expand([tree.root], budget)
        finished: list[Node] = []
        while frontier:
            rewards = yield from score(frontier)
            done = [n for n in frontier if n.terminal]
            finished.extend(done)
            budget -= len(done)
            if budget <= 0:
                break
            open_ = [(n, r) for n, r in zip(frontier, rewards) if not n.terminal]
            if not open_:
                break
            widths = allocate_widths([r for _, r in open_], budget, self.temperature)
            kept = [(n, w) for (n, _), w in zip(open_, widths) if w > 0]
            children = yield from expand([n for n, _ in kept], [w for _, w in kept])
            frontier = [c for kids in children for c in kids]
        return finished
