"""Prefix KV caches kept between expansions, so a child's prefix is never re-encoded.

The KV of a tree path is a chain of segments: a node's segment holds only the positions
its step added and points at its parent's segment, so siblings share one copy of their
common prefix instead of each holding the whole of it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

@dataclass(eq=False)
class Segment:
    """KV of positions ``[start, start + length)``; the parent chain covers ``[0, start)``."""

    kv: torch.Tensor  # [layers, 2 (keys, values), heads, length, dim]
    start: int
    parent: Segment | None = None
    refs: int = 0  # store entries whose chain holds this segment

    def __post_init__(self):
        if self.start != (self.parent.end if self.parent else 0):
            raise ValueError(f"segment starts at {self.start}, its parent ends at {self.parent.end if self.parent else 0}")
        self.length = self.kv.shape[3]
        self.end = self.start + self.length
        self.nbytes = self.kv.numel() * self.kv.element_size()

    def chain(self) -> list[Segment]:
        """This segment and its ancestors, root first."""
        out, s = [], self
        while s is not None:
            out.append(s)
            s = s.parent
        return out[::-1]

    def truncated(self, n: int) -> Segment | None:
        """A chain covering exactly the first ``n`` positions (views, no copy)."""
        if n <= 0:
            return None
        if n >= self.end:
            return self
        if n <= self.start:
            return self.parent.truncated(n) if self.parent else None
        keep = n - self.start
        return Segment(self.kv[:, :, :, :keep], self.start, self.parent)


class PrefixKVStore:
    """An LRU map from a token prefix to the KV chain of all but its last token, bounded in bytes.

    A sampled step's KV is stored under the child's full token prefix; when that child
    is expanded only its last token has to be fed. Entries are popped when used (each
    node is expanded once by every algorithm here), and evicted oldest-first beyond
    ``max_bytes``; a miss just means the prefix is encoded again. A segment shared by
    several entries is counted once, for as long as one of them is stored.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], Segment] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def put(self, prefix: tuple[int, ...], entry: Segment) -> None:
        if self.max_bytes <= 0:
            return
        old = self._entries.pop(prefix, None)
        if old is not None:
            self._release(old)
        self._entries[prefix] = entry
        self._hold(entry)
        while self._bytes > self.max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._release(evicted)

    def pop(self, prefix: tuple[int, ...]) -> Segment | None:
        entry = self._entries.pop(prefix, None)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
            self._release(entry)
        return entry

    def _hold(self, entry: Segment) -> None:
        for s in entry.chain():
            if s.refs == 0:
                self._bytes += s.nbytes
            s.refs += 1

    def _release(self, entry: Segment) -> None:
        for s in entry.chain():
            s.refs -= 1
            if s.refs == 0:
                self._bytes -= s.nbytes

    def clear(self) -> None:
        for entry in self._entries.values():
            self._release(entry)
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes
