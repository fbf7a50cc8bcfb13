"""JSON Lines in, one object per line, with errors that name the file and the line.

Shared by every reader of user files (datasets, verifier benchmarks), so that a bad line is
reported the same way everywhere: ``path:line: what is wrong``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def read_objects(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; ``error`` for a line that is not a JSON object."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj
