"""Policy self-score: how likely the policy itself finds each step, for checkpoints with no PRM.

Step score = exp(mean log-probability of the step's tokens given everything before), the
per-token geometric-mean probability, in (0, 1]. A weak signal (it rewards fluent, not
correct, steps) but free of extra training and comparable across step lengths.
"""
from __future__ import annotations

import torch

from treesearch.protocols import Chain

from .base import Encoding, ModelPRM, PieceTokenizer, backbone_of, encode_chain, non_embedding_parameters, prepare
from .registry import register_prm


class SelfScorePRM(ModelPRM):
    """exp(mean token log-prob of each step) under a causal LM."""

    def __init__(self, path: str | None = None, *, question_suffix: str = "\n", step_suffix: str = "\n",
                 device: str | None = None, dtype: str | torch.dtype | None = "auto",
                 trust_remote_code: bool = False, model: torch.nn.Module | None = None, tokenizer=None,
                 max_batch_tokens: int = 16384, max_batch_size: int = 256,
                 padding_side: str = "right", cache: bool = True, vocab_chunk_rows: int = 2048):
        from transformers import AutoModelForCausalLM

        self.model, tokenizer, self.device = prepare(path, model, tokenizer, AutoModelForCausalLM,
                                                     device, dtype, trust_remote_code)
        self.backbone = backbone_of(self.model)
        self.lm_head = self.model.get_output_embeddings()
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
        self.tok = PieceTokenizer(tokenizer)
        self.pad_token_id = self.tok.pad_token_id
        self.question_suffix, self.step_suffix = question_suffix, step_suffix
        self.vocab_chunk_rows = vocab_chunk_rows
        self.num_parameters = non_embedding_parameters(self.model)
        super().__init__(max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                         padding_side=padding_side, cache=cache)

    def encode(self, chain: Chain) -> Encoding:
        # The separator after the question stays with the prompt: a step's score covers its own tokens only.
        return encode_chain(self.tok, chain.question + self.question_suffix, chain.steps, readout="span",
                            step_suffix=self.step_suffix)

    def features(self, input_ids, attention_mask, position_ids):
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, use_cache=False).last_hidden_state

    def head(self, feats, next_ids):
        # Chunked so rows × vocabulary logits never all sit in memory at once.
        out = []
        for i in range(0, feats.shape[0], self.vocab_chunk_rows):
            logits = self.lm_head(feats[i:i + self.vocab_chunk_rows]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            logp = torch.log_softmax(logits, dim=-1)
            out.append(logp.gather(-1, next_ids[i:i + self.vocab_chunk_rows, None]).squeeze(-1))
        return torch.cat(out)

    def finalize(self, step_values):
        return torch.exp(step_values)


@register_prm("self_score")
def _self_score(**kwargs) -> SelfScorePRM:
    return SelfScorePRM(**kwargs)
