"""JSON Lines in, one object per line, with errors that name the file and the line.

Shared by every reader of user files (datasets, verifier benchmarks), so that a bad line is
reported the same way everywhere: ``path:line: what is wrong``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


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
