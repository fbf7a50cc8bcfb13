"""Value-head PRMs: a causal-LM backbone plus a linear head, sigmoid at each step's end.

This is the PRM the built-in task trains (:mod:`reward_models.training`). On disk it is a
directory: the backbone via ``save_pretrained`` (loads with ``AutoModel``), the tokenizer,
``value_head.safetensors`` (the head's weight and bias) and ``value_head_config.json``
(the text layout, so training and scoring can never disagree about it).

Default layout matches the built-in task's policy prompt: ``question\\n step_1\\n step_2\\n``,
read at the last token of each step (its newline). Set ``tag`` to insert a tag token after
each step instead and read there.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from treesearch.protocols import Chain

from treesearch.kv_cache import forward_with_cache

from .base import (CheckpointPRM, Encoding, PieceTokenizer, encode_chain, load_checkpoint, read_format_file,
                   resolve_device, resolve_dtype, resolve_tokenizer, write_format_file)
from .registry import register_prm

HEAD_FILE = "value_head.safetensors"
CONFIG_FILE = "value_head_config.json"
FORMAT_NAME = "treesearch.value_head"


@dataclass(frozen=True)
class ValueHeadFormat:
    """How a chain is laid out for a value-head PRM (saved with it)."""

    question_suffix: str = "\n"
    step_suffix: str = "\n"
    tag: str | None = None  # None: read the last token of each step
    tag_suffix: str = ""


class ValueHeadModel(nn.Module):
    """``AutoModel`` backbone + ``Linear(hidden, 1)``; ``forward`` gives one logit per token."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        hidden = getattr(backbone.config, "hidden_size", None) or backbone.get_input_embeddings().embedding_dim
        self.value_head = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.value_head.weight.normal_(0.0, 0.02)
            self.value_head.bias.zero_()
        p = next(backbone.parameters())
        self.value_head.to(p.device, p.dtype)

    @property
    def config(self):
        return self.backbone.config

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    @classmethod
    def from_config(cls, config, seed: int | None = None) -> ValueHeadModel:
        """A randomly initialised backbone of any transformers architecture (the config's)."""
        from transformers import AutoModel

        if seed is not None:
            torch.manual_seed(seed)
        return cls(AutoModel.from_config(config))

    def hidden(self, input_ids, attention_mask=None, position_ids=None, cache=None) -> torch.Tensor:
        return forward_with_cache(self.backbone, input_ids, attention_mask, position_ids, cache).last_hidden_state

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        return self.value_head(self.hidden(input_ids, attention_mask, position_ids)).squeeze(-1)

    def save(self, directory: str, tokenizer=None, fmt: ValueHeadFormat = ValueHeadFormat()) -> None:
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        self.backbone.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()},
                  os.path.join(directory, HEAD_FILE))
        write_format_file(directory, CONFIG_FILE, FORMAT_NAME,
                          {"hidden_size": self.value_head.in_features, **asdict(fmt)})

    @classmethod
    def load(cls, directory: str, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = "auto",
             trust_remote_code: bool = False) -> tuple[ValueHeadModel, ValueHeadFormat]:
        from safetensors.torch import load_file
        from transformers import AutoModel

        fmt = read_format(directory)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        backbone = AutoModel.from_pretrained(directory, dtype=dt, trust_remote_code=trust_remote_code)
        model = cls(backbone)
        model.value_head.load_state_dict(load_file(os.path.join(directory, HEAD_FILE)))
        return model.to(dev, dt).eval(), fmt


def read_format(directory: str) -> ValueHeadFormat:
    return ValueHeadFormat(**read_format_file(directory, CONFIG_FILE, FORMAT_NAME, "value-head PRM",
                                              list(ValueHeadFormat.__dataclass_fields__)))


def encode_value_head(tok: PieceTokenizer, fmt: ValueHeadFormat, chain: Chain) -> Encoding:
    """The one layout shared by training and scoring."""
    if fmt.tag is None:
        return encode_chain(tok, chain.question, chain.steps, step_lead=fmt.question_suffix, readout="last",
                            step_suffix=fmt.step_suffix)
    return encode_chain(tok, chain.question, chain.steps, step_lead=fmt.question_suffix, readout="mark",
                        step_suffix=fmt.step_suffix, mark_id=tok.single_token_id(fmt.tag, "step tag"),
                        mark_suffix=fmt.tag_suffix)


class ValueHeadPRM(CheckpointPRM):
    """sigmoid(value_head(h)) at the end of each step (or at its tag)."""

    def __init__(self, path: str | None = None, *, fmt: ValueHeadFormat | None = None, **options):
        self.fmt = fmt
        super().__init__(path, **options)
        if self.fmt.tag is not None:
            self.tok.single_token_id(self.fmt.tag, "step tag")  # fail now, not at the first score

    def load(self, spec, model, tokenizer):
        """A saved value-head directory (its layout unless ``fmt`` is given), or a built ValueHeadModel."""
        if model is None:
            if spec.path is None:
                raise ValueError("give a value-head PRM directory, or a ValueHeadModel and a tokenizer")
            model, saved = ValueHeadModel.load(spec.path, spec.device, spec.dtype, spec.trust_remote_code)
            self.fmt = self.fmt or saved
            return model, resolve_tokenizer(tokenizer, spec.path, spec.trust_remote_code), next(model.parameters()).device
        self.fmt = self.fmt or ValueHeadFormat()
        return load_checkpoint(spec, None, model, tokenizer)

    def encode(self, chain: Chain) -> Encoding:
        return encode_value_head(self.tok, self.fmt, chain)

    def features(self, input_ids, attention_mask, position_ids, cache=None):
        return self.model.hidden(input_ids, attention_mask, position_ids, cache)

    def head(self, feats, next_ids):
        return self.model.value_head(feats).squeeze(-1)

    def finalize(self, step_values):
        return torch.sigmoid(step_values)


@register_prm("value_head", check=ValueHeadPRM.check_options)
def _value_head(**kwargs) -> ValueHeadPRM:
    return ValueHeadPRM(**kwargs)
