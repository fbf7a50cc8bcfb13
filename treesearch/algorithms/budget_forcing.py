"""Budget forcing (Muennighoff et al. 2025, s1): control how long one solution thinks.

Below a minimum thinking budget an answer is not accepted: the answer step is set aside and
the policy continues from the step before it behind a "Wait" lead, so it goes on thinking;
at the maximum the answer is forced by starting the next step with the answer prefix. The
budget is counted in the solution's tokens before the step (``min_tokens`` / ``max_tokens``)
or in its steps (``min_steps`` / ``max_steps``). With ``n`` > 1, n forced solutions run in
parallel and are voted on: the parallel-and-sequential curves of s1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..tree import Node, Tree
from ..work import Search, expand


@dataclass(frozen=True)
class BudgetForcing:
    """n solutions, each forced to think at least min and at most max (tokens or steps)."""

    n: int = 1
    min_tokens: int = 0
    max_tokens: int | None = None
    min_steps: int = 0
    max_steps: int | None = None
    wait: str = "Wait,"
    answer_prefix: str = "The answer is"
    max_waits: int = 4  # s1 forced up to 6 times; a policy that answers after every "Wait" must stop somewhere
    budget_param: ClassVar[str | None] = "n"
    needs_prm: ClassVar[bool] = False
    name: str = "budget_forcing"

    def __post_init__(self) -> None:
        if self.n < 1 or self.min_tokens < 0 or self.min_steps < 0 or self.max_waits < 0:
            raise ValueError("BudgetForcing needs n >= 1 and min_tokens, min_steps, max_waits >= 0")
        for lo, hi, what in ((self.min_tokens, self.max_tokens, "tokens"), (self.min_steps, self.max_steps, "steps")):
            if hi is not None and hi < max(lo, 1):
                raise ValueError(f"max_{what} ({hi}) must be >= 1 and >= min_{what} ({lo})")
        if not self.answer_prefix:
            raise ValueError("answer_prefix must not be empty (it is what forces the answer)")

    def thinking(self, node: Node) -> tuple[int, int]:
        """(tokens, steps) of the solution up to and including ``node`` (the root: nothing)."""
        return (0, 0) if node.is_root else (node.path_tokens, node.depth)

    def too_short(self, before: Node) -> bool:
        tokens, steps = self.thinking(before)
        return tokens < self.min_tokens or steps < self.min_steps

    def too_long(self, node: Node) -> bool:
        tokens, steps = self.thinking(node)
        return ((self.max_tokens is not None and tokens >= self.max_tokens)
                or (self.max_steps is not None and steps >= self.max_steps))

    def __call__(self, tree: Tree) -> Search:
        (active,) = yield from expand([tree.root], self.n)
        waits: dict[int, int] = {kid.id: 0 for kid in active}  # node id -> "Wait"s on its path so far
        finished: list[Node] = []
        while active:
            # (node id, lead) -> [node to continue, continuations, "Wait"s on their paths]; retries of
            # one step share a request, so they are distinct draws.
            todo: dict[tuple[int, str], list] = {}
            for node in active:
                used, parent = waits[node.id], node.parent
                if node.terminal:
                    if (node.answer is not None and parent is not None and used < self.max_waits
                            and self.too_short(parent) and not self.too_long(parent)):
                        job = todo.setdefault((parent.id, self.wait), [parent, 0, used + 1])  # think on
                    else:
                        finished.append(node)
                        continue
                else:
                    lead = self.answer_prefix if self.too_long(node) else ""
                    job = todo.setdefault((node.id, lead), [node, 0, used])
                job[1] += 1
            if not todo:
                break
            jobs = list(todo.items())
            children = yield from expand([j[0] for _, j in jobs], [j[1] for _, j in jobs],
                                         leads=[lead for (_, lead), _ in jobs])
            active = []
            for (_, (_, _, used)), kids in zip(jobs, children):
                for kid in kids:
                    waits[kid.id] = used
                    active.append(kid)
        return finished
