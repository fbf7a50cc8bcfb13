"""Policy self-score: how likely the policy itself finds each step, for checkpoints with no PRM.

Step score = exp(mean log-probability of the step's tokens given everything before), the
per-token geometric-mean probability, in (0, 1]. A weak signal (it rewards fluent, not
correct, steps) but free of extra training and comparable across step lengths.

The prompt options are the policy's (``treesearch.prompts.PromptFormat``: ``prompt_template``,
or ``chat_template`` + ``system_prompt`` with the generation prompt), built by the same code,
so steps are scored under the conditioning they were sampled with; steps are taken verbatim.
"""
from __future__ import annotations

import torch

from treesearch.prompts import PromptFormat
from treesearch.protocols import Chain

from .base import CheckpointPRM, Encoding, backbone_of, encode_chain, softcapped
from .registry import register_prm


class SelfScorePRM(CheckpointPRM):
    """exp(mean token log-prob of each step) under a causal LM."""

    def __init__(self, path: str | None = None, *, prompt_template: str = "{question}\n",
                 chat_template: bool = False, system_prompt: str | None = None, step_suffix: str = "\n",
                 vocab_chunk_rows: int = 2048, **options):
        self.prompt_format = PromptFormat(prompt_template, chat_template, system_prompt)  # the policy's own
        super().__init__(path, **options)
        self.backbone = backbone_of(self.model)
        self.lm_head = self.model.get_output_embeddings()
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)
        if chat_template and not getattr(self.tok.tokenizer, "chat_template", None):
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        self.step_suffix = step_suffix
        self.vocab_chunk_rows = vocab_chunk_rows
        self._prompts: dict[str, str] = {}

    def prompt(self, question: str) -> str:
        if question not in self._prompts:
            if len(self._prompts) > 10_000:
                self._prompts.clear()
            self._prompts[question] = self.prompt_format.text(self.tok.tokenizer, question)
        return self._prompts[question]

    def encode(self, chain: Chain) -> Encoding:
        # A chat template writes its own special tokens; a plain template gets the tokenizer's (e.g. <s>).
        return encode_chain(self.tok, self.prompt(chain.question), chain.steps, readout="span",
                            step_suffix=self.step_suffix, add_special_prefix=self.prompt_format.adds_special_tokens)

    def features(self, input_ids, attention_mask, position_ids, cache=None):
        return self.run(self.backbone, input_ids, attention_mask, position_ids, cache).last_hidden_state

    def head(self, feats, next_ids):
        # Chunked so rows × vocabulary logits never all sit in memory at once.
        out = []
        for i in range(0, feats.shape[0], self.vocab_chunk_rows):
            logits = softcapped(self.lm_head(feats[i:i + self.vocab_chunk_rows]), self.softcap)
            logp = torch.log_softmax(logits, dim=-1)
            out.append(logp.gather(-1, next_ids[i:i + self.vocab_chunk_rows, None]).squeeze(-1))
        return torch.cat(out)

    def finalize(self, step_values):
        return torch.exp(step_values)


@register_prm("self_score", check=SelfScorePRM.check_options)
def _self_score(**kwargs) -> SelfScorePRM:
    return SelfScorePRM(**kwargs)
