"""The prefix KV store: segment chains, shared-prefix byte accounting, LRU eviction."""
import pytest
import torch

from treesearch.kv_cache import PrefixKVStore, Segment


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
