"""Step-tag PRMs read from a causal LM at a tag token placed after every step.

Math-Shepherd (peiyi9979/math-shepherd-mistral-7b-prm) formats a solution as
``"{question} {step_1} ки\\n{step_2} ки\\n..."`` and scores each step by the softmax over
the logits of '+' and '-' at the ``ки`` position, taking P('+'). The tag, good and bad ids
come from the tokenizer (checked to be single tokens), never from constants: the official
REBASE code hard-codes an id that disagrees with its own comments.
"""
from __future__ import annotations

import torch

from treesearch.protocols import Chain

from .base import CheckpointPRM, Encoding, backbone_of, encode_chain, load_checkpoint, softcapped
from .registry import register_prm


class TaggedLMPRM(CheckpointPRM):
    """A causal LM read at an inserted tag token after each step; subclasses pick the head.

    The LM head is applied only at the tag positions (a few rows, not every token × vocab).
    Steps are ``rstrip``-ed, so a policy's trailing delimiter does not double the layout's.
    """

    def __init__(self, path: str | None = None, *, tag: str = "ки", question_suffix: str = " ",
                 step_suffix: str = " ", tag_suffix: str = "\n", **options):
        super().__init__(path, **options)
        self.tag_id = self.tok.single_token_id(tag, "step tag")
        self.question_suffix, self.step_suffix, self.tag_suffix = question_suffix, step_suffix, tag_suffix
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)

    def load(self, spec, model, tokenizer):
        """The causal LM; sets ``backbone`` and ``lm_head`` (the head is applied at tags only)."""
        model, tokenizer, device = load_checkpoint(spec, "AutoModelForCausalLM", model, tokenizer)
        self.backbone, self.lm_head = backbone_of(model), model.get_output_embeddings()
        return model, tokenizer, device

    def encode(self, chain: Chain) -> Encoding:
        return encode_chain(self.tok, chain.question, chain.steps, step_lead=self.question_suffix, readout="mark",
                            step_suffix=self.step_suffix, mark_id=self.tag_id, mark_suffix=self.tag_suffix)

    def features(self, input_ids, attention_mask, position_ids, cache=None):
        return self.run(self.backbone, input_ids, attention_mask, position_ids, cache).last_hidden_state

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """LM-head logits at the given hidden states, with the model's final soft-capping if any."""
        return softcapped(self.lm_head(h), self.softcap)


class StepTagPRM(TaggedLMPRM):
    """Math-Shepherd style: P(good) from a softmax over the good/bad token logits at each tag.

    Defaults are those of math-shepherd-mistral-7b-prm: tag "ки", good "+", bad "-".
    """

    def __init__(self, path: str | None = None, *, good: str = "+", bad: str = "-", **kwargs):
        super().__init__(path, **kwargs)
        self.good_id = self.tok.single_token_id(good, "good token")
        self.bad_id = self.tok.single_token_id(bad, "bad token")
        if self.good_id == self.bad_id:
            raise ValueError(f"good token {good!r} and bad token {bad!r} map to the same id {self.good_id}")

    def head(self, feats, next_ids):
        logits = self.logits(feats)[:, [self.good_id, self.bad_id]]
        return torch.softmax(logits, dim=-1)[:, 0]


@register_prm("step_tag", check=StepTagPRM.check_options)
@register_prm("math_shepherd", check=StepTagPRM.check_options)
def _step_tag(**kwargs) -> StepTagPRM:
    return StepTagPRM(**kwargs)
