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

from .base import Encoding, ModelPRM, PieceTokenizer, backbone_of, encode_chain, non_embedding_parameters, prepare
from .registry import register_prm


class TaggedLMPRM(ModelPRM):
    """A causal LM read at an inserted tag token after each step; subclasses pick the head.

    The LM head is applied only at the tag positions (a few rows, not every token × vocab).
    Steps are ``rstrip``-ed, so a policy's trailing delimiter does not double the layout's.
    """

    def __init__(self, path: str | None = None, *, tag: str = "ки", question_suffix: str = " ",
                 step_suffix: str = " ", tag_suffix: str = "\n", device: str | None = None,
                 dtype: str | torch.dtype | None = "auto", trust_remote_code: bool = False,
                 model: torch.nn.Module | None = None, tokenizer=None,
                 max_batch_tokens: int | None = None, max_batch_size: int = 256,
                 padding_side: str = "right", cache: bool = True):
        tokenizer = self._load(path, model, tokenizer, device, dtype, trust_remote_code)
        self.tok = PieceTokenizer(tokenizer)
        self.pad_token_id = self.tok.pad_token_id
        self.tag_id = self.tok.single_token_id(tag, "step tag")
        self.question_suffix, self.step_suffix, self.tag_suffix = question_suffix, step_suffix, tag_suffix
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
        self.num_parameters = non_embedding_parameters(self.model)
        super().__init__(max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                         padding_side=padding_side, cache=cache)

    def _load(self, path, model, tokenizer, device, dtype, trust_remote_code):
        """Set ``model``, ``backbone``, ``lm_head``, ``device``; return the tokenizer."""
        from transformers import AutoModelForCausalLM

        self.model, tokenizer, self.device = prepare(path, model, tokenizer, AutoModelForCausalLM,
                                                     device, dtype, trust_remote_code)
        self.backbone = backbone_of(self.model)
        self.lm_head = self.model.get_output_embeddings()
        return tokenizer

    def encode(self, chain: Chain) -> Encoding:
        return encode_chain(self.tok, chain.question, chain.steps, step_lead=self.question_suffix, readout="mark",
                            step_suffix=self.step_suffix, mark_id=self.tag_id, mark_suffix=self.tag_suffix)

    def features(self, input_ids, attention_mask, position_ids):
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, use_cache=False).last_hidden_state

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """LM-head logits at the given hidden states, with the model's final soft-capping if any."""
        out = self.lm_head(h).float()
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


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


@register_prm("step_tag")
@register_prm("math_shepherd")
def _step_tag(**kwargs) -> StepTagPRM:
    return StepTagPRM(**kwargs)
