"""Search trees over reasoning steps: the root holds the question, every other node one step."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import networkx as nx

STOPPED = "stopped"  # the finish reason of a trace the search dropped (DeepConf's online filter)


@dataclass(eq=False)
class Node:
    """One reasoning step.

    ``path_tokens`` is accumulated from the parent when the node is created, so a
    per-solution token cap sees the whole path (the official REBASE code forgot this).

    ``prompt_ids`` is set on the first step of a solution written after a prompt of its own
    (a revision: ``Expand.revise``), not after its parent's path: the solution starts there
    (``Tree.path`` stops at it, its depth and path tokens count from it, and the policy continues
    its prompt), while the tree keeps the parent it revises.

    ``token_confidence`` (only where the expansion asked for log-probabilities, ``Expand.logprobs``):
    the policy's confidence in each token it sampled for this step (``treesearch.confidence``; a fixed
    lead's tokens were not sampled and have none). ``confidence`` is the whole solution's, set by an
    algorithm that ranks or weighs its candidates by it (DeepConf), as ``chain`` is by revisions.
    """

    id: int
    text: str
    token_ids: tuple[int, ...] = ()
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    depth: int = 0
    path_tokens: int = 0
    score: float | None = None
    terminal: bool = False
    answer: str | None = None
    finish_reason: str = ""  # "delimiter", "answer", "eos", "step_cap", "token_cap", "depth_cap"; STOPPED (DeepConf)
    prompt_ids: tuple[int, ...] | None = None  # a solution's own prompt, on its first step (revisions)
    chain: int | None = None  # the sequential chain a solution belongs to (revisions); None elsewhere
    token_confidence: tuple[float, ...] | None = None  # per sampled token of the step, when asked
    confidence: float | None = None  # the solution's confidence (DeepConf); None elsewhere
    # MCTS statistics; unused by other algorithms.
    visits: int = 0
    value: float = 0.0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def stopped(self) -> bool:
        """Whether the search dropped the trace here (DeepConf's online filter): no candidate, finished or not."""
        return self.finish_reason == STOPPED

    def __repr__(self) -> str:  # dataclass repr would recurse through children/parent
        return (f"Node(id={self.id}, depth={self.depth}, score={self.score}, "
                f"terminal={self.terminal}, text={self.text!r})")


class Tree:
    """A question and every step sampled for it."""

    def __init__(self, question: str, prompt_ids: tuple[int, ...] = ()):
        self.question = question
        self.root = Node(id=0, text=question, token_ids=tuple(prompt_ids))
        self.nodes: list[Node] = [self.root]

    def add_child(self, parent: Node, text: str, token_ids: tuple[int, ...] = (), *,
                  terminal: bool = False, answer: str | None = None,
                  finish_reason: str = "", prompt_ids: tuple[int, ...] | None = None) -> Node:
        """A step under ``parent``; with ``prompt_ids`` the first step of a new solution written
        after that prompt (depth 1, its own tokens only), whatever ``parent`` holds."""
        fresh = parent.is_root or prompt_ids is not None
        child = Node(
            id=len(self.nodes), text=text, token_ids=tuple(token_ids), parent=parent,
            depth=1 if fresh else parent.depth + 1,
            path_tokens=(0 if fresh else parent.path_tokens) + len(token_ids),
            terminal=terminal, answer=answer, finish_reason=finish_reason,
            prompt_ids=None if prompt_ids is None else tuple(prompt_ids),
        )
        parent.children.append(child)
        self.nodes.append(child)
        return child

    @staticmethod
    def path(node: Node) -> list[Node]:
        """Steps of ``node``'s solution, from its first one down to ``node`` (the root is not a step;
        a solution with a prompt of its own, a revision, starts at the step that holds it)."""
        steps = []
        while node.parent is not None:
            steps.append(node)
            if node.prompt_ids is not None:
                break
            node = node.parent
        return steps[::-1]

    @staticmethod
    def steps(node: Node) -> list[str]:
        return [n.text for n in Tree.path(node)]

    def prefix_ids(self, node: Node) -> tuple[int, ...]:
        """The solution's prompt tokens (the question's, or a revision's own) followed by every
        step's tokens down to ``node``."""
        path = self.path(node)
        ids = list(path[0].prompt_ids if path and path[0].prompt_ids is not None else self.root.token_ids)
        for n in path:
            ids.extend(n.token_ids)
        return tuple(ids)

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if not n.children]

    def terminals(self) -> list[Node]:
        return [n for n in self.nodes if n.terminal]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def to_networkx(self) -> nx.DiGraph:
        """A DiGraph keyed by node id with every node attribute, for analysis and drawing."""
        import networkx as nx  # here, not at the top: every process imports this module, few draw (170 ms)

        g = nx.DiGraph(question=self.question)
        for n in self.nodes:
            g.add_node(n.id, text=n.text, token_ids=n.token_ids, num_tokens=n.num_tokens,
                       depth=n.depth, path_tokens=n.path_tokens, score=n.score,
                       terminal=n.terminal, answer=n.answer, finish_reason=n.finish_reason,
                       chain=n.chain, confidence=n.confidence, visits=n.visits, value=n.value)
            if n.parent is not None:
                g.add_edge(n.parent.id, n.id)
        return g

    def grouped(self) -> NodeGroup:
        """The tree with identical siblings merged: one group per (text, score, terminal, answer,
        stopped) under one parent group, holding every such node; a group's children are all its nodes'
        children, grouped again (so identical paths collapse into one line with a count)."""
        return NodeGroup([self.root], _group_children([self.root]))

    def render(self, max_text: int = 60) -> str:
        """An indented view with scores and terminal marks, identical siblings shown once with
        their count (``x3``), for people to read."""
        lines = [f"Q: {_clip(self.question, max_text)}"]

        def walk(group: NodeGroup, indent: int) -> None:
            for g in group.children:
                score = "  -  " if g.score is None else f"{g.score:.3f}"
                count = f"  x{g.count}" if g.count > 1 else ""
                mark = f"  => {g.answer}" if g.terminal else ""
                if g.stopped:  # DeepConf dropped the trace here: whatever it reached is no candidate
                    mark += "  [stopped]"
                lines.append(f"{'  ' * indent}[{score}] {_clip(g.text, max_text)}{count}{mark}")
                walk(g, indent + 1)

        walk(self.grouped(), 1)
        return "\n".join(lines)

    __str__ = render


@dataclass(eq=False)
class NodeGroup:
    """Identical sibling nodes (same step text, score, terminal mark, answer and stop under one
    parent group), shown once with their count; ``children`` groups all their children."""

    nodes: list[Node]
    children: list[NodeGroup]

    @property
    def first(self) -> Node:
        return self.nodes[0]

    @property
    def count(self) -> int:
        return len(self.nodes)

    @property
    def text(self) -> str:
        return self.first.text

    @property
    def score(self) -> float | None:
        return self.first.score

    @property
    def terminal(self) -> bool:
        return self.first.terminal

    @property
    def answer(self) -> str | None:
        return self.first.answer

    @property
    def depth(self) -> int:
        return self.first.depth

    @property
    def stopped(self) -> bool:
        """Whether the search stopped these traces here (DeepConf's online filter): no candidates."""
        return self.first.stopped

    @property
    def width(self) -> int:
        """Children its nodes were expanded with, all together: the width the search gave them
        (exact, since the Runner checks that a policy returns as many samples as the width asked)."""
        return sum(len(n.children) for n in self.nodes)

    def walk(self) -> Iterator[NodeGroup]:
        """This group and every group below it, depth first."""
        yield self
        for c in self.children:
            yield from c.walk()


def _group_children(nodes: list[Node]) -> list[NodeGroup]:
    groups: dict[tuple, list[Node]] = {}
    for n in nodes:
        for c in n.children:
            groups.setdefault((c.text, c.score, c.terminal, c.answer, c.stopped), []).append(c)
    return [NodeGroup(members, _group_children(members)) for members in groups.values()]


def _clip(text: str, n: int) -> str:
    text = text.strip().replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"
