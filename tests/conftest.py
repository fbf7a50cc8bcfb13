"""Shared fixtures: a tiny random Llama and a character tokenizer, built locally (no downloads), and the
PRM checkpoints of real architectures the reward-model tests share. Plain helpers live in support.py."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from treesearch.builtin.tokenizer import build_tokenizer
from treesearch.testing import tiny_llama


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """The built-in task's character tokenizer (built in memory, no files)."""
    return build_tokenizer()


@pytest.fixture(scope="session")
def model(tokenizer) -> LlamaForCausalLM:
    return tiny_llama(len(tokenizer))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and the machine is shared); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- PRM checkpoints of real architectures (reward_models.testing), built on first use ------------
@pytest.fixture(scope="module")
def tok():
    """reward_models.testing's character tokenizer, with a chat template."""
    from reward_models.testing import build_tokenizer as prm_tokenizer

    return prm_tokenizer(chat_template=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tok):
    """(kind, arch) -> checkpoint directory, built on first use."""
    from reward_models.testing import (save_causal_lm, save_sequence_classifier, save_token_classifier,
                                       save_value_head)

    root = tmp_path_factory.mktemp("prms")
    made: dict[tuple[str, str], str] = {}

    def get(kind: str, arch: str) -> str:
        if (kind, arch) not in made:
            d = str(root / f"{kind}_{arch}")
            if kind in ("step_tag", "llemma", "self_score"):
                d = get("lm", arch) if kind != "lm" else save_causal_lm(d, arch, tok, seed=1)
            elif kind == "lm":
                d = save_causal_lm(d, arch, tok, seed=1)
            elif kind == "llemma2":
                d = save_causal_lm(d, arch, tok, seed=2, head_rows=2)
            elif kind == "classification":
                d = save_token_classifier(d, arch, tok, seed=3)
            elif kind == "outcome":
                d = save_sequence_classifier(d, arch, tok, seed=4)
            elif kind == "value_head":
                d = save_value_head(d, arch, tok, seed=5)
            made[(kind, arch)] = d
        return made[(kind, arch)]

    return get


@pytest.fixture(scope="module")
def make_prm(checkpoints, tok):
    """make(kind, arch="llama", **options): the PRM adapter ``kind`` on its checkpoint (support.KINDS)."""
    import reward_models as rm

    def make(kind: str, arch: str = "llama", **kw):
        if kind == "likelihood":  # the LM of the tests' checkpoints under a fixed head, chained by product
            kw.setdefault("head", rm.LikelihoodHead(weight=(0.5, 0.3), bias=0.1))
        path = checkpoints("lm" if kind == "likelihood" else kind, arch)
        if arch == "qwen2":  # transformers maps model_type qwen2 to its own tokenizer class; keep ours
            kw.setdefault("tokenizer", tok)
        kind = "llemma" if kind == "llemma2" else kind
        kw.setdefault("dtype", "float32")
        return rm.load_prm(kind, path=path, **kw)

    return make
