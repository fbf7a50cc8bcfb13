"""The work an algorithm asks of the Runner.

A search algorithm is a generator per problem: it yields ``Expand`` or ``Score`` and
receives the result; it never calls a model. The Runner merges the work of many problems
into large batches, so every algorithm gets cross-problem batching for free and can be
unit-tested with a scripted policy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator, Sequence, Union

from .tree import Node, Tree


@dataclass(frozen=True)
class Expand:
    """Sample ``widths[i]`` one-step children of ``nodes[i]``; the reply is the list of new children per node.

    ``leads[i]`` (optional) is fixed text each child of ``nodes[i]`` starts with: the policy
    continues after it, and the child's step is lead + continuation (budget forcing writes
    "Wait" or "The answer is" this way). Its tokens are processed, not generated.
    ``redraw``: a node expanded again draws afresh (its seed also counts the children it has, as
    with a lead); off by default, so a search that re-expands a node on purpose keeps its draws.
    ``revise[i]`` (optional; None for a node that does not revise): the earlier attempts (solution
    texts) the children of ``nodes[i]`` revise. Each child starts a new solution after the revision
    prompt the policy's prompt builder writes from the question and these attempts
    (``PromptFormat.revision_text``), not after ``nodes[i]``'s path, which may then be a finished
    (terminal) attempt; the prompt's tokens are processed, not generated.
    ``logprobs`` = k > 0: each child also keeps the policy's confidence in every token it sampled
    (``Node.token_confidence``, from the top-k log-probabilities); a policy that cannot give them fails.
    """

    nodes: Sequence[Node]
    widths: Sequence[int]
    greedy: bool = False
    leads: Sequence[str] | None = None
    redraw: bool = False
    revise: Sequence[Sequence[str] | None] | None = None
    logprobs: int = 0

    def __post_init__(self) -> None:
        if self.logprobs < 0:
            raise ValueError(f"Expand.logprobs must be >= 0, got {self.logprobs}")
        if len(self.nodes) != len(self.widths):
            raise ValueError(f"Expand got {len(self.nodes)} nodes but {len(self.widths)} widths")
        if self.leads is not None and len(self.leads) != len(self.nodes):
            raise ValueError(f"Expand got {len(self.nodes)} nodes but {len(self.leads)} leads")
        if self.revise is not None and len(self.revise) != len(self.nodes):
            raise ValueError(f"Expand got {len(self.nodes)} nodes but {len(self.revise)} revise entries")
        for i, (n, w) in enumerate(zip(self.nodes, self.widths)):
            if w < 0:
                raise ValueError(f"negative width {w} for node {n.id}")
            if n.terminal and (self.revise is None or self.revise[i] is None):
                raise ValueError(f"cannot expand terminal node {n.id}")


@dataclass(frozen=True)
class Score:
    """Score ``nodes`` with the PRM; the reply is one float per node (also stored in ``node.score``)."""

    nodes: Sequence[Node]


Work = Union[Expand, Score]
#: A search over one problem: yields work, receives results, returns its candidate solutions (terminal nodes).
Search = Generator[Work, object, list[Node]]
#: An algorithm: called with the problem's tree, returns the search generator.
SearchAlgorithm = Callable[[Tree], Search]


def expand(nodes: Sequence[Node], widths: Sequence[int] | int, greedy: bool = False,
           leads: Sequence[str] | None = None, redraw: bool = False,
           revise: Sequence[Sequence[str] | None] | None = None,
           logprobs: int = 0) -> Generator[Work, object, list[list[Node]]]:
    """``children = yield from expand(nodes, w)``: typed sugar around ``yield Expand``."""
    if isinstance(widths, int):
        widths = [widths] * len(nodes)
    if not nodes:
        return []
    return (yield Expand(list(nodes), list(widths), greedy, list(leads) if leads is not None else None, redraw,
                         [None if r is None else tuple(r) for r in revise] if revise is not None else None,
                         logprobs))  # type: ignore[return-value]


def score(nodes: Sequence[Node]) -> Generator[Work, object, list[float]]:
    """``scores = yield from score(nodes)``."""
    if not nodes:
        return []
    return (yield Score(list(nodes)))  # type: ignore[return-value]


def complete(nodes: Sequence[Node], greedy: bool = False, logprobs: int = 0) -> Generator[Work, object, list[Node]]:
    """Extend each node one step at a time (width 1) until it is terminal; returns the terminal nodes."""
    done = [n for n in nodes if n.terminal]
    open_ = [n for n in nodes if not n.terminal]
    while open_:
        children = yield from expand(open_, 1, greedy, logprobs=logprobs)
        open_ = []
        for kids in children:
            for c in kids:
                (done if c.terminal else open_).append(c)
    return done
