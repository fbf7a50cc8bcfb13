"""Append-only JSON Lines records: write a chunk at a time, resume after a crash, merge shards.

One record per (problem, model, method, budget, seed). Why append-only with a torn-tail
repair: a sweep killed at any instant (SIGKILL, pre-emption) must lose at most the chunk
in flight, and a rerun must neither redo finished work nor trip over half a line.
Each process of a sharded run appends to its own ``records.rank<k>.jsonl``; readers take
the union of every ``records*.jsonl`` in the directory.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

KEY_FIELDS = ("problem_id", "model", "method", "budget", "seed")
SCHEMA_VERSION = 1
Key = tuple


class RecordsError(ValueError):
    """A records file damaged somewhere other than its last line."""


class RecordsWarning(UserWarning):
    """A torn last line (an interrupted write) was ignored or cut off."""


PASS_AT_N = "oracle"  # the rule name for pass@n: some candidate is right (an upper bound for any voting rule)


def verdict(rec: dict[str, Any], rule: str) -> bool | None:
    """Was the answer ``rule`` ("majority", "weighted/last", ..., or "oracle" for pass@n) picked right?
    None when the record has no such rule."""
    if rule == PASS_AT_N:
        return rec.get("oracle_correct")
    v = rec.get("votes", {}).get(rule)
    return None if v is None else bool(v["correct"])


def record_key(rec: dict[str, Any]) -> Key:
    return tuple(rec[k] for k in KEY_FIELDS)


def records_file(directory: str | Path, rank: int = 0, world: int = 1) -> Path:
    """This process's file: records.jsonl alone, records.rank<k>.jsonl in a sharded run."""
    return Path(directory) / ("records.jsonl" if world == 1 else f"records.rank{rank}.jsonl")


def shard_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("records*.jsonl") if p.is_file())


def _scan(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    """(complete records, bytes they span, file size). A last line that is unterminated or
    unparsable is torn; a bad line anywhere else is damage we must not paper over."""
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    pos = lineno = 0
    while pos < len(data):
        lineno += 1
        nl = data.find(b"\n", pos)
        if nl == -1:  # the write was cut before its newline
            break
        line = data[pos:nl]
        if line.strip():
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
                missing = [k for k in KEY_FIELDS if k not in obj]
                if missing:
                    raise ValueError(f"missing key fields {missing}")
            except ValueError as e:
                if data[nl + 1:].strip():
                    raise RecordsError(f"{path}:{lineno}: damaged record ({e}); fix or remove this line") from None
                break
            records.append(obj)
        pos = nl + 1
    return records, pos, len(data)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of one file; a torn last line is ignored with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    records, good, size = _scan(path)
    if good < size:
        warnings.warn(f"{path}: ignoring a torn last line ({size - good} bytes, an interrupted write)",
                      RecordsWarning, stacklevel=2)
    return records


def repair(path: str | Path) -> int:
    """Cut a torn last line off so appends start on a fresh line; returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    _, good, size = _scan(path)
    if good < size:
        warnings.warn(f"{path}: cutting off a torn last line ({size - good} bytes) before appending",
                      RecordsWarning, stacklevel=2)
        with open(path, "r+b") as f:
            f.truncate(good)
    return size - good


class RecordWriter:
    """Appends records a chunk at a time: one write, flushed (and fsynced if asked) per chunk."""

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair(self.path)
        self.fsync = fsync
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, records: Iterable[dict[str, Any]]) -> int:
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
        if lines:
            self._f.write("".join(lines))
            self._f.flush()
            if self.fsync:
                os.fsync(self._f.fileno())
        return len(lines)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_dir(directory: str | Path) -> Iterator[dict[str, Any]]:
    for path in shard_files(directory):
        yield from read_records(path)


def load_dir(directory: str | Path) -> list[dict[str, Any]]:
    """The union of all shard files, one record per key (the first seen if two runs overlapped)."""
    seen: dict[Key, dict[str, Any]] = {}
    dups = 0
    for rec in iter_dir(directory):
        k = record_key(rec)
        if k in seen:
            dups += 1
        else:
            seen[k] = rec
    if dups:
        warnings.warn(f"{directory}: {dups} duplicate records (same problem, model, method, budget, seed) "
                      f"ignored; were two runs writing here at once?", RecordsWarning, stacklevel=2)
    return list(seen.values())


def merge(directory: str | Path, out: str | Path) -> int:
    """Write the merged records of every shard to one file; returns how many.

    Name ``out`` outside ``directory`` or not ``records*.jsonl``, or readers count it twice."""
    records = load_dir(directory)
    tmp = Path(str(out) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return len(records)


class DirectoryInUse(RecordsError):
    """Another live run writes into the same results directory (and shard)."""


class RunLock:
    """One run per results directory and shard: a lock file naming the process that holds it.

    Two runs appending to one records file would each redo what the other has not yet
    written (duplicate records). The lock is created atomically; a lock left by a process that
    no longer exists on this host (a killed run) is stale and taken over. A lock from another
    host cannot be checked, so it stands until removed by hand.
    """

    def __init__(self, directory: str | Path, rank: int = 0, world: int = 1):
        self.path = Path(directory) / (".lock" if world == 1 else f".lock.rank{rank}")
        self.mine = False

    def __enter__(self) -> "RunLock":
        import socket
        import time

        for _ in range(30):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None and self._age() < 5.0:  # being written by a process that just took it
                    time.sleep(0.1)
                    continue
                if owner is not None and not self._stale(owner):
                    raise DirectoryInUse(
                        f"{self.path.parent} is in use by process {owner.get('pid')} on {owner.get('host')} "
                        f"(since {owner.get('started')}); wait for it to finish or use another output directory "
                        f"(if that process is gone, remove {self.path})") from None
                try:
                    self.path.unlink()  # stale: its process is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
            self.mine = True
            return self
        raise DirectoryInUse(f"{self.path}: could not take the lock (another run keeps taking it)")

    def __exit__(self, *exc: object) -> None:
        if self.mine:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.mine = False

    def _age(self) -> float:
        import time

        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # unreadable or half written: treated as stale

    @staticmethod
    def _stale(owner: dict[str, Any]) -> bool:
        import socket

        if owner.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(owner["pid"]), 0)
        except (ProcessLookupError, KeyError, ValueError, TypeError):
            return True
        except PermissionError:
            return False  # alive, another user's
        return False
