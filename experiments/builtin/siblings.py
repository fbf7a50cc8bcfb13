"""Sibling steps a policy really writes, judged by the task's checker: the test bed of a verifier.

From each test question the policy samples ``width`` first steps; from up to
``parents_per_depth`` distinct right ones it samples ``width`` next steps, and so on for
``depths`` levels. Every sampled parent gives a :class:`~reward_models.evaluation.SiblingGroup`
(its children and whether each is right); groups mixing right and wrong children are
the pairs a verifier must order, with problem and prefix held fixed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from reward_models.evaluation import SiblingGroup
from treesearch.builtin import task
from treesearch.runner import Runner
from treesearch.tree import Node, Tree
from treesearch.work import Search, expand

from .models import LIMITS

Checker = Callable[[str, Sequence[str]], Sequence[bool]]


@dataclass(frozen=True)
class SiblingSampler:
    """A search algorithm that only samples: ``width`` children of right parents, ``depths`` deep.

    Parents are the first ``parents_per_depth`` right, unfinished children with distinct
    text (a policy often writes the same step twice). Returns no candidates: the tree is the result.
    """

    check: Checker = task.on_gold_path
    width: int = 6
    parents_per_depth: int = 4
    depths: int = 4
    name: str = "siblings"

    def __post_init__(self) -> None:
        if min(self.width, self.parents_per_depth, self.depths) < 1:
            raise ValueError("width, parents_per_depth and depths must be >= 1")

    def __call__(self, tree: Tree) -> Search:
        parents: list[Node] = [tree.root]
        for _ in range(self.depths):
            children = yield from expand(parents, self.width)
            seen: set[str] = set()
            parents = []
            for c in (c for kids in children for c in kids):
                if c.terminal or c.text in seen or not self.check(tree.question, Tree.steps(c))[-1]:
                    continue
                seen.add(c.text)
                parents.append(c)
                if len(parents) == self.parents_per_depth:
                    break
            if not parents:
                break
        return []


def groups_of(tree: Tree, check: Checker = task.on_gold_path) -> list[SiblingGroup]:
    """One group per expanded node of the tree (its children, judged by ``check``)."""
    out = []
    for node in tree.nodes:
        if not node.children:
            continue
        prefix = tuple(Tree.steps(node))
        kids = tuple(c.text for c in node.children)
        right = tuple(bool(check(tree.question, prefix + (k,))[-1]) for k in kids)
        out.append(SiblingGroup(tree.question, prefix, kids, right))
    return out


def sample_groups(policy, problems: Sequence[task.BuiltinProblem], sampler: SiblingSampler = SiblingSampler(),
                  seed: int = 0, progress: bool = False) -> list[SiblingGroup]:
    """Sibling groups of ``policy`` on ``problems`` (all of them, mixed or not)."""
    runner = Runner(policy, None, LIMITS, progress=progress)
    results = runner.run([p.question for p in problems], sampler, seed=seed)
    return [g for r in results for g in groups_of(r.tree, sampler.check)]


def eval_problems(n: int, levels: Sequence[int] = (2, 3, 4, 5)) -> list[task.BuiltinProblem]:
    """The first ``n`` test problems of ``levels`` (level 1 has a single operation, so few errors)."""
    return [p for p in task.test_split(500) if p.level in levels][:n]


@dataclass(frozen=True)
class VerifierRow:
    """How well a PRM orders one policy's sibling steps at one depth (``depth`` 0: all depths)."""

    policy: str
    depth: int
    groups: int  # parents whose children mix right and wrong
    pairs: int  # (right, wrong) sibling pairs
    pairwise: float  # share of pairs the PRM orders right (ties 1/2)
    steps: int  # sampled child steps, mixed groups or not
    auc: float  # step ROC AUC over those steps (NaN if one class only)


def verifier_rows(prm, groups_by_policy: dict[str, list[SiblingGroup]]) -> list[VerifierRow]:
    """Per policy, one row per depth and one over all depths (depth 0)."""
    from reward_models.evaluation import roc_auc, sibling_pairs, sibling_scores

    rows = []
    for name, groups in groups_by_policy.items():
        scores = sibling_scores(prm, groups)
        depths = sorted({g.depth for g in groups})
        for depth in [0, *depths]:
            idx = [i for i, g in enumerate(groups) if depth in (0, g.depth)]
            mixed = [i for i in idx if groups[i].mixed]
            stats = sibling_pairs([groups[i] for i in mixed], [scores[i] for i in mixed])
            flat_s = [x for i in idx for x in scores[i]]
            flat_y = [r for i in idx for r in groups[i].right]
            auc = roc_auc(flat_s, flat_y) if any(flat_y) and not all(flat_y) else float("nan")
            rows.append(VerifierRow(name, depth, len(mixed), stats.pairs, stats.accuracy, len(flat_s), auc))
    return rows


def format_rows(rows: Sequence[VerifierRow]) -> str:
    head = ("policy", "depth", "mixed parents", "pairs", "right > wrong", "steps", "step AUC")
    body = [(r.policy, "all" if r.depth == 0 else str(r.depth), str(r.groups), str(r.pairs),
             "–" if r.pairs == 0 else f"{r.pairwise:.3f}", str(r.steps), "–" if r.auc != r.auc else f"{r.auc:.3f}")
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])
