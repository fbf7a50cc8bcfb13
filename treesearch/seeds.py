"""Every seed a search uses, derived in one place.

The chain is record seed + problem id -> problem seed -> node seed (per expansion) -> row seed
(per sample), and the sampler hashes the row seed with the token position. Each link is a pure
function of its inputs, never of a batch or a global RNG, so a problem's samples are the same
alone, batched, sharded or resumed. The values are part of every stored record: changing any
function here changes every sample, so they stay as they were first written.
"""
from __future__ import annotations

import hashlib

_M64 = 0xFFFFFFFFFFFFFFFF
_M32 = 0xFFFFFFFF


def problem_seed(seed: int, problem_id: str) -> int:
    """A problem's 63-bit seed from a record's seed and the problem id (blake2b: the same on
    every machine and Python run, unlike ``hash``)."""
    digest = hashlib.blake2b(f"{seed}\x1f{problem_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFFFFFFFFFF


def mix(a: int, b: int) -> int:
    """A 63-bit hash of two integers (splitmix64): a problem's seed and a node id give the node's
    expansion seed; an index gives a problem seed when the Runner is called without seeds."""
    x = (a * 0x9E3779B97F4A7C15 + b + 0x632BE59BD9B4E019) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


def seed32(seed: int, k: int) -> int:
    """The 32-bit row seed of sample k of an expansion seeded with ``seed`` (the sampler's hash
    works on 32-bit integers in int64 tensors)."""
    x = (seed * 0x9E3779B1 + k * 0x85EBCA77 + 0x165667B1) & _M64
    x ^= x >> 29
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    return (x ^ (x >> 32)) & _M32
