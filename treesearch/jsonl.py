"""JSON Lines in, one object per line, with errors that name the file and the line; and out, a chunk
of lines at a time.

Shared by every reader of user files (datasets, verifier benchmarks), so that a bad line is
reported the same way everywhere: ``path:line: what is wrong``; and by every file a run appends to
(records, kept trees), so that each is written the same crash-safe way.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence


def parse_lines(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed value) for each non-blank line, an ``error`` instance in place of a
    line that is not JSON: for readers that report every bad line of a file, not only the first."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, error(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})")


def read_objects(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; ``error`` for a line that is not a JSON object."""
    for lineno, obj in parse_lines(path, error):
        if isinstance(obj, Exception):
            raise obj
        if not isinstance(obj, dict):
            raise error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


class LineAppender:
    """Appends lines a chunk at a time: one write, flushed (and fsynced if asked) per chunk, so a killed
    process leaves whole chunks and at most one torn last line, which the file's owner cuts before
    appending again."""

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._f = open(self.path, "a", encoding="utf-8")

    def write_lines(self, lines: Sequence[str]) -> int:
        """Each of ``lines`` ends in a newline; returns how many were written."""
        if lines:
            self._f.write("".join(lines))
            self._f.flush()
            if self.fsync:
                os.fsync(self._f.fileno())
        return len(lines)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> LineAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
