"""The run lock: one live run per results directory and shard.

Two runs appending to one records file would each redo what the other has not yet written
(duplicate records), so a run takes a lock file naming its process before it writes, and a
report can say when what it reads is still being written. Apart from ``records`` because it
guards the process, not the file format.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .records import RecordsError


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

    @classmethod
    def holders(cls, directory: str | Path) -> list[dict[str, Any]]:
        """The live runs writing to ``directory`` (any shard): a report read now is partial."""
        out = []
        for path in sorted(Path(directory).glob(".lock*")):
            owner = cls._owner_of(path)
            if owner is not None and not cls._stale(owner):
                out.append(owner)
        return out

    @staticmethod
    def _owner_of(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _age(self) -> float:
        import time

        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _owner(self) -> dict[str, Any] | None:
        return self._owner_of(self.path)  # None: unreadable or half written, treated as stale

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
