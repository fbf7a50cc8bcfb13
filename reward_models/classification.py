"""Classification-head PRMs, Qwen2.5-Math-PRM style: a 2-class token head read at a separator.

Qwen2.5-Math-PRM-7B's model card builds ``system / user: question / assistant:
step_1<extra_0>step_2<extra_0>...`` with the chat template and takes the softmax
probability of class 1 at each ``<extra_0>``. Here the prompt is rendered with the
tokenizer's chat template when it has one (a sentinel marks where the assistant's text
goes; everything before it is the prompt), else ``question + question_suffix``; the
separator ids are then inserted after each step by construction.

Qwen2.5-Math-PRM itself is remote code that loads through ``AutoModel``: pass
``model_class="AutoModel", trust_remote_code=True``. Any ``*ForTokenClassification``
model (the default class) works without remote code.
"""
from __future__ import annotations

import torch

from treesearch.prompts import PromptFormat
from treesearch.protocols import Chain

from .base import CheckpointPRM, Encoding, encode_chain
from .registry import register_prm

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
_SENTINEL = "\u2063TREESEARCH_STEPS\u2063"


class ClassificationPRM(CheckpointPRM):
    """P(positive class) of a token-classification head at the separator after each step."""

    def __init__(self, path: str | None = None, *, separator: str = "<extra_0>", positive_label: int = 1,
                 use_chat_template: bool = True, system_prompt: str | None = QWEN_PRM_SYSTEM,
                 question_suffix: str = "\n", step_suffix: str = "",
                 model_class: str = "AutoModelForTokenClassification", **options):
        self.model_class = model_class
        super().__init__(path, **options)
        self.sep_id = self.tok.single_token_id(separator, "step separator")
        self.positive_label = positive_label
        self.question_suffix, self.step_suffix = question_suffix, step_suffix
        self.system_prompt = system_prompt
        self.use_chat_template = bool(use_chat_template and getattr(self.tok.tokenizer, "chat_template", None))
        self._prompts: dict[str, tuple[str, bool]] = {}

    def prompt(self, question: str) -> tuple[str, bool]:
        """(text before the first step, whether the tokenizer's special prefix must be added)."""
        if question not in self._prompts:
            if len(self._prompts) > 10_000:
                self._prompts.clear()
            self._prompts[question] = self._render(question)
        return self._prompts[question]

    def _render(self, question: str) -> tuple[str, bool]:
        if not self.use_chat_template:
            return question, True
        # The policy's messages (treesearch.prompts), then the assistant's turn the steps go in.
        messages = PromptFormat(chat_template=True, system_prompt=self.system_prompt).messages(question)
        messages.append({"role": "assistant", "content": _SENTINEL})
        text = self.tok.tokenizer.apply_chat_template(messages, tokenize=False)
        if _SENTINEL not in text:
            raise ValueError("the chat template dropped the assistant message; pass use_chat_template=False")
        return text.split(_SENTINEL)[0], False  # the template writes its own special tokens

    def encode(self, chain: Chain) -> Encoding:
        prompt, plain = self.prompt(chain.question)
        return encode_chain(self.tok, prompt, chain.steps, readout="mark", step_suffix=self.step_suffix,
                            step_lead=self.question_suffix if plain else "", mark_id=self.sep_id,
                            add_special_prefix=plain)

    def features(self, input_ids, attention_mask, position_ids, cache=None):
        out = self.run(self.model, input_ids, attention_mask, position_ids, cache)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if logits.shape[-1] <= self.positive_label:
            raise ValueError(f"the head has {logits.shape[-1]} classes; positive_label={self.positive_label}")
        return logits

    def head(self, feats, next_ids):
        return torch.softmax(feats.float(), dim=-1)[:, self.positive_label]


@register_prm("classification", check=ClassificationPRM.check_options)
@register_prm("qwen_prm", check=ClassificationPRM.check_options)
def _classification(**kwargs) -> ClassificationPRM:
    return ClassificationPRM(**kwargs)
