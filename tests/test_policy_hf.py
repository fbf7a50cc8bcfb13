"""The transformers policy: batched step decoding, stops, KV reuse, and batch-independent sampling."""
import pytest
import torch

from treesearch.algorithms import MCTS, BeamSearch, Greedy, Rebase, Sampling
from treesearch.ledger import non_embedding_parameters
from treesearch import policy_hf
from treesearch.policy_hf import TransformersPolicy
from treesearch.protocols import ExpandRequest
from treesearch.runner import Runner, SearchLimits
from treesearch.step_format import StepFormat
from treesearch.testing import ScriptedPRM

QUESTIONS = ["12+3", "4*5-1", "99-9"]


def policy(model, tokenizer, **kw):
    return TransformersPolicy(model, tokenizer, StepFormat.preset("newline"), **kw)


def test_greedy_step_matches_transformers_generate(model, tokenizer):
    pol = policy(model, tokenizer)
    prompt = pol.encode_prompt("12+3")
    [out] = pol.expand([ExpandRequest(prompt, 1, seed=0, max_new_tokens=20, greedy=True)])
    ref = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):].tolist()
    step = out.samples[0]
    assert list(step.token_ids) == ref[: len(step.token_ids)]
    assert step.finish_reason in ("delimiter", "step_cap", "eos")


def test_stops_at_delimiter_or_cap(model, tokenizer):
    pol = policy(model, tokenizer)
    reqs = [ExpandRequest(pol.encode_prompt(q), 8, seed=i, max_new_tokens=40) for i, q in enumerate(QUESTIONS)]
    samples = [s for out in pol.expand(reqs) for s in out.samples]
    assert len(samples) == 24
    by_reason = {r: [s for s in samples if s.finish_reason == r] for r in ("delimiter", "step_cap", "eos")}
    assert by_reason["delimiter"], "a random 30-token model emits '\\n' within 40 tokens most of the time"
    for s in by_reason["delimiter"]:
        assert s.text.endswith("\n") and "\n" not in s.text[:-1]
    for s in by_reason["step_cap"]:
        assert len(s.token_ids) == 40 and "\n" not in s.text


@pytest.mark.parametrize("alg", [Greedy(), Sampling(n=4), Rebase(width=4, temperature=0.2)])
def test_kv_reuse_on_and_off_give_identical_steps(model, tokenizer, alg):
    prm = ScriptedPRM(lambda q, steps: (len(steps[-1]) % 7) / 7)
    limits = SearchLimits(max_depth=4, max_step_tokens=12, max_solution_tokens=80)
    trees = {}
    for reuse in (True, False):
        pol = policy(model, tokenizer, reuse_kv=reuse)
        res = Runner(pol, prm, limits=limits, progress=False).run(QUESTIONS, alg, seed=3)
        trees[reuse] = [[(n.depth, n.token_ids) for n in r.tree.nodes] for r in res]
        if reuse:
            on = sum(r.ledger.policy_processed_tokens for r in res)
        else:
            off = sum(r.ledger.policy_processed_tokens for r in res)
    assert trees[True] == trees[False]
    assert on < off  # the prefix is not re-encoded


def test_identical_siblings_share_the_stored_prefix(model, tokenizer):
    pol = policy(model, tokenizer)
    prompt = pol.encode_prompt(QUESTIONS[0])
    a, b = pol.expand([ExpandRequest(prompt, 2, seed=1, max_new_tokens=8, greedy=True)])[0].samples  # greedy: the same step twice
    assert a.token_ids == b.token_ids
    child = prompt + a.token_ids
    outs = pol.expand([ExpandRequest(child, 1, seed=2, max_new_tokens=8), ExpandRequest(child, 1, seed=3, max_new_tokens=8)])
    assert (pol.store.hits, pol.store.misses) == (1, 1)  # the prompt missed once; both children hit
    assert all(o.processed_tokens == len(o.samples[0].token_ids) for o in outs)  # fed: 1 token + the step but its last


def test_a_batch_mixing_cached_and_fresh_prefixes_matches_no_reuse(model, tokenizer):
    def children(pol):
        prompt = pol.encode_prompt(QUESTIONS[0])
        step = pol.expand([ExpandRequest(prompt, 1, seed=1, max_new_tokens=8, greedy=True)])[0].samples[0]
        mixed = [ExpandRequest(prompt + step.token_ids, 2, seed=2, max_new_tokens=8),  # cached (reuse on)
                 ExpandRequest(pol.encode_prompt(QUESTIONS[1]), 3, seed=3, max_new_tokens=8)]  # a fresh prompt
        return [[s.token_ids for s in o.samples] for o in pol.expand(mixed)]

    on, off = policy(model, tokenizer), policy(model, tokenizer, reuse_kv=False)
    assert children(on) == children(off)
    assert on.store.hits == 1


def test_samples_do_not_depend_on_batch_composition(model, tokenizer):
    pol = policy(model, tokenizer, reuse_kv=False)
    reqs = [ExpandRequest(pol.encode_prompt(q), 3, seed=7 + i, max_new_tokens=30) for i, q in enumerate(QUESTIONS)]
    together = pol.expand(reqs)
    alone = [pol.expand([r])[0] for r in reversed(reqs)][::-1]
    assert [[s.token_ids for s in o.samples] for o in together] == [[s.token_ids for s in o.samples] for o in alone]
    # different seeds give different samples
    assert together[0].samples[0].token_ids != together[0].samples[1].token_ids


@pytest.mark.parametrize("alg", [Greedy(), Sampling(n=3), BeamSearch(n=4, beam_width=2), Rebase(width=4),
                                 MCTS(expansions=3, root_width=2), MCTS(expansions=2, root_width=2, rollout=True)])
def test_every_algorithm_end_to_end_with_exact_ledger(model, tokenizer, alg):
    pol = policy(model, tokenizer)
    prm = ScriptedPRM(lambda q, steps: 0.5 + 0.1 * (len(steps) % 3))
    results = Runner(pol, prm, limits=SearchLimits(max_depth=3, max_step_tokens=10, max_solution_tokens=40),
                     progress=False).run(
        QUESTIONS, alg, seed=1)
    for r in results:
        generated = sum(n.num_tokens for n in r.tree.nodes if not n.is_root)
        assert r.ledger.generated_tokens == generated > 0
        assert r.ledger.paper_flops == 2 * pol.num_parameters * generated
        led = r.ledger
        assert led.policy_processed_tokens >= len(r.tree.root.token_ids)  # the prompt is encoded once at least
        assert led.full_flops == 2 * pol.num_parameters * led.policy_processed_tokens + 2 * prm.num_parameters * led.prm_processed_tokens
        assert all(c.step_scores and len(c.step_scores) == len(c.steps) for c in r.candidates)


def test_buffer_growth_and_the_stop_token_change_no_sample(model, tokenizer, monkeypatch):
    """A CPU batch's KV buffer is laid out again every CPU_ROOM positions, and a one-token delimiter is
    found by its id: against the whole room at once and the decoded-text check, every token is the same
    (fresh prompts, then their children on cached prefixes, across drops of finished rows)."""
    def two_rounds(room, by_id):
        monkeypatch.setattr(policy_hf, "CPU_ROOM", room)
        pol = policy(model, tokenizer)
        assert pol._delimiter_id == tokenizer.convert_tokens_to_ids("\n")  # the character tokenizer's "\n"
        if not by_id:
            pol._delimiter_id = None
        reqs = [ExpandRequest(pol.encode_prompt(q), 5, seed=i, max_new_tokens=30) for i, q in enumerate(QUESTIONS)]
        first = [s for o in pol.expand(reqs) for s in o.samples]
        kids = [ExpandRequest(r.prefix_ids + s.token_ids, 2, seed=9 + k, max_new_tokens=30)
                for k, (r, s) in enumerate(zip([r for r in reqs for _ in range(5)], first)) if s.finish_reason != "eos"]
        second = [s for o in pol.expand(kids) for s in o.samples]
        return [(s.token_ids, s.text, s.finish_reason) for s in first + second], pol.store.hits

    (got, hits), (want, _) = two_rounds(1, True), two_rounds(1000, False)
    assert got == want and hits > 0
    assert {r for _, _, r in got} >= {"delimiter", "step_cap"}


def test_non_embedding_parameters(model):
    emb = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    assert non_embedding_parameters(model) == sum(p.numel() for p in model.parameters()) - emb


def test_bad_options_are_rejected(model, tokenizer):
    with pytest.raises(ValueError, match="prompt_template"):
        policy(model, tokenizer, prompt_template="no placeholder")
    with pytest.raises(ValueError, match="top_p"):
        policy(model, tokenizer, top_p=0.0)
