"""The prefix KV store: segment chains, shared-prefix byte accounting, LRU eviction; gathering chains into a batch."""
import random

import pytest
import torch

from treesearch.kv_cache import PrefixKVStore, Segment, gather


def seg(length, parent=None, layers=2, fill=0.0):
    return Segment(torch.full((layers, 2, 1, length, 4), fill), parent.end if parent else 0, parent)


def per_position_bytes(layers=2):
    return layers * 2 * 4 * 4  # (k, v) per layer, 4 floats of 4 bytes


def test_siblings_share_their_parent_once():
    root = seg(10)
    a, b = seg(3, root), seg(5, root)
    store = PrefixKVStore(max_bytes=10**6)
    store.put((1,), a)
    store.put((2,), b)
    assert store.nbytes == (10 + 3 + 5) * per_position_bytes()
    assert store.pop((1,)) is a and store.nbytes == (10 + 5) * per_position_bytes()
    assert store.pop((2,)) is b and store.nbytes == 0
    assert store.pop((2,)) is None and (store.hits, store.misses) == (2, 1)


def test_eviction_is_oldest_first_and_frees_unshared_ancestors():
    root = seg(10)
    store = PrefixKVStore(max_bytes=14 * per_position_bytes())
    store.put((1,), seg(2, root))
    store.put((2,), seg(2, root))
    store.put((3,), seg(2, root))  # 10 + 6 > 14: the oldest goes
    assert (1,) not in store._entries and len(store) == 2
    assert store.nbytes == 14 * per_position_bytes()
    store.clear()
    assert store.nbytes == 0 and root.refs == 0


def test_chain_and_truncation():
    root = seg(4, fill=1.0)
    child = seg(3, root, fill=2.0)
    assert [s.start for s in child.chain()] == [0, 4] and child.end == 7
    cut = child.truncated(5)
    assert cut.end == 5 and cut.parent is root and torch.equal(cut.kv, child.kv[:, :, :, :1])
    assert child.truncated(4) is root and child.truncated(7) is child and child.truncated(0) is None


def test_a_segment_must_start_where_its_parent_ends():
    with pytest.raises(ValueError, match="starts at 2"):
        Segment(seg(1).kv, 2, seg(3))


def random_tree(rng, nodes=40):
    """Segments of random lengths, each extending a random earlier one (or a new root)."""
    segs = []
    for _ in range(nodes):
        parent = rng.choice(segs) if segs and rng.random() < 0.85 else None
        segs.append(Segment(torch.randn(2, 2, 3, rng.randint(1, 6), 4), parent.end if parent else 0, parent))
    return segs


def test_the_store_counts_each_held_segment_once_whatever_the_order():
    rng = random.Random(0)
    segs = random_tree(rng)
    store = PrefixKVStore(max_bytes=10**9)
    held: dict[int, Segment] = {}
    for _ in range(300):
        key = rng.randrange(25)
        if rng.random() < 0.6:
            store.put(key, held.setdefault(key, rng.choice(segs)))
        elif key in held:
            assert store.pop(key) is held.pop(key)
        live = {id(s): s for e in held.values() for s in e.chain()}
        assert store.nbytes == sum(s.nbytes for s in live.values())
        assert all(s.refs > 0 for s in live.values()) and all(s.refs == 0 for s in segs if id(s) not in live)
    store.clear()
    assert store.nbytes == 0 and all(s.refs == 0 for s in segs)


def test_gather_equals_each_chain_concatenated_and_right_aligned():
    """Shared prefixes, chains cut inside or at the end of a segment, absent chains, several rows per chain,
    written into a window of a bigger buffer (other strides): row for row the chain's segments end to end."""
    rng = random.Random(1)
    segs = random_tree(rng)
    chains = []
    for _ in range(12):
        c = rng.choice(segs)
        chains.append(None if rng.random() < 0.1 else c.truncated(rng.randint(1, c.end)))
    chains.append(segs[-1])
    widths = [rng.randint(1, 3) for _ in chains]
    n = max(c.end if c is not None else 0 for c in chains)
    big = torch.full((2, 2, sum(widths) + 2, 3, n + 9, 4), float("nan"))
    window = big[:, :, 1:-1, :, 5:]
    assert gather(chains, widths, into=window) is window
    assert torch.equal(gather(chains, widths, n + 4)[..., :n, :], window[..., :n, :])
    row = 0
    for c, w in zip(chains, widths):
        parts = [torch.zeros(2, 2, 3, n - (c.end if c is not None else 0), 4)] + [s.kv for s in (c.chain() if c else ())]
        want = torch.cat(parts, 3)
        for r in range(row, row + w):
            assert torch.equal(window[:, :, r, :, :n], want)
        row += w
