"""A scripted policy and PRM: deterministic stand-ins for models, for tests and docs; and a tiny random Llama."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .prompts import PromptFormat
from .protocols import Chain, ChainScores, ExpandOutput, ExpandRequest, StepSample
from .step_format import StepFormat

#: (question, steps so far, sample index within the request, request seed) -> next step text
StepScript = Callable[[str, tuple[str, ...], int, int], str]
#: The same arguments -> per token of that step (delimiter included), its top log-probabilities, largest first
LogprobScript = Callable[[str, tuple[str, ...], int, int], Sequence[Sequence[float]]]


@dataclass
class ScriptedPolicy:
    """Samples steps from a Python function; one token per character.

    Records every request it served in ``calls`` so tests can check batching. A revision's prompt
    (``encode_revision``: the plain layout of ``PromptFormat.revision_text``) reaches the script as
    its whole text, question, earlier attempts and revision requests, less the final delimiter.
    With a ``logprobs`` script it answers requests for log-probabilities (the first k of each
    token's list, cut with the step at its cap); without one it returns none, as a backend that cannot.
    """

    script: StepScript
    step_format: StepFormat = field(default_factory=lambda: StepFormat.preset("newline"))
    num_parameters: int = 1000
    calls: list[list[ExpandRequest]] = field(default_factory=list)
    revision: str = PromptFormat.revision
    logprobs: LogprobScript | None = None
    _revisions: dict[tuple[int, ...], str] = field(default_factory=dict, repr=False)

    def widths(self) -> list[list[int]]:
        """The width of every request, call by call: how a search spent its expansions."""
        return [[r.width for r in call] for call in self.calls]

    def encode_prompt(self, question: str) -> tuple[int, ...]:
        return _ids(question + self.step_format.delimiter)

    def encode_revision(self, question: str, attempts: Sequence[str]) -> tuple[int, ...]:
        d = self.step_format.delimiter
        text = PromptFormat("{question}" + d, revision=self.revision).revision_text(None, question, attempts)
        ids = _ids(text)
        self._revisions[ids] = text[: -len(d)] if text.endswith(d) else text
        return ids

    def encode_text(self, text: str) -> tuple[int, ...]:
        return _ids(text)

    def expand(self, requests: Sequence[ExpandRequest]) -> list[ExpandOutput]:
        self.calls.append(list(requests))
        outs = []
        for r in requests:
            question, steps = self._parse(r.prefix_ids)
            samples = []
            for k in range(r.width):
                text = self.script(question, steps, 0 if r.greedy else k, r.seed)
                if not text.endswith(self.step_format.delimiter):
                    text += self.step_format.delimiter
                ids = _ids(text)
                reason = "delimiter"
                if len(ids) > r.max_new_tokens:
                    ids, reason = ids[: r.max_new_tokens], "step_cap"
                    text = "".join(map(chr, ids))
                top = None
                if r.logprobs and self.logprobs is not None:
                    lps = self.logprobs(question, steps, 0 if r.greedy else k, r.seed)
                    top = tuple(tuple(float(x) for x in t[: r.logprobs]) for t in lps)[: len(ids)]
                samples.append(StepSample(text, ids, reason, top))
            outs.append(ExpandOutput(samples, len(r.prefix_ids) + sum(len(s.token_ids) for s in samples)))
        return outs

    def _parse(self, prefix_ids: tuple[int, ...]) -> tuple[str, tuple[str, ...]]:
        d = self.step_format.delimiter
        for ids, prompt in sorted(self._revisions.items(), key=lambda kv: -len(kv[0])):  # the longest first
            if prefix_ids[: len(ids)] == ids:
                rest = "".join(map(chr, prefix_ids[len(ids):]))
                return prompt, tuple(s + d for s in rest.split(d)[:-1])  # a revision: the script sees it all
        question, _, rest = "".join(map(chr, prefix_ids)).partition(d)
        steps = tuple(s + d for s in rest.split(d)[:-1])
        return question, steps


@dataclass
class ScriptedPRM:
    """Scores each step with ``fn(question, steps_up_to_it)``; counts the chains it scored."""

    fn: Callable[[str, tuple[str, ...]], float]
    num_parameters: int = 100
    chains_scored: int = 0

    def score(self, chains: Sequence[Chain]) -> list[ChainScores]:
        self.chains_scored += len(chains)
        return [ChainScores([self.fn(c.question, c.steps[: i + 1]) for i in range(len(c.steps))],
                            processed_tokens=sum(len(s) for s in c.steps))
                for c in chains]


def depth_script(answer_at: int, finished: Callable[[int], bool] = lambda k: False) -> StepScript:
    """Steps 'Step d k'; at depth ``answer_at`` (or when ``finished(k)`` at depth 1) the step answers k."""
    def script(question: str, steps: tuple[str, ...], k: int, seed: int) -> str:
        d = len(steps) + 1
        if d >= answer_at or (d == 1 and finished(k)):
            return f"The answer is {k}"
        return f"Step {d} {k}"
    return script


def tiny_llama(vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
               intermediate: int | None = None, max_position_embeddings: int = 1024, pad_token_id: int = 0,
               bos_token_id: int = 1, eos_token_id: int = 2, seed: int = 0, **config: Any):
    """A randomly initialised ``LlamaForCausalLM`` at toy size, in eval mode: the one tiny-Llama builder
    of the tests (and of ``reward_models.testing``). Its weights depend only on the arguments: the global
    torch seed is set to ``seed`` just before the model is built. ``intermediate`` defaults to
    ``2 * hidden``; ``config`` goes to ``LlamaConfig`` as is (e.g. ``tie_word_embeddings``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=max_position_embeddings, pad_token_id=pad_token_id,
                      bos_token_id=bos_token_id, eos_token_id=eos_token_id, **config)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def _ids(text: str) -> tuple[int, ...]:
    return tuple(ord(ch) for ch in text)
