"""How a question becomes the text a model continues: one place for every backend and PRM.

A policy samples steps after this prompt and a PRM that scores with the policy's own
conditioning (self-score) must see the very same tokens, so both build it here: a plain
``template`` (the tokenizer adds its special prefix, e.g. ``<s>``), or the tokenizer's chat
template with an optional system prompt and the generation prompt (the template writes its
own special tokens, so none are added).

A revision (sequential revisions, Snell et al. 2024) sees earlier attempts in context: they are
earlier turns of the conversation, each followed by the ``revision`` request, before the new
answer's turn. In a plain template that is the prompt, then each attempt and the request in turn;
in a chat template, assistant turns and user turns. With every earlier attempt in context, a
revision's prompt therefore begins with the text of the previous attempt's whole context, so a
backend with prefix caching (vLLM) reuses its KV.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class PromptFormat:
    template: str = "{question}\n"
    chat_template: bool = False
    system_prompt: str | None = None
    revision: str = "Review the solution above, find its mistakes, and write a better solution.\n"

    def __post_init__(self) -> None:
        if "{question}" not in self.template:
            raise ValueError("prompt_template must contain '{question}'")

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages: system prompt (if any), then the question as the user's turn."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": question}]

    def text(self, tokenizer: Any, question: str) -> str:
        """The prompt as text (chat: rendered by the tokenizer, ending in the generation prompt)."""
        if not self.chat_template:
            return self.template.format(question=question)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        return tokenizer.apply_chat_template(self.messages(question), add_generation_prompt=True, tokenize=False)

    @property
    def adds_special_tokens(self) -> bool:
        """Whether the tokenizer's special prefix goes in front (a chat template writes its own)."""
        return not self.chat_template

    def ids(self, tokenizer: Any, question: str) -> tuple[int, ...]:
        """The prompt's token ids, as every policy backend feeds them."""
        ids = tokenizer(self.text(tokenizer, question), add_special_tokens=self.adds_special_tokens)["input_ids"]
        return tuple(int(i) for i in ids)

    def revision_messages(self, question: str, attempts: Sequence[str]) -> list[dict[str, str]]:
        """The chat messages of a revision: the question, then each attempt and the revision request."""
        turns = [[{"role": "assistant", "content": a}, {"role": "user", "content": self.revision}] for a in attempts]
        return self.messages(question) + [m for pair in turns for m in pair]

    def revision_text(self, tokenizer: Any, question: str, attempts: Sequence[str]) -> str:
        """The prompt of a solution that revises ``attempts`` (oldest first; none: the question's prompt)."""
        if not self.chat_template:
            return self.template.format(question=question) + "".join(a + self.revision for a in attempts)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        return tokenizer.apply_chat_template(self.revision_messages(question, attempts), add_generation_prompt=True,
                                             tokenize=False)

    def revision_ids(self, tokenizer: Any, question: str, attempts: Sequence[str]) -> tuple[int, ...]:
        """A revision prompt's token ids, as every policy backend feeds them."""
        ids = tokenizer(self.revision_text(tokenizer, question, attempts),
                        add_special_tokens=self.adds_special_tokens)["input_ids"]
        return tuple(int(i) for i in ids)
