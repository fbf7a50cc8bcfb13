"""The paper's PRM (Wu et al. 2024): Llemma-34B whose LM head was replaced by a 2-row head.

Training put a BCE loss on the mean of the head's outputs at each ``ки`` tag; inference
scores a step as ``sigmoid(mean(head(h_tag)))`` (gpt-accelera hf_score.py; the SGLang fork's
``logits.mean(-1).sigmoid()``). The same text layout as Math-Shepherd, which the policy
was fine-tuned on: ``"{question} {step} ки\\n..."``.

A head with fewer rows than the vocabulary does not load through
``AutoModelForCausalLM`` (its config still says vocab_size=32016), so from a path the
backbone is loaded with ``AutoModel`` and the head weight is read from the checkpoint
files as it is, whatever its number of rows.
"""
from __future__ import annotations

import json
import logging
import os

import torch

from .base import backbone_of, load_model, prepare, resolve_device, resolve_dtype, resolve_tokenizer
from .registry import register_prm
from .step_tag import TaggedLMPRM

log = logging.getLogger(__name__)


class LlemmaPRM(TaggedLMPRM):
    """Step score = sigmoid of the mean of the head's outputs at the tag after the step."""

    def _load(self, path, model, tokenizer, device, dtype, trust_remote_code):
        if model is not None:
            self.model, tokenizer, self.device = prepare(path, model, tokenizer, None, device, dtype,
                                                         trust_remote_code)
            self.backbone = backbone_of(self.model)
            self.lm_head = self.model.get_output_embeddings()
        else:
            from transformers import AutoModel

            if path is None:
                raise ValueError("give a checkpoint path, or a model and a tokenizer")
            self.device = resolve_device(device)
            dt = resolve_dtype(dtype, self.device)
            self.backbone = load_model(AutoModel, str(path), self.device, dt, trust_remote_code)
            self.model = self.backbone
            weight, bias = _read_head(str(path))
            if weight is None:
                log.warning("no lm_head.weight in %s: using the tied input embedding as the head", path)
                weight = self.backbone.get_input_embeddings().weight.detach()
            self.lm_head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            with torch.no_grad():
                self.lm_head.weight.copy_(weight)
                if bias is not None:
                    self.lm_head.bias.copy_(bias)
            self.lm_head = self.lm_head.to(self.device, dt).eval()
            tokenizer = resolve_tokenizer(tokenizer, path, trust_remote_code)
        rows = self.lm_head.weight.shape[0]
        if rows != 2:
            log.warning("Llemma PRM head has %d rows, not 2: the score is sigmoid of the mean over all %d", rows, rows)
        return tokenizer

    def __init__(self, path: str | None = None, **kwargs):
        super().__init__(path, **kwargs)
        if self.lm_head is not self.model.get_output_embeddings():
            self.num_parameters += sum(p.numel() for p in self.lm_head.parameters())

    def head(self, feats, next_ids):
        return self.logits(feats).mean(-1)

    def finalize(self, step_values):
        return torch.sigmoid(step_values)


def _read_head(path: str, name: str = "lm_head") -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``lm_head.weight`` (and bias) straight from a checkpoint directory's files."""
    from safetensors import safe_open

    wanted = (f"{name}.weight", f"{name}.bias")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            wmap = json.load(f)["weight_map"]
        files = sorted({wmap[k] for k in wanted if k in wmap})
    elif os.path.exists(os.path.join(path, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        files = []
    found: dict[str, torch.Tensor] = {}
    for fn in files:
        with safe_open(os.path.join(path, fn), framework="pt") as f:
            for k in wanted:
                if k in f.keys():
                    found[k] = f.get_tensor(k)
    if not files:
        bins = [fn for fn in sorted(os.listdir(path)) if fn.startswith("pytorch_model") and fn.endswith(".bin")]
        for fn in bins:
            sd = torch.load(os.path.join(path, fn), map_location="cpu", weights_only=True)
            found.update({k: v for k, v in sd.items() if k in wanted})
    return found.get(wanted[0]), found.get(wanted[1])


@register_prm("llemma")
def _llemma(**kwargs) -> LlemmaPRM:
    return LlemmaPRM(**kwargs)
