"""Tiny tokenizers and randomly initialised models of real architectures, for tests and benchmarks.

No model hub is needed: a character-level tokenizer is built in memory (with the step tag
"ки" and the separator "<extra_0>" as single tokens, as in the real PRMs' vocabularies) and
models are built from configs and saved with ``save_pretrained``, so the adapters load
them through exactly the code path they use for real checkpoints.
"""
from __future__ import annotations

import os
import string

import torch

from treesearch.testing import tiny_llama

ARCHS = ("llama", "mistral", "qwen2")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
MULTI = ["ки", "<extra_0>"]  # multi-character strings that are one token
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}")


def build_tokenizer(chat_template: bool = False):
    """Char-level fast tokenizer: one token per character, plus "ки" and "<extra_0>"; adds <s>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.printable) + ["к", "и", "|"]
    vocab: dict[str, int] = {}
    for t in SPECIALS + MULTI + chars:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"<extra_0>|ки|[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", clean_up_tokenization_spaces=False)
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(arch: str, tokenizer, hidden: int = 32, layers: int = 2, heads: int = 4,
                kv_heads: int = 2, intermediate: int | None = None, **overrides):
    """A config of a real architecture (llama, mistral, qwen2) at toy size."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
    kw = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
              num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
              max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
              tie_word_embeddings=False)
    kw.update(overrides)
    return cls(**kw)


def _llama_defaults(tokenizer) -> dict:
    """``tiny_llama``'s arguments that make ``tiny_config("llama", tokenizer)`` (its other defaults agree)."""
    return dict(hidden=32, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)


def _save(model, tokenizer, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_causal_lm(directory: str, arch: str, tokenizer, seed: int = 0, head_rows: int | None = None,
                   **config_kw) -> str:
    """A random causal LM; ``head_rows=2`` makes the Llemma-PRM shape (a 2-row LM head). A Llama is
    ``treesearch.testing.tiny_llama`` with ``tiny_config``'s sizes and settings (the same config)."""
    from transformers import AutoModelForCausalLM

    if arch == "llama":
        model = tiny_llama(len(tokenizer), seed=seed, **{**_llama_defaults(tokenizer), **config_kw})
    else:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer, **config_kw))
    if head_rows is not None:
        model.lm_head = torch.nn.Linear(model.config.hidden_size, head_rows, bias=False)
    return _save(model, tokenizer, directory)


def save_token_classifier(directory: str, arch: str, tokenizer, seed: int = 0, **config_kw) -> str:
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_config(tiny_config(arch, tokenizer, num_labels=2, **config_kw))
    return _save(model, tokenizer, directory)


def save_sequence_classifier(directory: str, arch: str, tokenizer, seed: int = 0, num_labels: int = 1,
                             **config_kw) -> str:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(
        tiny_config(arch, tokenizer, num_labels=num_labels, **config_kw))
    return _save(model, tokenizer, directory)


def save_qwen2_process_reward_model(directory: str, tokenizer, seed: int = 0, **config_kw) -> str:
    """A random checkpoint laid out as Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``): loads in
    transformers through ``AutoModel`` with ``trust_remote_code`` (its code, ``qwen2_prm_model.py``,
    copied in as the real checkpoints ship theirs) and natively in vLLM."""
    import shutil

    from .qwen2_prm_model import Qwen2ForProcessRewardModel

    torch.manual_seed(seed)
    config = tiny_config("qwen2", tokenizer, num_labels=2, **config_kw)
    config.auto_map = {"AutoModel": "modeling_qwen2_prm.Qwen2ForProcessRewardModel"}
    model = Qwen2ForProcessRewardModel(config)
    with torch.no_grad():  # a visible head, so P(correct) spreads over (0, 1) rather than sit at 0.5
        for layer in (model.score[0], model.score[2]):
            layer.weight.normal_(0.0, layer.in_features ** -0.5)
    _save(model, tokenizer, directory)
    shutil.copy(os.path.join(os.path.dirname(__file__), "qwen2_prm_model.py"),
                os.path.join(directory, "modeling_qwen2_prm.py"))
    return directory


def save_value_head(directory: str, arch: str, tokenizer, seed: int = 0, **config_kw) -> str:
    from .value_head import ValueHeadModel

    model = ValueHeadModel.from_config(tiny_config(arch, tokenizer, **config_kw), seed=seed)
    with torch.no_grad():  # a visible head, so scores spread over (0, 1) rather than sit at 0.5
        model.value_head.weight.normal_(0.0, 1.0)
    model.save(directory, tokenizer)
    return directory


def step_length_scorer(question: str, steps: list[str]) -> list[float]:
    """A toy heuristic PRM (importable, for config-driven tests): shorter steps score higher."""
    return [1.0 / (1.0 + len(s)) for s in steps]


def build_sentencepiece_like_tokenizer():
    """A SentencePiece-style tokenizer (Metaspace "▁", prepended at text start), like Llama 2/Mistral's.

    Character-level BPE with the merges that matter here: "ки" is one token and "▁ки" is
    none (as in Mistral's vocabulary, so " ки" encodes to "▁", "ки"); "▁+" and "▁-" are
    tokens (Math-Shepherd's good/bad ids are those of "▁+"/"▁-"). Used to check that step
    pieces get no stray "▁" at their start.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in " \x0b\x0c\r"] + ["к", "и", "▁"]
    vocab: dict[str, int] = {}
    for t in SPECIALS + chars + ["ки", "▁+", "▁-"]:
        vocab.setdefault(t, len(vocab))
    merges = [("к", "и"), ("▁", "+"), ("▁", "-")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", clean_up_tokenization_spaces=False)
