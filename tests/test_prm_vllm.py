"""The vllm PRM backend: the project's heads on vLLM's hidden states score as the transformers adapters do."""
from __future__ import annotations

import importlib.util

import pytest

from reward_models import load_prm
from reward_models.testing import build_tokenizer, save_causal_lm, save_qwen2_process_reward_model, save_value_head
from reward_models.vllm_features import backbone_module
from treesearch.protocols import Chain

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                   reason="vllm not installed")]
SIZE = dict(hidden=128, heads=2, kv_heads=2)  # a head size vLLM's attention backends take
CHAINS = [Chain("1+2*3", ("Step 1: 2*3=6\n", "Step 2: 1+6=7\n", "The answer is: 7")),
          Chain("1+2*3", ("Step 1: 2*3=6\n", "Step 2: 1+6=8\n")),
          Chain("9-4", ("Step 1: 9-4=5 ки\n", "The answer is: 5"))]


# Qwen2.5-Math-PRM's layout: remote code in transformers (AutoModel), native in vLLM; the tokenizer
# is passed in because transformers maps model_type qwen2 to its own tokenizer class.
QWEN_PRM = dict(model_class="AutoModel", trust_remote_code=True)


@pytest.mark.parametrize("adapter, save, options", [
    ("value_head", lambda d, tok: save_value_head(d, "llama", tok, **SIZE), {}),
    ("llemma", lambda d, tok: save_causal_lm(d, "llama", tok, head_rows=2, **SIZE), {}),
    ("step_tag", lambda d, tok: save_causal_lm(d, "llama", tok, **SIZE), {}),
    ("qwen_prm", lambda d, tok: save_qwen2_process_reward_model(d, tok, **SIZE), QWEN_PRM),
])
def test_vllm_gives_the_transformers_scores(tmp_path, adapter, save, options):
    path = str(tmp_path / adapter)
    tok = build_tokenizer(chat_template=adapter == "qwen_prm")
    save(path, tok)
    if adapter == "qwen_prm":
        options = {**options, "tokenizer": tok}
    # The engine reads every chain in full: compare with the transformers adapter doing the same.
    ref = load_prm(adapter, path=path, dtype="float32", cache=False, incremental=False, **options).score(CHAINS)
    prm = load_prm({"type": "vllm", "adapter": adapter, "path": path, "dtype": "float32", "cache": False,
                    "max_model_len": 512, "gpu_memory_utilization": 0.1, **options})
    assert all(p.is_meta for p in backbone_module(prm.model).parameters())  # the engine holds the only copy
    got = prm.score(CHAINS)
    for a, b in zip(ref, got):
        assert len(a.scores) == len(b.scores)
        assert max(abs(x - y) for x, y in zip(a.scores, b.scores)) < 1e-3
        assert a.processed_tokens == b.processed_tokens
    assert len({round(s, 4) for r in ref for s in r.scores}) > 2  # the scores are not all alike
    prm.features.close()  # the next test's engine needs the memory
