"""Incremental PRM scoring: a child scored by extending its parent's stored KV equals full re-encoding."""
from __future__ import annotations

import pytest

from reward_models import Chain
from support import KINDS

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTION = "Compute 7-4 and then a bit more."
STEPS = ("Step 1: a ки b", "Step 2: + - ки\n", "x<extra_0>y", "Step 4:\nso far 3", "Step 5: 3*2=6", "The answer is 6")
SIBLINGS = ("Step 3: a much longer sibling step to make padding matter", "Step 3: 1", "Step 3: +\n")


def _full(make, kind, chains, **kw):
    """Each chain re-encoded from the question on, alone."""
    prm = make(kind, cache=False, incremental=False, **kw)
    return [prm.score([c])[0] for c in chains]


def _assert_close(got, want, tol=1e-5):
    for g, w in zip(got, want):
        assert len(g.scores) == len(w.scores)
        assert max(abs(a - b) for a, b in zip(g.scores, w.scores)) <= tol, (g.scores, w.scores)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("kind", KINDS + ("likelihood",))
def test_growing_chain_scored_step_by_step_equals_full_encoding(make_prm, kind, padding_side):
    prm = make_prm(kind, cache=False, padding_side=padding_side)
    chains = [Chain(QUESTION, STEPS[:k]) for k in range(1, 7)]
    want = _full(make_prm, kind, chains, padding_side=padding_side)
    got = [prm.score([c])[0] for c in chains]
    _assert_close(got, want)
    lengths = [len(prm.encode(c)) for c in chains]
    # The first chain is read in full; each next one feeds its parent's last token and its new step.
    assert [g.processed_tokens for g in got] == [lengths[0]] + [b - a + 1 for a, b in zip(lengths, lengths[1:])]
    assert prm.scorer.stats.incremental == 5
    assert [w.processed_tokens for w in want] == lengths


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("kind", KINDS + ("likelihood",))
def test_siblings_of_different_lengths_in_one_batch(make_prm, kind, padding_side):
    prm = make_prm(kind, cache=False, padding_side=padding_side)
    parent = Chain(QUESTION, STEPS[:2])
    children = [Chain(QUESTION, STEPS[:2] + (s,)) for s in SIBLINGS]
    other = Chain("Another question?", ("Step 1: 5",))  # no ancestor: encoded in full beside them
    prm.score([parent])
    got = prm.score(children + [other])
    _assert_close(got, _full(make_prm, kind, children + [other], padding_side=padding_side))
    assert prm.scorer.stats.incremental == len(children)


@pytest.mark.parametrize("kind", ["step_tag", "classification", "self_score"])
def test_first_steps_of_one_question_share_its_stored_kv(make_prm, kind):
    prm = make_prm(kind, cache=False)
    first = [Chain(QUESTION, (s,)) for s in SIBLINGS]
    got = [prm.score([c])[0] for c in first]
    _assert_close(got, _full(make_prm, kind, first))
    encs = [prm.encode(c) for c in first]
    assert got[0].processed_tokens == len(encs[0])
    assert [g.processed_tokens for g in got[1:]] == [len(e) - e.prompt_length + 1 for e in encs[1:]]


@pytest.mark.parametrize("kind", ["value_head", "outcome"])
def test_chains_of_one_question_in_one_request_read_the_question_once(make_prm, kind):
    prm = make_prm(kind, cache=False)
    chains = [Chain(QUESTION, (s, "The answer is 6")) for s in SIBLINGS] + [Chain("Other?", ("Step 1: 5",))]
    got = prm.score(chains)
    _assert_close(got, _full(make_prm, kind, chains))
    encs = [prm.encode(c) for c in chains]
    assert got[0].processed_tokens == len(encs[0]) and got[-1].processed_tokens == len(encs[-1])
    assert [g.processed_tokens for g in got[1:-1]] == [len(e) - e.prompt_length + 1 for e in encs[1:-1]]


@pytest.mark.parametrize("kind", ["step_tag", "value_head", "self_score"])
def test_an_evicted_parent_falls_back_to_an_older_ancestor_then_to_full_encoding(make_prm, kind):
    prm = make_prm(kind, cache=False)
    chains = [Chain(QUESTION, STEPS[:k]) for k in range(1, 5)]
    want = _full(make_prm, kind, chains)
    store = prm.scorer.kv_store
    prm.score(chains[:2])  # scored in one call: only the longer one runs (the shorter is its prefix)
    prm.score([chains[0]])
    assert store.pop((QUESTION, STEPS[:2])) is not None  # evict the parent of chains[2]
    got = prm.score([chains[2]])[0]
    _assert_close([got], [want[2]])  # two fresh steps on top of chains[0]
    assert got.processed_tokens == len(prm.encode(chains[2])) - len(prm.encode(chains[0])) + 1
    store.clear()
    got = prm.score([chains[3]])[0]
    _assert_close([got], [want[3]])
    assert got.processed_tokens == len(prm.encode(chains[3]))  # nothing stored: read in full


def test_outcome_rm_reuses_kv_but_rescores_every_step(make_prm):
    prm = make_prm("outcome", cache=False)
    short, long = Chain(QUESTION, STEPS[:2]), Chain(QUESTION, STEPS[:4])
    prm.score([short])
    got = prm.score([long])[0]
    _assert_close([got], _full(make_prm, "outcome", [long]))
    assert len(set(got.scores)) == 1 and prm.scorer.stats.incremental == 1


def test_the_kv_store_stays_within_its_byte_bound(make_prm):
    unbounded = make_prm("step_tag", cache=False)
    chains = [Chain(QUESTION, STEPS[:k] + (s,)) for k in range(0, 5) for s in SIBLINGS]
    for c in chains:
        unbounded.score([c])
    full_bytes = unbounded.scorer.kv_store.nbytes
    bound = full_bytes // 3
    prm = make_prm("step_tag", cache=False, kv_cache_bytes=bound)
    for c in chains:
        prm.score([c])
        assert 0 < prm.scorer.kv_store.nbytes <= bound
    assert len(prm.scorer.kv_store) < len(unbounded.scorer.kv_store)
    _assert_close(prm.score(chains), _full(make_prm, "step_tag", chains))


def test_forget_empties_scores_and_kv(make_prm):
    prm = make_prm("value_head")
    c = Chain(QUESTION, STEPS[:3])
    first = prm.score([c])[0]
    assert prm.score([c])[0].processed_tokens == 0
    prm.forget()
    assert len(prm.scorer.kv_store) == 0 and len(prm.cache) == 0
    assert prm.score([c])[0].processed_tokens == first.processed_tokens


def test_unknown_load_option_names_the_known_ones(make_prm):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['max_tokens'\].*max_batch_tokens"):
        make_prm("step_tag", max_tokens=5)
