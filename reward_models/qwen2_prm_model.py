"""The Qwen2.5-Math-PRM layout in transformers: a Qwen2 backbone and a 2-class token head.

Qwen2.5-Math-PRM checkpoints ship their own remote code (``Qwen2ForProcessRewardModel``,
loaded through ``AutoModel`` with ``trust_remote_code``) and vLLM serves the same
architecture natively. This module is this project's own rendering of that layout
(``model.*`` backbone weights; ``score.0`` Linear(h, h), ReLU, ``score.2`` Linear(h, 2), both
with bias) so tests can build a tiny checkpoint that both engines load
(``reward_models.testing.save_qwen2_process_reward_model`` copies this file into the checkpoint
as its remote code). It imports nothing of treesearch, as remote code must not.
"""
from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel


class ProcessRewardOutput(NamedTuple):
    """``out[0]`` / ``out.logits``: [B, T, 2]; ``out.cache``: the backbone's KV cache (or None).
    A plain tuple: transformers' ``ModelOutput`` renamed its cache field between versions."""
    logits: torch.Tensor
    cache: Any = None


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    config_class = Qwen2Config

    def __init__(self, config: Qwen2Config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                   nn.Linear(config.hidden_size, 2))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, past_key_values=None,
                use_cache=None, **kwargs) -> ProcessRewardOutput:
        # Hand the cache on under the name this transformers version's backbone takes.
        name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, **{name: cache if cache is not None else past_key_values}, **kwargs)
        returned = out.cache if "cache" in out.__dataclass_fields__ else out.past_key_values
        return ProcessRewardOutput(self.score(out.last_hidden_state), returned)
