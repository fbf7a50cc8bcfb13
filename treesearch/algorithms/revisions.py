"""Sequential revisions (Snell et al. 2024): a model sees its own earlier attempts and writes a better one.

The budget ``n`` attempts run as ``chains`` parallel chains of ``n / chains`` attempts each. A chain's
first attempt answers the question; each later one revises the chain's last ``history`` attempts
(Snell used 4): it is a new solution written after the revision prompt the policy's prompt builder
makes of the question and those attempts (``Expand.revise``, ``PromptFormat.revision_text``), so
every backend and chat template lays it out its own way, and older attempts drop out of context.

A revision hangs under the attempt it revises (the tree shows each chain as one deep path), but
it is a solution of its own: ``Tree.path`` starts at its first step, so its answer, its PRM score
(the question and its steps only) and its token count are its own. Every attempt is a candidate,
with its chain index (``Node.chain``): plain voting takes all attempts, and Snell's hierarchical rule
(``treesearch.voting.hierarchical_vote``: the verifier's best within each chain, then weighted
voting across chains) needs the chains. The ledger counts each revision's prompt as processed
tokens (the earlier attempts are re-read) and only the attempts as generated: where the backend
caches prefixes (vLLM) a revision that keeps all earlier attempts reuses the chain's KV.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generator, Sequence

from ..tree import Node, Tree
from ..work import Search, Work, expand


def attempt_text(node: Node) -> str:
    """The text of the attempt that ends at ``node``: its own steps, not the ones it revised."""
    return "".join(Tree.steps(node))


def finish_each(nodes: Sequence[Node]) -> Generator[Work, object, list[Node]]:
    """Extend each node one step at a time until it is terminal; the i-th result ends the i-th node's path."""
    nodes = list(nodes)
    while True:
        open_ = [i for i, n in enumerate(nodes) if not n.terminal]
        if not open_:
            return nodes
        children = yield from expand([nodes[i] for i in open_], 1)
        for i, (kid,) in zip(open_, children):
            nodes[i] = kid


@dataclass(frozen=True)
class Revisions:
    """``n`` attempts as ``chains`` chains; each attempt after a chain's first revises its last ``history``."""

    n: int = 16
    chains: int = 4
    history: int = 4
    budget_param: ClassVar[str | None] = "n"
    needs_prm: ClassVar[bool] = False  # no PRM while searching; the votes (hierarchical among them) use one
    independent_samples: ClassVar[bool] = False  # a chain's attempts depend on each other
    name: str = "revisions"

    def __post_init__(self) -> None:
        if self.n < 1 or self.chains < 1 or self.history < 0:
            raise ValueError(f"Revisions needs n >= 1, chains >= 1 and history >= 0, got {self.n}, "
                             f"{self.chains}, {self.history}")
        if self.n % self.chains:
            raise ValueError(f"Revisions.n ({self.n}) must be a multiple of chains ({self.chains})")

    @property
    def length(self) -> int:
        """Attempts per chain (L = n / chains)."""
        return self.n // self.chains

    def __call__(self, tree: Tree) -> Search:
        (first,) = yield from expand([tree.root], self.chains)
        last = yield from finish_each(first)
        attempts: list[list[Node]] = [[node] for node in last]  # per chain, its attempts' final steps
        for _ in range(1, self.length):
            seen = [[attempt_text(a) for a in chain[-self.history:]] if self.history else []
                    for chain in attempts]
            kids = yield from expand([chain[-1] for chain in attempts], 1, revise=seen)
            last = yield from finish_each([kid for (kid,) in kids])
            for chain, node in zip(attempts, last):
                chain.append(node)
        for c, chain in enumerate(attempts):
            for node in chain:
                node.chain = c
        return [node for chain in attempts for node in chain]
