"""MCTS, the paper's baseline (Wu et al. 2024, §3.1.1 and App. B-C)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ..tree import Node, Tree
from ..work import Search, expand, score


def uct(child: Node, parent_visits: int, c: float) -> float:
    """Q(s) + c·sqrt(ln N(parent) / N(s)); an unvisited child is tried first."""
    if child.visits == 0:
        return math.inf
    return child.value + c * math.sqrt(math.log(max(parent_visits, 1)) / child.visits)


def backup(path: list[Node], value: float) -> None:
    """N(n) += 1 and Q(n) becomes the running mean of the values seen below n."""
    for n in path:
        n.visits += 1
        n.value += (value - n.value) / n.visits


@dataclass(frozen=True)
class MCTS:
    """UCT search where the PRM values new children; the budget counts expansions.

    The root gets ``root_width`` children (paper: 4/8/16), every other selected node
    ``width`` (paper: 2), for ``expansions`` expansions (paper: 32/64/128). Selection only
    descends into subtrees that still hold an unfinished leaf, so every iteration expands
    one node and the whole budget is spent; it stops early only when every leaf of the tree
    is a finished solution (nothing is left to expand). With ``rollout=True`` each new child
    is also played out to a terminal step (classic MCTS) and valued by the PRM score of that
    finished solution; rollout paths stay in the tree as candidates but are not selectable.
    Every finished solution in the tree is a candidate.
    """

    expansions: int = 32
    root_width: int = 4
    width: int = 2
    c: float = 1.0
    rollout: bool = False
    budget_param: ClassVar[str | None] = "expansions"
    needs_prm: ClassVar[bool] = True
    name: str = "mcts"

    def __post_init__(self) -> None:
        if self.expansions < 1 or self.root_width < 1 or self.width < 1:
            raise ValueError("MCTS needs expansions, root_width and width >= 1")

    def __call__(self, tree: Tree) -> Search:
        rollout_ids: set[int] = set()
        closed: set[int] = set()  # nodes whose subtree holds no unfinished selectable leaf
        for _ in range(self.expansions):
            if tree.root.id in closed:
                break
            path = self._select(tree.root, rollout_ids, closed)
            leaf = path[-1]
            (kids,) = yield from expand([leaf], self.root_width if leaf.is_root else self.width)
            values = yield from score(kids)
            if self.rollout:
                values = yield from self._rollouts(kids, values, rollout_ids)
            for kid, v in zip(kids, values):
                kid.visits, kid.value = 1, v
                backup(path, v)
                if kid.terminal:
                    closed.add(kid.id)
            self._close(path, rollout_ids, closed)
        return [n for n in tree.nodes if n.terminal]

    def _select(self, root: Node, rollout_ids: set[int], closed: set[int]) -> list[Node]:
        path = [root]
        node = root
        while True:
            kids = [k for k in node.children if k.id not in rollout_ids]
            if not kids:
                return path
            kids = [k for k in kids if k.id not in closed]
            node = max(kids, key=lambda k: uct(k, node.visits, self.c))  # max keeps the first on ties
            path.append(node)

    @staticmethod
    def _close(path: list[Node], rollout_ids: set[int], closed: set[int]) -> None:
        """Walk back up the path closing every node whose selectable children are all closed."""
        for node in reversed(path):
            kids = [k for k in node.children if k.id not in rollout_ids]
            if kids and all(k.id in closed for k in kids):
                closed.add(node.id)
            else:
                break

    @staticmethod
    def _rollouts(kids: list[Node], values: list[float], rollout_ids: set[int]):
        """Play each unfinished kid out with width-1 steps; its value becomes the end's PRM score."""
        ends = list(kids)
        while any(not e.terminal for e in ends):
            open_idx = [i for i, e in enumerate(ends) if not e.terminal]
            children = yield from expand([ends[i] for i in open_idx], 1)
            for i, (child,) in zip(open_idx, children):
                rollout_ids.add(child.id)
                ends[i] = child
        rolled = [i for i, (e, k) in enumerate(zip(ends, kids)) if e is not k]
        end_scores = yield from score([ends[i] for i in rolled])
        values = list(values)
        for i, s in zip(rolled, end_scores):
            values[i] = s
        return values
