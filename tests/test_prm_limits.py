"""Every model-backed PRM states its context limit and refuses a longer chain before any forward pass.

A rotary model scores positions past its trained length without error (it extrapolates), so
without this a long chain would get a score of something else, silently.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import reward_models as rm
from reward_models import Chain, ContextLimitError
from reward_models.testing import save_causal_lm
from support import KINDS, pooling_double

pytestmark = pytest.mark.usefixtures("one_thread")

LIMIT = 64  # max_position_embeddings of the short checkpoint below
QUESTION = "What is 12*3?"


@pytest.fixture(scope="module")
def short_lm(tmp_path_factory, tok):
    """A causal LM trained (so its config says) for 64 positions."""
    return save_causal_lm(str(tmp_path_factory.mktemp("short")), "llama", tok, seed=7, max_position_embeddings=LIMIT)


def sized(prm, n: int, steps: int = 1) -> Chain:
    """A chain of exactly ``n`` tokens for ``prm`` (the test tokenizer is one token per character)."""
    base = Chain(QUESTION, ("Step: x",) * steps)
    extra = n - prm.chain_length(base)
    assert extra >= 0
    chain = Chain(QUESTION, base.steps[:-1] + ("Step: x" + "y" * extra,))
    assert prm.chain_length(chain) == n
    return chain


@pytest.mark.parametrize("kind", KINDS + ("likelihood",))
def test_the_limit_is_the_configs_and_chain_length_is_what_scoring_reads(make_prm, kind):
    prm = make_prm(kind, cache=False, incremental=False)
    assert prm.context_limit == 1024  # max_position_embeddings of reward_models.testing.tiny_config
    chain = Chain(QUESTION, ("Step 1: 12*3=36\n", "The answer is 36"))
    [scored] = prm.score([chain])
    assert prm.chain_length(chain) == len(prm.encode(chain)) == scored.processed_tokens


def test_the_builtin_prm_states_its_512_positions():
    prm = rm.load_prm("likelihood", path=Path(__file__).parents[1] / "experiments/builtin/checkpoints/prm")
    assert prm.context_limit == 512


def test_a_chain_at_the_limit_scores_and_one_token_more_is_refused_before_any_forward(short_lm, tok):
    prm = rm.StepTagPRM(short_lm, tokenizer=tok, dtype="float32", incremental=False)
    assert prm.context_limit == LIMIT
    at = sized(prm, LIMIT)
    assert len(prm.score([at])[0].scores) == 1
    past = sized(prm, LIMIT + 1)
    other = Chain("Another question?", ("Step 1: 5",))
    before = prm.scorer.stats.forward_calls
    with pytest.raises(ContextLimitError) as err:
        prm.score([other, past])  # the short chain is not run either: the request fails as a whole
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, ValueError)
    for part in (f"context limit of {LIMIT} tokens", "chain 1 ", f"is {LIMIT + 1} tokens", short_lm,
                 "max_solution_tokens", "max_positions"):
        assert part in message, (part, message)
    assert prm.scorer.stats.forward_calls == before and prm.cache.get(other) is None


def test_max_positions_overrides_the_config_both_ways(short_lm, tok):
    longer = rm.StepTagPRM(short_lm, tokenizer=tok, dtype="float32", max_positions=2 * LIMIT)
    assert longer.context_limit == 2 * LIMIT
    assert len(longer.score([sized(longer, LIMIT + 1)])[0].scores) == 1  # the user vouched for these positions
    shorter = rm.load_prm("step_tag", path=short_lm, tokenizer=tok, dtype="float32", max_positions=40)
    assert shorter.context_limit == 40
    with pytest.raises(ContextLimitError, match="context limit of 40 tokens, .* is 41 tokens"):
        shorter.score([sized(shorter, 41)])
    for bad in (0, -5, "512", 1.5, True):
        with pytest.raises(ValueError, match="max_positions must be an integer >= 1"):
            rm.StepTagPRM(short_lm, tokenizer=tok, max_positions=bad)


@pytest.mark.parametrize("kind", ["step_tag", "value_head", "likelihood"])
def test_an_incremental_child_counts_its_parents_positions(make_prm, kind):
    prm = make_prm(kind, cache=False)
    parent = Chain(QUESTION, ("Step 1: 12*3=36\n",))
    child = Chain(QUESTION, parent.steps + ("The answer is 36",))
    grandchild = Chain(QUESTION, child.steps + ("!",))
    limit, n = prm.chain_length(child), prm.chain_length(grandchild)
    assert n > limit
    prm.context_limit = limit
    prm.score([parent])
    [scored] = prm.score([child])  # at the limit: extends the parent's KV
    assert prm.scorer.stats.incremental == 1 and scored.processed_tokens < limit
    calls = prm.scorer.stats.forward_calls
    with pytest.raises(ContextLimitError, match=f"context limit of {limit} tokens, .* is {n} tokens"):
        prm.score([grandchild])  # feeding only its new step would fit; the positions it reads do not
    assert prm.scorer.stats.forward_calls == calls and prm.scorer.stats.incremental == 1


def test_step_values_are_refused_too(make_prm):
    prm = make_prm("likelihood")
    chain = Chain(QUESTION, ("Step 1: 12*3=36\n",))
    prm.context_limit = prm.chain_length(chain) - 1
    with pytest.raises(ContextLimitError):
        prm.scorer.step_values([chain])


def test_the_vllm_engines_max_model_len_lowers_the_limit(short_lm, tok, monkeypatch):
    from reward_models import vllm_features

    monkeypatch.setattr(vllm_features, "_check", lambda adapter: None)  # vLLM is not installed here
    monkeypatch.setattr(vllm_features, "VllmTokenOutputs", lambda *a, **k: None)  # nor started
    spec = {"type": "vllm", "adapter": "step_tag", "path": short_lm, "tokenizer": tok}
    assert rm.load_prm({**spec, "max_model_len": 48}).context_limit == 48
    assert rm.load_prm({**spec, "max_model_len": 4096}).context_limit == LIMIT
    assert rm.load_prm(spec).context_limit == LIMIT


def test_a_served_prm_refuses_before_sending_and_a_servers_own_refusal_is_one_line(short_lm, tok):
    pytest.importorskip("openai")
    from treesearch.serving import ServerError

    double = pooling_double(short_lm, "step_tag")
    try:
        prm = rm.load_prm({"type": "vllm_server", "adapter": "step_tag", "path": short_lm, "base_url": double.url,
                           "dtype": "float32", "tokenizer": tok, "max_retries": 0})
        assert prm.context_limit == LIMIT
        with pytest.raises(ContextLimitError, match=f"is {LIMIT + 1} tokens"):
            prm.score([sized(prm, LIMIT + 1)])
        assert double.posts == []
        # A server started with a lower --max-model-len answers 400; its message reaches the user as one line.
        double.faults.append((400, {"error": {"message": "This model's maximum context length is 32 tokens. "
                                              "However, you requested 40 tokens in the input.", "code": 400}}))
        with pytest.raises(ServerError) as err:
            prm.score([sized(prm, 40)])
        assert "\n" not in str(err.value) and "answered 400" in str(err.value)
        assert "maximum context length is 32 tokens" in str(err.value)
        prm.close()
    finally:
        double.stop()


def test_a_search_that_outgrows_the_prm_ends_in_one_line(capsys, tmp_path):
    from experiments.console import guarded
    from reward_models import ContextLimitError

    def search():
        raise ContextLimitError("P has a context limit of 64 tokens, but chain 0 of this request is 65 tokens: "
                                "lower the search's max_solution_tokens")

    assert guarded("treesearch run", False, search, resume="treesearch run x.yaml", results=str(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "context limit of 64" in err[0] and "then `treesearch run x.yaml` resumes" in err[0]
