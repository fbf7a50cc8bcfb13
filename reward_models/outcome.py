"""Outcome reward models: one score for a whole solution, from a sequence-classification model.

The protocol wants one score per step; an ORM has one per chain. Every step of a chain
gets the chain's score (so ``last``, ``min``, ``mean`` aggregation all give the ORM score,
and a search that reads ``scores[-1]`` sees it). An ORM's reading at an earlier position
is not the score of that prefix as a finished solution, so this adapter runs with
``prefix_filling=False``: the cache keeps whole chains only, and scoring a long chain never
stands in for its prefixes.

Read-out: the classification head (``score``/``classifier`` module) applied to the
backbone's hidden state at the chain's last token, computed here rather than by the
model's own pooling, which locates the last token through ``pad_token_id`` and breaks
with left padding or a missing pad id. 1 label: sigmoid; 2+ labels: softmax, ``positive_label``.
"""
from __future__ import annotations

import torch

from treesearch.protocols import Chain

from .base import CheckpointPRM, Encoding, backbone_of, encode_chain
from .registry import register_prm


class OutcomeRM(CheckpointPRM):
    """Sequence-classification ORM scored once per chain; every step gets that score."""

    prefix_filling = False
    model_class = "AutoModelForSequenceClassification"

    def __init__(self, path: str | None = None, *, question_suffix: str = "\n", step_suffix: str = "\n",
                 positive_label: int = 1, head_name: str | None = None, **options):
        super().__init__(path, **options)
        self.backbone = backbone_of(self.model)
        names = [head_name] if head_name else ["score", "classifier"]
        heads = [getattr(self.model, n) for n in names if isinstance(getattr(self.model, n, None), torch.nn.Module)]
        if not heads:
            raise ValueError(f"{type(self.model).__name__} has no classification head named {names}; pass head_name=")
        self.cls_head = heads[0]
        self.positive_label = positive_label
        self.question_suffix, self.step_suffix = question_suffix, step_suffix

    def encode(self, chain: Chain) -> Encoding:
        enc = encode_chain(self.tok, chain.question, chain.steps, step_lead=self.question_suffix, readout="last",
                           step_suffix=self.step_suffix)
        last = (len(enc.input_ids) - 1,)
        return Encoding(enc.input_ids, tuple(last for _ in enc.readout), enc.prompt_length)

    def features(self, input_ids, attention_mask, position_ids, cache=None):
        return self.run(self.backbone, input_ids, attention_mask, position_ids, cache).last_hidden_state

    def head(self, feats, next_ids):
        logits = self.cls_head(feats).float()
        if logits.shape[-1] == 1:
            return torch.sigmoid(logits[:, 0])
        return torch.softmax(logits, dim=-1)[:, self.positive_label]


@register_prm("outcome", check=OutcomeRM.check_options)
@register_prm("orm", check=OutcomeRM.check_options)
def _outcome(**kwargs) -> OutcomeRM:
    return OutcomeRM(**kwargs)
