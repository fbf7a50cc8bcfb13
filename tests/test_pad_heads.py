"""``experiments.builtin.pad_heads``: a copy with attention heads zero-padded to a size vLLM's CPU attention
takes computes the same logits and greedy tokens as the built-in checkpoint."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from experiments.builtin.pad_heads import default_head_dim, main, pad_heads
from treesearch.builtin import task

CHECKPOINTS = os.path.join(os.path.dirname(__file__), "..", "experiments", "builtin", "checkpoints")
PROMPTS = [p.question + "\n" for p in task.test_split(12)]  # the built-in prompt template: "{question}\n"
GREEDY_TOKENS = 40


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _compare(src: str, dst: str) -> float:
    """Max |logit difference| over the prompts' real positions; asserts the greedy tokens agree."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    a, b = _load(src), _load(dst)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        mask = enc["attention_mask"].bool()
        diff = (a(**enc).logits - b(**enc).logits).abs()[mask].max().item()
        kw = dict(max_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        assert torch.equal(a.generate(**enc, **kw), b.generate(**enc, **kw))
    return diff


@pytest.mark.parametrize("name, head_dim, expected, theta", [
    ("policy-large", None, 32, 1e4),  # 16 -> 32: stride 2, same rope base
    ("prm", None, 96, 1e4),  # 24 -> 96: stride 4, same rope base
    ("prm", 32, 32, 1e4 ** (32 / 24)),  # not a multiple: the rope base is raised to the power 32/24
])
def test_padded_heads_give_the_same_logits_and_greedy_tokens(tmp_path, name, head_dim, expected, theta):
    src = os.path.join(CHECKPOINTS, name)
    dst = pad_heads(src, str(tmp_path / name), head_dim)
    with open(os.path.join(dst, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["head_dim"] == expected
    assert cfg["rope_parameters"]["rope_theta"] == pytest.approx(theta, rel=1e-12)
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(os.listdir(dst))
    assert _compare(src, dst) < 1e-4


def test_default_head_dim_is_the_smallest_supported_multiple():
    assert [default_head_dim(d) for d in (16, 24, 32, 40, 64)] == [32, 96, 32, 80, 64]
    with pytest.raises(ValueError):
        default_head_dim(100)


def test_command_line(tmp_path, capsys):
    src = os.path.join(CHECKPOINTS, "policy-small")
    main([src, str(tmp_path / "out"), "--head-dim", "64"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    with open(tmp_path / "out" / "config.json") as f:
        assert json.load(f)["head_dim"] == 64
    assert _compare(src, str(tmp_path / "out")) < 1e-4


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed")
def test_a_served_padded_policy_gives_the_original_greedy_tokens(tmp_path):
    """vLLM on a CPU serves the padded policy-large; its greedy completions are transformers' on the original."""
    from openai import OpenAI
    from transformers import AutoTokenizer

    from treesearch.vllm_server import VllmServer

    src = os.path.join(CHECKPOINTS, "policy-large")
    dst = pad_heads(src, str(tmp_path / "policy-large-h32"))
    tok = AutoTokenizer.from_pretrained(src)
    prompts = [tok(p).input_ids for p in PROMPTS]  # with BOS: token-id prompts are used as they are
    model = _load(src)
    expected = []
    with torch.no_grad():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), max_new_tokens=GREEDY_TOKENS, do_sample=False,
                                 pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
            expected.append(out[:out.index(tok.eos_token_id) + 1] if tok.eos_token_id in out else out)
    with VllmServer(dst, log_path=str(tmp_path / "server.log")) as server:
        client = OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)
        r = client.completions.create(model=server.served_model_name, prompt=prompts, max_tokens=GREEDY_TOKENS,
                                      temperature=0, extra_body={"return_token_ids": True})
        got = [c.model_extra["token_ids"] for c in sorted(r.choices, key=lambda c: c.index)]
    assert got == expected
    assert any(tok.eos_token_id in e for e in expected)  # the answers end, not just run to the cap
