"""Prefix KV caches kept between model calls, so a child's prefix is never re-encoded.

The KV of a tree path is a chain of segments: a node's segment holds only the positions
its step added and points at its parent's segment, so siblings share one copy of their
common prefix instead of each holding the whole of it. The policy (sampling a node's
children) and the PRMs (scoring a child after its parent) both keep their paths here.

A batch's KV lives in one buffer ``[layers, 2, rows, heads, capacity, dim]`` that the model
sees through the transformers Cache API (:func:`buffer_cache`): copying segments into rows
or a finished row out of the batch is one tensor operation for all layers.
"""
from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

@dataclass(eq=False)
class Segment:
    """KV of positions ``[start, start + length)``; the parent chain covers ``[0, start)``."""

    kv: torch.Tensor  # [layers, 2 (keys, values), heads, length, dim]
    start: int
    parent: Segment | None = None
    refs: int = 0  # holders: store entries that are this segment, held segments that extend it

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
    """An LRU map from a prefix (its token ids, or any key) to the KV chain of all but its
    last token, bounded in bytes; an entry may carry data that belongs with it.

    The policy stores a sampled step's KV under the child's full token prefix and pops it
    when that child is expanded (each node is expanded once). A PRM keeps a scored chain
    with ``get`` for all its children. Entries are evicted oldest-first (least recently
    used) beyond ``max_bytes``; a miss just means the prefix is encoded again. A segment
    shared by several entries is counted once, for as long as one of them is stored.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Segment, Any]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def put(self, prefix: Hashable, entry: Segment, data: Any = None) -> None:
        if self.max_bytes <= 0:
            return
        old = self._entries.pop(prefix, None)
        if old is not None:
            self._release(old[0])
        self._entries[prefix] = (entry, data)
        self._hold(entry)
        while self._bytes > self.max_bytes and self._entries:
            _, (evicted, _) = self._entries.popitem(last=False)
            self._release(evicted)

    def pop(self, prefix: Hashable) -> Segment | None:
        found = self._entries.pop(prefix, None)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._release(found[0])
        return found[0]

    def get(self, prefix: Hashable) -> tuple[Segment, Any] | None:
        """The entry and its data, kept and marked as recently used; None (not counted) if absent."""
        found = self._entries.get(prefix)
        if found is not None:
            self.hits += 1
            self._entries.move_to_end(prefix)
        return found

    def _hold(self, entry: Segment) -> None:
        """A segment held for the first time holds its parent: O(1) under a held parent, not O(depth)."""
        s = entry
        while s is not None:
            s.refs += 1
            if s.refs > 1:
                return
            self._bytes += s.nbytes
            s = s.parent

    def _release(self, entry: Segment) -> None:
        s = entry
        while s is not None:
            s.refs -= 1
            if s.refs:
                return
            self._bytes -= s.nbytes
            s = s.parent

    def clear(self) -> None:
        for entry, _ in self._entries.values():
            self._release(entry)
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes


# ---- batches in one buffer, seen through the Cache API ---------------------------------------

class BufferLayer(DynamicLayer):
    """One layer's view of a batch's shared KV buffer: a forward pass writes its new
    positions in place instead of concatenating (which copies the whole cache every token)."""

    def __init__(self, buf: torch.Tensor, length: int):
        super().__init__()
        self.buf = buf  # [2, rows, heads, capacity, dim]
        self.dtype, self.device, self.is_initialized = buf.dtype, buf.device, True
        self.set_length(length)

    def set_length(self, n: int) -> None:
        self.length = n
        self.keys, self.values = self.buf[0, :, :, :n], self.buf[1, :, :, :n]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[2]
        if end > self.buf.shape[3]:
            raise RuntimeError(f"KV buffer of {self.buf.shape[3]} positions is full; this is a treesearch bug")
        self.buf[0, :, :, self.length:end] = key_states
        self.buf[1, :, :, self.length:end] = value_states
        self.set_length(end)
        return self.keys, self.values


def buffer_cache(kv: torch.Tensor, length: int) -> DynamicCache:
    """A Cache whose layers are views of ``kv`` [layers, 2, rows, heads, capacity, dim], ``length`` filled."""
    cache = DynamicCache()
    cache.layers = [BufferLayer(kv[i], length) for i in range(kv.shape[0])]
    return cache


def stacked(cache, spare: int = 0) -> torch.Tensor:
    """A model-built cache as one tensor [layers, 2, rows, heads, length + spare, dim] (``spare``
    free positions after it); a clear error for models whose layers differ in shape
    (sliding-window or hybrid layers)."""
    keys = [layer.keys for layer in cache.layers]
    if len({k.shape for k in keys}) != 1:
        raise ValueError(f"one KV buffer needs every layer's KV to have one shape, got {sorted({tuple(k.shape) for k in keys})}")
    rows, heads, n, dim = keys[0].shape
    kv = keys[0].new_empty((len(keys), 2, rows, heads, n + spare, dim))
    for i, layer in enumerate(cache.layers):
        kv[i, 0, :, :, :n], kv[i, 1, :, :, :n] = layer.keys, layer.values
    return kv


def gather(chains: Sequence[Segment | None], widths: Sequence[int], capacity: int | None = None,
           into: torch.Tensor | None = None) -> torch.Tensor:
    """A buffer with ``widths[i]`` rows holding chain i's positions, right-aligned at the
    longest chain's end (left padding zeroed: masked out but finite), with room for
    ``capacity`` positions; or written into ``into`` [layers, 2, rows, heads, capacity, dim]
    (any strides: a window of a bigger buffer) and returned.

    One copy per (chain, segment), each for all of the chain's rows at once: on a CPU this beat
    one indexed copy from a pool of the segments (which moves every position twice)."""
    ref = next(c for c in chains if c is not None).chain()[0].kv  # [layers, 2, heads, length, dim]
    n = max(c.end if c is not None else 0 for c in chains)
    kv = into if into is not None else ref.new_empty((ref.shape[0], 2, sum(widths), ref.shape[2], capacity, ref.shape[4]))
    row = 0
    for c, w in zip(chains, widths):
        rows = slice(row, row + w)
        have = c.end if c is not None else 0
        if have < n:
            kv[:, :, rows, :, :n - have] = 0
        for seg in (c.chain() if c is not None else ()):
            at = n - have + seg.start
            kv[:, :, rows, :, at:at + seg.length] = seg.kv[:, :, None]
        row += w
    return kv


def reuse(buffer: torch.Tensor | None, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A contiguous tensor of ``shape`` in ``buffer``'s memory if it is big enough, else a new one
    (on a CPU a fresh allocation of a few hundred MB page-faults on every first write)."""
    if buffer is not None and buffer.dtype == like.dtype and buffer.device == like.device \
            and buffer.untyped_storage().nbytes() >= math.prod(shape) * like.element_size():
        return like.new_empty(0).set_(buffer.untyped_storage(), 0, shape)
    return like.new_empty(shape)


# ---- the cache argument, across transformers versions ----------------------------------------

_CACHE_ARG: dict[type, str] = {}


def cache_arguments(model: torch.nn.Module, cache) -> dict:
    """Keyword arguments that hand ``cache`` to ``model.forward``: ``cache=`` where the model
    takes it (transformers >= 5.2x, which deprecates the old name), else ``past_key_values=``."""
    cls = type(model)
    name = _CACHE_ARG.get(cls)
    if name is None:
        params = inspect.signature(model.forward).parameters
        name = _CACHE_ARG[cls] = "cache" if "cache" in params else "past_key_values"
    return {name: cache, "use_cache": cache is not None}


def forward_with_cache(module: torch.nn.Module, input_ids, attention_mask, position_ids, cache=None):
    """``module``'s forward pass on positions after ``cache`` (None: no cache kept)."""
    return module(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  **cache_arguments(module, cache))


def returned_cache(output) -> Any:
    """The cache a forward pass returned, under either name."""
    found = getattr(output, "cache", None)
    return found if found is not None else output.past_key_values
