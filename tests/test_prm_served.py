"""Served PRMs (reward_models/served.py): an adapter's model behind a server scores as the in-process adapter.

The default tests run against ``ServerDouble`` (tests/support.py), a test double in a thread that answers
the few requests the served PRMs make (``/v1/models``, ``/pooling``, ``/v1/completions`` with
``prompt_logprobs``, a verifier's ``POST``) from local transformers models: it checks the client (rows,
alignment, heads, errors, retries, keys), not vLLM. The ``vllm``-marked tests at the end run against a
real ``vllm serve``.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import time

import pytest

from reward_models import load_prm
from reward_models.registry import check_prm
from reward_models.testing import build_tokenizer, save_causal_lm, save_qwen2_process_reward_model, save_value_head
from reward_models.vllm_features import backbone_dir, backbone_module
from support import ServerDouble, policy_double, pooling_double
from treesearch.protocols import Chain

pytest.importorskip("openai")
from treesearch.serving import ServerError  # noqa: E402

CHAINS = [Chain("1+2*3", ("Step 1: 2*3=6\n", "Step 2: 1+6=7\n", "The answer is: 7")),
          Chain("1+2*3", ("Step 1: 2*3=6\n", "Step 2: 1+6=8\n")),
          Chain("9-4", ("Step 1: 9-4=5 ки\n", "The answer is: 5"))]
KEY = "sk-test-SECRET-123"
QWEN_PRM = dict(model_class="AutoModel", trust_remote_code=True)  # its tokenizer is passed in (see test_prm_vllm)


SAVES = {
    "value_head": lambda d, tok: save_value_head(d, "llama", tok),
    "step_tag": lambda d, tok: save_causal_lm(d, "llama", tok),
    "llemma": lambda d, tok: save_causal_lm(d, "llama", tok, head_rows=2),
    "qwen_prm": lambda d, tok: save_qwen2_process_reward_model(d, tok),
    "self_score": lambda d, tok: save_causal_lm(d, "llama", tok),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """adapter -> (directory, tokenizer, adapter options)."""
    out = {}
    for adapter, save in SAVES.items():
        tok = build_tokenizer(chat_template=adapter == "qwen_prm")
        path = str(tmp_path_factory.mktemp(adapter))
        save(path, tok)
        out[adapter] = (path, tok, {**QWEN_PRM, "tokenizer": tok} if adapter == "qwen_prm" else {})
    return out


def served(checkpoints, adapter: str, double: ServerDouble, **options):
    path, _, adapter_options = checkpoints[adapter]
    endpoint = "completions" if double.logprobs else "pooling"
    return load_prm({"type": "vllm_server", "adapter": adapter, "path": path, "endpoint": endpoint,
                     "base_url": double.url, "dtype": "float32", "cache": False, **adapter_options, **options})


def reference(checkpoints, adapter: str):
    path, _, adapter_options = checkpoints[adapter]
    return load_prm(adapter, path=path, dtype="float32", cache=False, incremental=False, **adapter_options)


def max_difference(a, b) -> float:
    assert [len(x.scores) for x in a] == [len(y.scores) for y in b]
    return max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r.scores, s.scores))


# ---- vllm_server: scores --------------------------------------------------------------------------

@pytest.mark.parametrize("adapter, encoding", [("value_head", "base64"), ("value_head", "float"),
                                               ("step_tag", "base64"), ("llemma", "base64"),
                                               ("qwen_prm", "base64"), ("self_score", "completions")])
def test_served_adapter_gives_the_in_process_scores(checkpoints, one_thread, adapter, encoding):
    path = checkpoints[adapter][0]
    double = policy_double(path) if encoding == "completions" else pooling_double(path, adapter)
    try:
        options = {} if encoding == "completions" else {"encoding_format": encoding}
        prm = served(checkpoints, adapter, double, **options)
        ref = reference(checkpoints, adapter)
        dropped = prm.model if encoding == "completions" else backbone_module(prm.model)
        assert all(p.is_meta for p in dropped.parameters())  # the server holds the model
        assert prm.num_parameters == ref.num_parameters > 0
        want, got = ref.score(CHAINS), prm.score(CHAINS)
        assert max_difference(want, got) < 1e-3
        assert [r.processed_tokens for r in want] == [r.processed_tokens for r in got]
        assert len({round(s, 4) for r in want for s in r.scores}) > 2  # the scores are not all alike
        # One request per chain, its ids unpadded and whole (no KV cache on a server).
        sent = [b["input"][0] if p == "/pooling" else b["prompt"] for p, b in double.posts]
        assert sorted(map(len, sent)) == sorted(r.processed_tokens for r in want)
        assert prm.server_report() is None
        prm.close()
        prm.close()  # idempotent
    finally:
        double.stop()


def test_a_503_is_retried_and_reported(checkpoints, one_thread):
    double = pooling_double(checkpoints["value_head"][0], "value_head")
    try:
        prm = served(checkpoints, "value_head", double)
        double.faults.append((503, {"error": {"message": "busy"}}))
        got = prm.score(CHAINS[:1])
        assert max_difference(reference(checkpoints, "value_head").score(CHAINS[:1]), got) < 1e-3
        assert prm.server_report() == f"vllm_server PRM: retried answers: 1 x 503 from {double.url}"
        prm.close()
    finally:
        double.stop()


def test_a_server_that_is_down_is_a_server_error_naming_it(checkpoints, one_thread):
    double = pooling_double(checkpoints["value_head"][0], "value_head")
    url = double.url
    prm = served(checkpoints, "value_head", double, max_retries=0, timeout=5)
    double.stop()
    with pytest.raises(ServerError, match=f"vllm_server PRM {url}: unreachable"):
        prm.score(CHAINS)
    prm.close()
    with pytest.raises(ServerError, match=f"vllm_server PRM {url} does not answer"):  # at start
        served(checkpoints, "value_head", double)


def _drop_last_token(path, answer):
    row = answer["data"][0]
    row["data"] = row["data"][:-1] if isinstance(row["data"], list) else \
        base64.b64encode(base64.b64decode(row["data"])[:-4]).decode()
    return answer


def _drop_key(path, answer):
    del answer["choices"][0]["prompt_logprobs"]
    return answer


def _shift(path, answer):
    lps = answer["choices"][0]["prompt_logprobs"]
    answer["choices"][0]["prompt_logprobs"] = [None, *lps[2:], lps[-1]]  # one position off, right length
    return answer


@pytest.mark.parametrize("adapter, edit, message", [
    ("value_head", _drop_last_token, r"/pooling: malformed answer: \d+ bytes of float32 for the \d+-token input"),
    ("value_head", lambda p, a: {**a, "data": a["data"] * 2}, "2 items in 'data' for the one input sent"),
    ("value_head", lambda p, a: {"object": "list"}, "no list 'data' in the answer"),
    ("self_score", _drop_key, "no prompt_logprobs for the"),
    ("self_score", _shift, "no log-probability of prompt token"),
])
def test_a_malformed_answer_is_a_clear_error(checkpoints, one_thread, monkeypatch, adapter, edit, message):
    monkeypatch.setenv("PRM_KEY", KEY)
    path = checkpoints[adapter][0]
    double = policy_double(path, key=KEY) if adapter == "self_score" else pooling_double(path, adapter, key=KEY)
    try:
        prm = served(checkpoints, adapter, double, api_key_env="PRM_KEY")
        double.edit = edit
        with pytest.raises(ServerError, match=message) as err:
            prm.score(CHAINS)
        assert f"vllm_server PRM {double.root}/" in str(err.value) and KEY not in str(err.value)
        prm.close()
    finally:
        double.stop()


def test_a_row_of_the_wrong_length_as_floats_is_an_error(checkpoints, one_thread):
    double = pooling_double(checkpoints["value_head"][0], "value_head")
    try:
        prm = served(checkpoints, "value_head", double, encoding_format="float")
        double.edit = _drop_last_token
        with pytest.raises(ServerError, match=r"outputs of shape \[\d+, 32\] for the \d+-token input sent"):
            prm.score(CHAINS)
        prm.close()
    finally:
        double.stop()


def test_the_key_comes_from_the_environment_and_never_shows(checkpoints, one_thread, monkeypatch):
    monkeypatch.setenv("PRM_KEY", KEY)
    double = pooling_double(checkpoints["value_head"][0], "value_head", key=KEY)
    try:
        prm = served(checkpoints, "value_head", double, api_key_env="PRM_KEY")
        prm.score(CHAINS[:1])  # the double refuses any other key
        double.faults.append((400, {"error": {"message": "bad request from {auth}"}}))
        with pytest.raises(ServerError, match="answered 400: .*bad request from Bearer \\*\\*\\*") as err:
            prm.score(CHAINS[1:2])
        assert KEY not in str(err.value)
        prm.close()
    finally:
        double.stop()


# ---- check (treesearch check, before any model loads) ---------------------------------------------

def test_check_refuses_what_it_can_tell_before_loading(checkpoints, monkeypatch):
    monkeypatch.delenv("PRM_KEY_UNSET", raising=False)
    cfg = {"type": "vllm_server", "adapter": "value_head", "path": checkpoints["value_head"][0]}
    with pytest.raises(ValueError) as err:
        check_prm({**cfg, "api_key": KEY})
    assert "never written in a config" in str(err.value) and "\n" not in str(err.value)
    assert KEY not in str(err.value)
    with pytest.raises(ValueError, match="'PRM_KEY_UNSET', which is not set"):
        check_prm({**cfg, "api_key_env": "PRM_KEY_UNSET"})
    with pytest.raises(ValueError, match=r"runs the adapters \[.*\], not 'outcome'"):
        check_prm({**cfg, "adapter": "outcome"})
    with pytest.raises(ValueError, match=r"'completions' endpoint\) PRM backend runs the adapters \['likelihood'"):
        check_prm({**cfg, "endpoint": "completions"})
    with pytest.raises(ServerError, match=r"vllm_server PRM http://127.0.0.1:9/v1 does not answer"):
        check_prm({**cfg, "base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(ValueError, match="num_parameters: required for the http PRM"):
        check_prm({"type": "http", "url": "http://127.0.0.1:9/score"})
    with pytest.raises(ValueError, match="never written in a config"):
        check_prm({"type": "http", "url": "http://127.0.0.1:9/score", "num_parameters": 0, "api_key": KEY})
    with pytest.raises(ServerError, match=r"http PRM http://127.0.0.1:9/score does not answer"):
        check_prm({"type": "http", "url": "http://127.0.0.1:9/score", "num_parameters": 0})


def test_check_passes_on_live_servers_and_names_the_model(checkpoints, monkeypatch):
    monkeypatch.setenv("PRM_KEY", KEY)
    double = ServerDouble(verifier=lambda q, steps: [0.5] * len(steps), key=KEY)
    try:
        cfg = {"type": "vllm_server", "adapter": "value_head", "base_url": double.url, "api_key_env": "PRM_KEY"}
        check_prm(cfg)
        check_prm({**cfg, "model": "tiny"})
        with pytest.raises(ServerError, match=r"serves \['tiny'\], not 'other'"):
            check_prm({**cfg, "model": "other"})
        check_prm({"type": "http", "url": f"{double.root}/score", "num_parameters": 7, "api_key_env": "PRM_KEY"})
        with pytest.raises(ServerError, match=f"http PRM {double.root}/nowhere answered 404 to an empty batch"):
            check_prm({"type": "http", "url": f"{double.root}/nowhere", "num_parameters": 7,
                       "api_key_env": "PRM_KEY"})
    finally:
        double.stop()


# ---- http: a verifier of the user's own ------------------------------------------------------------

def step_verdicts(question: str, steps: list[str]) -> list[float]:
    return [1.0 / (1 + len(s)) for s in steps]


def test_http_verifier_scores_batches_and_caches(monkeypatch):
    monkeypatch.setenv("PRM_KEY", KEY)
    double = ServerDouble(verifier=step_verdicts, key=KEY)
    try:
        prm = load_prm({"type": "http", "url": f"{double.root}/score", "num_parameters": 1000,
                        "max_batch_chains": 2, "api_key_env": "PRM_KEY"})
        chains = [*CHAINS, CHAINS[0], Chain("2+2", ("4",)), Chain("3+3", ("6",))]
        got = prm.score(chains)
        assert [r.scores for r in got] == [step_verdicts(c.question, list(c.steps)) for c in chains]
        assert got[0].processed_tokens == len(CHAINS[0].question) + sum(map(len, CHAINS[0].steps))
        assert got[3].processed_tokens == 0  # a duplicate in the same call is sent once
        # 5 distinct chains, 2 per request (the requests of a call go out at once: any order)
        assert sorted(len(b["chains"]) for _, b in double.posts) == [1, 2, 2]
        assert prm.num_parameters == 1000
        again = prm.score(chains[:2])  # scored already: nothing is sent
        assert len(double.posts) == 3 and [r.processed_tokens for r in again] == [0, 0]
        prm.forget()
        prm.score(chains[:1])
        assert len(double.posts) == 4
        double.faults.append((503, {"error": "busy"}))
        prm.score([Chain("5+5", ("10",))])
        assert prm.server_report() == f"http PRM: retried answers: 1 x 503 from {double.root}/score"
        prm.close()
    finally:
        double.stop()


@pytest.mark.parametrize("edit, message", [
    (lambda p, a: {"processed_tokens": a["processed_tokens"]}, "answered without the key 'scores'"),
    (lambda p, a: {"scores": a["scores"][:1]}, "answered 1 score lists for 2 chains"),
    (lambda p, a: {"scores": [a["scores"][0], a["scores"][1][:1]]}, "chain 2: 1 scores for 2 steps"),
    (lambda p, a: {"scores": [a["scores"][0], ["good", 0.5]]}, "chain 2: score 0 is 'good', not a finite number"),
    (lambda p, a: {**a, "processed_tokens": [3, -1]}, "chain 2: processed_tokens -1 is not an integer >= 0"),
])
def test_http_verifier_malformed_answers(monkeypatch, edit, message):
    monkeypatch.setenv("PRM_KEY", KEY)
    double = ServerDouble(verifier=step_verdicts, key=KEY)
    try:
        prm = load_prm({"type": "http", "url": f"{double.root}/score", "num_parameters": 0, "api_key_env": "PRM_KEY"})
        prm.score(CHAINS[:1])  # cached: the next call sends the other two, which are chains 1 and 2 of it
        double.edit = edit
        with pytest.raises(ServerError, match=f"http PRM {double.root}/score: malformed answer: {message}") as err:
            prm.score(CHAINS)
        assert KEY not in str(err.value)
        prm.close()
    finally:
        double.stop()


def test_http_options_are_checked():
    with pytest.raises(ValueError, match="num_parameters: required for the http PRM, an integer >= 0"):
        load_prm({"type": "http", "url": "http://127.0.0.1:9/score", "num_parameters": -1})
    with pytest.raises(ValueError, match="url or as base_url, not both"):
        load_prm({"type": "http", "url": "http://127.0.0.1:9/score", "base_url": "http://127.0.0.1:9/score",
                  "num_parameters": 0})
    with pytest.raises(ValueError, match=r"the http PRM has no option\(s\) \['max_batch'\]; it takes url"):
        check_prm({"type": "http", "url": "http://127.0.0.1:9/score", "num_parameters": 0, "max_batch": 2})
    down = load_prm({"type": "http", "url": "http://127.0.0.1:9/score", "num_parameters": 0, "max_retries": 0})
    with pytest.raises(ServerError, match="http PRM http://127.0.0.1:9/score: unreachable"):
        down.score(CHAINS)
    down.close()


# ---- against a real `vllm serve` ------------------------------------------------------------------

needs_vllm = [pytest.mark.vllm, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                   reason="vllm not installed")]
SIZE = dict(hidden=128, heads=2, kv_heads=2)  # a head size vLLM's CPU attention takes


@pytest.mark.parametrize("adapter", [
    pytest.param("value_head", marks=needs_vllm),
    pytest.param("qwen_prm", marks=needs_vllm),
    pytest.param("self_score", marks=needs_vllm),
])
def test_vllm_serve_gives_the_in_process_scores(tmp_path, adapter):
    from treesearch.vllm_server import VllmServer

    tok = build_tokenizer(chat_template=adapter == "qwen_prm")
    path = str(tmp_path / adapter)
    {"value_head": lambda: save_value_head(path, "llama", tok, **SIZE),
     "qwen_prm": lambda: save_qwen2_process_reward_model(path, tok, **SIZE),
     "self_score": lambda: save_causal_lm(path, "llama", tok, **SIZE)}[adapter]()
    options = {**QWEN_PRM, "tokenizer": tok} if adapter == "qwen_prm" else {}
    runner, served_dir, extra = "pooling", backbone_dir(path), ()  # a value-head directory's backbone, no head file
    if adapter == "self_score":
        runner = "generate"  # the policy's own server
    if adapter == "qwen_prm":  # the classifier's logits per token
        extra = ("--trust-remote-code", "--pooler-config", json.dumps(
            {"task": "token_classify", "tok_pooling_type": "ALL", "use_activation": False}))
    ref = load_prm(adapter, path=path, dtype="float32", cache=False, incremental=False, **options).score(CHAINS)
    with VllmServer(served_dir, runner=runner, served_model_name="prm", extra_args=extra,
                    log_path=str(tmp_path / "server.log")) as server:
        t = time.monotonic()
        prm = load_prm({"type": "vllm_server", "adapter": adapter, "path": path, "base_url": server.url,
                        "endpoint": "completions" if runner == "generate" else "pooling", "dtype": "float32",
                        "cache": False, "timeout": 120, **options})
        got = prm.score(CHAINS)
        took = time.monotonic() - t
        prm.close()
    if served_dir != path:
        shutil.rmtree(served_dir)  # the links backbone_dir made
    diff = max_difference(ref, got)
    print(f"{adapter}: max |served - in-process| = {diff:.2e} ({took:.1f} s)")
    assert diff < 1e-3
    assert [r.processed_tokens for r in ref] == [r.processed_tokens for r in got]
    assert len({round(s, 4) for r in ref for s in r.scores}) > 2
