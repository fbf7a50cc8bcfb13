"""A search tree as compact plain data (JSON-able), for keeping trees beside records and for the viewer.

``export_tree(tree, candidates)`` returns a ``TreeExport``: the tree with identical siblings
grouped (``Tree.grouped``: one group per step text, score, terminal mark, answer and stop under one
parent group, with the count of nodes it stands for), the finished candidates, each answer's
tally and what every voting rule picked. Correctness is filled in where the caller can judge it:
``grade(answer) -> bool`` marks answers (a grader against the gold answer) and
``check_steps(question, steps) -> [bool]`` marks steps (an exact checker, e.g. the built-in task's
``on_gold_path``). ``to_json`` drops empty fields, so a line stays short; ``from_json`` reads it back.

One group's JSON: ``{"id", "parent", "n" (nodes), "text", "score", "width" (children its nodes were
expanded with, all together: the width the search gave them), "depth", "terminal", "answer",
"finish" (why a finished step ended; "stopped" also on an unfinished one where the search dropped the
trace, as DeepConf's online filter does), "ok" (the step check), "right" (the grader's verdict on the answer)}``, id 0 the question.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .tree import Node, NodeGroup, Tree
from .voting import Equal, aggregate, answer_classes, memoized, normalized_equal, picks

FORMAT = "treesearch-tree/1"

#: The voting keys exported when the caller names none: (key, rule, aggregation).
DEFAULT_VOTES: tuple[tuple[str, str, str], ...] = (
    ("majority", "majority", "last"), ("best_of_n/last", "best_of_n", "last"), ("best_of_n/min", "best_of_n", "min"),
    ("weighted/last", "weighted", "last"), ("weighted/min", "weighted", "min"))


@dataclass
class GroupExport:
    id: int
    parent: int | None
    n: int
    text: str
    depth: int
    width: int = 0
    score: float | None = None
    terminal: bool = False
    answer: str | None = None
    finish: str = ""
    ok: bool | None = None
    right: bool | None = None


@dataclass
class CandidateExport:
    group: int
    node: int
    scores: list[float]
    tokens: int
    finish: str
    answer: str | None = None
    right: bool | None = None


@dataclass
class TallyExport:
    """One answer class: how many candidates gave it and their summed / best last-step scores."""

    answer: str
    count: int
    weight_last: float
    weight_min: float
    best: float
    right: bool | None = None


@dataclass
class VoteExport:
    key: str
    answer: str | None = None
    right: bool | None = None


@dataclass
class TreeExport:
    question: str
    nodes: int  # nodes of the tree, the question included (the groups' n sum to it)
    groups: list[GroupExport]
    candidates: list[CandidateExport] = field(default_factory=list)
    tally: list[TallyExport] = field(default_factory=list)
    votes: list[VoteExport] = field(default_factory=list)
    gold: str | None = None
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format, "question": self.question, "nodes": self.nodes}
        if self.gold is not None:
            out["gold"] = self.gold
        out["groups"] = [_compact(g) for g in self.groups]
        out["candidates"] = [_compact(c) for c in self.candidates]
        out["tally"] = [_compact(t) for t in self.tally]
        out["votes"] = [_compact(v) for v in self.votes]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TreeExport:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} tree (format {data.get('format')!r})")
        return cls(question=data["question"], nodes=data["nodes"], gold=data.get("gold"),
                   groups=[GroupExport(**g) for g in data["groups"]],
                   candidates=[CandidateExport(**c) for c in data.get("candidates", [])],
                   tally=[TallyExport(**t) for t in data.get("tally", [])],
                   votes=[VoteExport(**v) for v in data.get("votes", [])])


_KEEP = {"id", "parent", "n", "text", "depth", "group", "node", "scores", "tokens", "key", "count"}
_DEFAULTS = {"width": 0, "terminal": False, "finish": ""}  # verdicts (ok, right) are kept when False


def _compact(obj: Any) -> dict[str, Any]:
    """Unknown values (None) and fields at their default are left out, except the ones every reader needs."""
    return {k: v for k, v in dataclasses.asdict(obj).items()
            if k in _KEEP or (v is not None and not (k in _DEFAULTS and v == _DEFAULTS[k]))}


def export_tree(tree: Tree, candidates: Sequence[Any] = (), *, gold: str | None = None,
                grade: Callable[[str], bool] | None = None,
                check_steps: Callable[[str, Sequence[str]], Sequence[bool]] | None = None,
                equal: Equal = normalized_equal,
                votes: Sequence[tuple[str, str, str]] = DEFAULT_VOTES,
                aggregations: Sequence[str] | None = None) -> TreeExport:
    """``tree`` and its finished ``candidates`` (the Runner's ``Candidate``s: answer, step_scores,
    num_tokens, finish_reason, node_id) as plain data; ``equal`` groups answers for the tally and votes.
    The votes are a record's (``voting.picks``): ``votes`` as (key, rule, aggregation), then the hierarchical
    rule per aggregation (``aggregations``, default those in ``votes``) where the candidates carry chains
    and the confidence vote where they carry confidences."""
    equal = memoized(equal)
    root = tree.grouped()
    groups: list[GroupExport] = []
    group_of: dict[int, int] = {}  # node id -> group id

    def add(g: NodeGroup, parent: int | None, steps: list[str]) -> None:
        gid = len(groups)
        for n in g.nodes:
            group_of[n.id] = gid
        ok = None
        if check_steps is not None and parent is not None:
            ok = bool(list(check_steps(tree.question, steps))[-1])
        right = None
        if grade is not None and g.terminal and parent is not None:
            right = g.answer is not None and bool(grade(g.answer))
        first: Node = g.first
        groups.append(GroupExport(
            id=gid, parent=parent, n=g.count, text=g.text, depth=g.depth, width=g.width,
            score=None if g.score is None else float(g.score), terminal=g.terminal, answer=g.answer,
            finish=first.finish_reason if g.terminal or g.stopped else "", ok=ok, right=right))
        for c in g.children:
            add(c, gid, steps + [c.text])

    add(root, None, [])
    cands = [CandidateExport(group=group_of.get(c.node_id, 0), node=c.node_id, answer=c.answer,
                             scores=[float(s) for s in c.step_scores], tokens=c.num_tokens, finish=c.finish_reason,
                             right=None if grade is None else c.answer is not None and bool(grade(c.answer)))
             for c in candidates]
    tally = [TallyExport(answer=cls[0].answer, count=len(cls),
                         weight_last=sum(aggregate(c.step_scores, "last") for c in cls),
                         weight_min=sum(aggregate(c.step_scores, "min") for c in cls),
                         best=max(aggregate(c.step_scores, "last") for c in cls),
                         right=None if grade is None else bool(grade(cls[0].answer)))
             for cls in answer_classes(list(candidates), equal)]
    aggs = list(aggregations) if aggregations is not None else list(dict.fromkeys(agg for _, _, agg in votes))
    picked = [VoteExport(key=key, answer=answer, right=None if grade is None else answer is not None and bool(grade(answer)))
              for key, answer in picks(list(candidates), votes, aggs, equal).items()]
    return TreeExport(question=tree.question, nodes=len(tree), groups=groups, candidates=cands, tally=tally,
                      votes=picked, gold=gold)
