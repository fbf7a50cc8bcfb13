"""Kept search trees: a sweep's opt-in ``store_trees`` writes each searched setting's tree beside the records.

``trees.jsonl`` (``trees.rank<k>.jsonl`` in a sharded run) holds one JSON line per searched record key,
``{"problem_id", "model", "method", "budget", "seed", "tree": <treesearch.tree_export format>}``.
The records are written exactly as without it. A tree line is written before its record, so a run killed
in between searches that setting again on resume and writes the tree again: readers keep the last line
of a key, and a torn last line (an interrupted write) is skipped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from treesearch.jsonl import LineAppender
from treesearch.runner import SearchResult
from treesearch.tree_export import export_tree
from treesearch.voting import memoized

from .config import DatasetConfig, VotingConfig

KEY_FIELDS = ("problem_id", "model", "method", "budget", "seed")


def trees_file(directory: str | Path, rank: int = 0, world: int = 1) -> Path:
    return Path(directory) / ("trees.jsonl" if world == 1 else f"trees.rank{rank}.jsonl")


def tree_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("trees*.jsonl") if p.is_file())


def wanted(store_trees: bool | Sequence[str | int], problem_id: str) -> bool:
    """Whether a problem's trees are kept: ``store_trees`` is true (all), false (none) or a list of ids."""
    if isinstance(store_trees, bool):
        return store_trees
    return str(problem_id) in {str(p) for p in store_trees}


def step_checker(dataset: DatasetConfig) -> Callable[[str, Sequence[str]], Sequence[bool]] | None:
    """The exact step checker a named dataset registers (the built-in task's), else None."""
    from .datasets import named

    entry = named(dataset.name) if dataset.fields is None else None
    return entry.step_checker if entry is not None else None


def tree_line(key: dict[str, Any], result: SearchResult, gold: str | None, grader: Callable[[str, str], bool] | None,
              voting: VotingConfig | None, check_steps: Callable | None) -> dict[str, Any]:
    """One line of trees.jsonl: the record key and the exported tree."""
    kw: dict[str, Any] = {}
    if voting is not None:
        kw["votes"], kw["aggregations"] = voting.keys(), voting.aggregations
    if grader is not None:
        equal = kw["equal"] = memoized(grader)  # each answer pair graded once
        if gold is not None:
            kw["grade"] = lambda answer: equal(answer, gold)
    tree = export_tree(result.tree, result.candidates, gold=gold, check_steps=check_steps, **kw)
    return {**key, "tree": tree.to_json()}


class TreeWriter(LineAppender):
    """Appends tree lines a chunk at a time (``LineAppender``); a torn last line is cut off first."""

    def __init__(self, path: str | Path, fsync: bool = False):
        path = Path(path)
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        super().__init__(path, fsync)

    def write(self, lines: Iterable[dict[str, Any]]) -> int:
        return self.write_lines([json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
                                 for line in lines])


def read_trees(directory: str | Path) -> list[dict[str, Any]]:
    """Every kept tree of a results directory (all shard files; the last line of a key wins), in key order
    of first appearance. Unparsable lines (a torn write) are skipped."""
    seen: dict[tuple, dict[str, Any]] = {}
    for path in tree_files(directory):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "tree" in item:
                    seen[tuple(item.get(k) for k in KEY_FIELDS)] = item
    return list(seen.values())
