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

from .base import load_checkpoint
from .registry import register_prm
from .step_tag import TaggedLMPRM

log = logging.getLogger(__name__)


class LlemmaPRM(TaggedLMPRM):
    """Step score = sigmoid of the mean of the head's outputs at the tag after the step."""

    def load(self, spec, model, tokenizer):
        loaded = super().load(spec, model, tokenizer) if model is not None or spec.path is None else self._load_apart(spec, tokenizer)
        rows = self.lm_head.weight.shape[0]
        if rows != 2:
            log.warning("Llemma PRM head has %d rows, not 2: the score is sigmoid of the mean over all %d", rows, rows)
        return loaded

    def _load_apart(self, spec, tokenizer):
        """The backbone through ``AutoModel`` and the head straight from the checkpoint's files."""
        backbone, tokenizer, device = load_checkpoint(spec, "AutoModel", None, tokenizer)
        weight, bias = _read_head(spec.path)
        if weight is None:
            log.warning("no lm_head.weight in %s: using the tied input embedding as the head", spec.path)
            weight = backbone.get_input_embeddings().weight.detach()
        head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            head.weight.copy_(weight)
            if bias is not None:
                head.bias.copy_(bias)
        self.backbone, self.lm_head = backbone, head.to(device, next(backbone.parameters()).dtype).eval()
        return backbone, tokenizer, device

    def count_parameters(self) -> int:
        extra = self.lm_head is not self.model.get_output_embeddings()  # a head loaded apart from the backbone
        return super().count_parameters() + (sum(p.numel() for p in self.lm_head.parameters()) if extra else 0)

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


@register_prm("llemma", check=LlemmaPRM.check_options)
def _llemma(**kwargs) -> LlemmaPRM:
    return LlemmaPRM(**kwargs)
