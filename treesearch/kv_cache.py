"""Prefix KV caches kept between expansions, so a child's prefix is never re-encoded."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (keys, values), each [heads, length, dim]


@dataclass
class CacheEntry:
    kv: KV
    length: int  # tokens covered: the first ``length`` tokens of the key

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)


class PrefixKVStore:
    """An LRU map from a token prefix to the KV of all but its last token, bounded in bytes.

    A sampled step's KV is stored under the child's full token prefix; when that child
    is expanded only its last token has to be fed. Entries are popped when used (each
    node is expanded once by every algorithm here), and evicted oldest-first beyond
    ``max_bytes``; a miss just means the prefix is encoded again.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], CacheEntry] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def put(self, prefix: tuple[int, ...], entry: CacheEntry) -> None:
        if self.max_bytes <= 0 or entry.nbytes > self.max_bytes:
            return
        old = self._entries.pop(prefix, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._entries[prefix] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes:
            _, ev = self._entries.popitem(last=False)
            self._bytes -= ev.nbytes

    def pop(self, prefix: tuple[int, ...]) -> CacheEntry | None:
        entry = self._entries.pop(prefix, None)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
            self._bytes -= entry.nbytes
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes
