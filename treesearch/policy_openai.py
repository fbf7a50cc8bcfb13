"""A policy behind OpenAI-compatible completions servers (``backend: openai``): ``vllm serve``,
SGLang, TGI, a router in front of several of them, on this node or others.

The search stays a light client. Each ``ExpandRequest`` is one completion request: the node's
prefix as token ids (``token_prompts``; text for servers that take only text), ``n`` = its
width, a stop at the step delimiter kept in the text, ``max_tokens`` = the request's cap, the
node's seed and the policy's temperature / top_p. All requests of one Runner round go out at
once (at most ``max_concurrency`` in flight), so the server's continuous batching sees them
together; every request of one question goes to that question's server, so siblings meet its
prefix cache (``treesearch.serving``: affinity, failover, retries, credentials).

What holds:

* Steps, stops and text follow the offline vLLM backend: the server returns the sampled token
  ids (vLLM's ``return_token_ids``); the text is decoded from them locally, so text and ids always
  agree and a text round-trip cannot move a step boundary. A server that returns no ids gets its
  text tokenized locally (a warning says so once).
* The ledger is exact from what the server reports: generated = the returned ids; processed =
  ``usage.prompt_tokens`` less ``usage.prompt_tokens_details.cached_tokens`` (vLLM with
  ``--enable-prompt-tokens-details``) + every sample's tokens but its last. One prompt per
  request, because vLLM reports cached tokens only for a request's last prompt.
  ``processed_source`` says which it was: ``server_usage`` or, where the server reports no
  cached count, ``server_usage_uncached`` (the whole prompt counted).
* Never a silently shortened step: a sample that ends at "length" before the request's cap
  (vLLM caps prompt + max_tokens at its max_model_len) or an answer with missing fields or the
  wrong number of samples is a ``ServerError`` naming the URL.
* Log-probabilities, when a request asks (``ExpandRequest.logprobs``): ``logprobs=k`` with vLLM's
  ``return_tokens_as_token_ids`` (two tokens of the same text stay two entries); an answer without k
  of them per token is a ``ServerError`` naming the URL (a server's ``--max-logprobs`` caps k).
* Engine-dependent: the draws. vLLM seeds sample k with seed + k, as the offline engine, so a
  node's children do not depend on the batch, the server or the concurrency; another engine may
  not. Greedy requests are one sample (vLLM wants n=1) repeated ``width`` times.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

from .backends import NEEDS_PARAMETERS, Policy, PolicySpec, parameters_of, register_policy
from .prompts import PromptFormat
from .protocols import ExpandOutput, ExpandRequest, StepSample, top_k
from .serving import INSTALL, RUNTIME, EventLoop, ServerError, ServerOptions, ServerPool, gather
from .step_format import StepFormat

_SEED_MASK = (1 << 62) - 1  # the server adds the sample index to the seed; seeds must stay below 2**63


@dataclass(frozen=True)
class OpenAIOptions(ServerOptions):
    """The servers (``ServerOptions``) and what to ask them for."""

    model: str | None = None  # the served model's name; None: the only one the server lists
    tokenizer: str | None = None  # a local tokenizer directory, where no local model ``path`` is given
    token_prompts: bool = True  # send prefixes as token ids (vLLM, SGLang); False: as text
    return_token_ids: bool = field(default=True, metadata=RUNTIME)  # ask for the sampled ids (vLLM's extension)


class OpenAIPolicy:
    """Samples reasoning steps with ``/v1/completions`` requests, all of a round at once."""

    processed_source = "server_usage"

    def __init__(self, pool: ServerPool, tokenizer: Any, step_format: StepFormat | None = None, *, model: str,
                 temperature: float = 1.0, top_p: float = 1.0, prompt: PromptFormat = PromptFormat(),
                 num_parameters: int, token_prompts: bool = True, return_token_ids: bool = True):
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.pool, self.tokenizer, self.model = pool, tokenizer, model
        self.step_format = step_format or StepFormat.preset("paper")
        self.temperature, self.top_p, self.prompt = temperature, top_p, prompt
        self.num_parameters = int(num_parameters)
        self.token_prompts, self.return_token_ids = token_prompts, return_token_ids
        self._questions: dict[int, dict[tuple[int, ...], int]] = {}  # prompt length -> prompt ids -> question
        self._warned_text = False
        self._loop = EventLoop()

    @classmethod
    def from_spec(cls, spec: PolicySpec) -> OpenAIPolicy:
        o: OpenAIOptions = spec.options
        pool = ServerPool(o, "policy server")
        model = pool.served_model(o.model)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(_tokenizer_dir(spec), trust_remote_code=spec.trust_remote_code)
        return cls(pool, tokenizer, spec.step_format, model=model, temperature=spec.temperature, top_p=spec.top_p,
                   prompt=spec.prompt, num_parameters=parameters_of(spec, "openai"), token_prompts=o.token_prompts,
                   return_token_ids=o.return_token_ids)

    def close(self) -> None:
        """Close the connections (the servers keep running: they are the user's)."""
        self._loop.close(last=self.pool.aclose())

    def server_report(self) -> str | None:
        """One line on the 429/5xx answers the client retried, or None."""
        return self.pool.retry_report()

    # ---- Policy protocol ----------------------------------------------------------------
    def encode_prompt(self, question: str) -> tuple[int, ...]:
        ids = self.prompt.ids(self.tokenizer, question)
        by_ids = self._questions.setdefault(len(ids), {})
        by_ids.setdefault(ids, sum(len(d) for d in self._questions.values()))
        return ids

    def encode_revision(self, question: str, attempts: Sequence[str]) -> tuple[int, ...]:
        """Ids of the prompt of a solution that revises earlier attempts (``Expand.revise``)."""
        return self.prompt.revision_ids(self.tokenizer, question, attempts)

    def encode_text(self, text: str) -> tuple[int, ...]:
        """Ids of text that continues a sequence (no special tokens): fixed step leads."""
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def expand(self, requests: Sequence[ExpandRequest]) -> list[ExpandOutput]:
        if not requests:
            return []
        return self._loop.run(gather([self._expand(r) for r in requests]))

    # ---- one request --------------------------------------------------------------------
    def _question(self, prefix: tuple[int, ...]) -> Hashable:
        """Which question a prefix grows from (its server's key): the registered prompt it starts with."""
        for length, prompts in self._questions.items():
            q = prompts.get(prefix[:length])
            if q is not None:
                return q
        return prefix[:64]  # a prefix from no known prompt (a caller of expand alone): its opening tokens

    def body(self, r: ExpandRequest) -> dict[str, Any]:
        """The completion request for ``r`` (keyword arguments of ``completions.create``)."""
        greedy = r.greedy or self.temperature == 0
        prompt = list(r.prefix_ids) if self.token_prompts else self.tokenizer.decode(list(r.prefix_ids))
        extra = {"include_stop_str_in_output": True, "skip_special_tokens": True}
        if self.return_token_ids:
            extra["return_token_ids"] = True
        asked = {}
        if r.logprobs:  # keyed by token id (vLLM), so two tokens of the same text stay two entries
            asked["logprobs"], extra["return_tokens_as_token_ids"] = r.logprobs, True
        return dict(model=self.model, prompt=prompt, n=1 if greedy else r.width, max_tokens=r.max_new_tokens,
                    temperature=0.0 if greedy else self.temperature, top_p=1.0 if greedy else self.top_p,
                    seed=None if greedy else r.seed & _SEED_MASK, stop=[self.step_format.delimiter],
                    **asked, extra_body=extra)

    async def _expand(self, r: ExpandRequest) -> ExpandOutput:
        body = self.body(r)
        url = ""

        async def send(client: Any) -> Any:
            nonlocal url
            url = str(client.base_url).rstrip("/")
            return await client.completions.create(**body)

        answer = await self.pool.call(self._question(r.prefix_ids), send)
        choices = sorted(getattr(answer, "choices", None) or [], key=lambda c: c.index)
        if len(choices) != body["n"]:
            raise ServerError(f"policy server {url} answered {len(choices)} samples for n={body['n']}")
        samples = [self._sample(c, r.max_new_tokens, url, r.logprobs) for c in choices]
        usage = getattr(answer, "usage", None)
        if usage is None or not isinstance(getattr(usage, "prompt_tokens", None), int):
            raise ServerError(f"policy server {url} answered without usage.prompt_tokens (needed for the ledger)")
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None)
        if cached is None:
            self.processed_source = "server_usage_uncached"
        fed = usage.prompt_tokens - int(cached or 0) + sum(len(s.token_ids) - 1 for s in samples)
        return ExpandOutput(samples * (r.width // len(samples)), fed)

    def _sample(self, c: Any, cap: int, url: str, k: int) -> StepSample:
        step = self._step(c, cap, url)
        if not k:
            return step
        top = getattr(getattr(c, "logprobs", None), "top_logprobs", None)
        if not isinstance(top, list) or len(top) != len(step.token_ids) or not all(
                isinstance(d, dict) and len(d) >= k for d in top):
            raise ServerError(f"policy server {url} answered without top-{k} log-probabilities for each of a step's "
                              f"{len(step.token_ids)} tokens (is its --max-logprobs below {k}?)")
        return dataclasses.replace(step, top_logprobs=tuple(top_k(d.values(), k) for d in top))

    def _step(self, c: Any, cap: int, url: str) -> StepSample:
        extra = getattr(c, "model_extra", None) or {}
        ids = extra.get("token_ids", getattr(c, "token_ids", None))
        text = getattr(c, "text", None)
        if ids is None:
            if not isinstance(text, str):
                raise ServerError(f"policy server {url} answered a sample with neither text nor token ids")
            if not self._warned_text:
                self._warned_text = True
                self.pool.warn(f"warning: policy server {url} returns no token ids; steps are tokenized locally "
                               f"from its text (return_token_ids: false silences this)")
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids) or len(ids) > cap:
            raise ServerError(f"policy server {url} answered a malformed sample: token ids {str(ids)[:80]} "
                              f"for a cap of {cap}")
        ids = tuple(ids)
        step = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        finish = getattr(c, "finish_reason", None)
        if finish == "length":
            if len(ids) < cap:
                raise ServerError(f"policy server {url} cut a step at {len(ids)} of {cap} tokens (is prompt + "
                                  f"step cap beyond its --max-model-len?)")
            return StepSample(step, ids, "step_cap")
        if finish != "stop":
            raise ServerError(f"policy server {url} answered a sample with finish_reason {finish!r}")
        if "stop_reason" in extra:  # vLLM: the stop string, a stop token id of the model, or None at EOS
            at_delimiter = isinstance(extra["stop_reason"], str)
        else:  # a server that does not say: the text does
            at_delimiter = step.endswith(self.step_format.delimiter)
        if at_delimiter:
            return StepSample(step, ids, "delimiter")
        return StepSample(step, ids, "eos")  # EOS (stop_reason None) or a stop token id of the model


def _tokenizer_dir(spec: PolicySpec) -> str:
    """Where the local tokenizer is: ``options.tokenizer``, else the model directory ``path``."""
    where = spec.options.tokenizer or spec.path
    if not where:
        raise ValueError("the openai backend needs a local tokenizer: a model directory (path) or options.tokenizer")
    if not os.path.exists(where):
        raise ValueError(f"the openai backend needs a local tokenizer: no such path {where!r}")
    return where


def check(spec: PolicySpec) -> None:
    """What ``treesearch check`` can tell before a study starts: N or a local config for it, a tokenizer, the key,
    and that every server answers and serves the model."""
    if spec.num_parameters is None and not spec.path:
        raise ValueError(NEEDS_PARAMETERS.format(backend="openai"))
    _tokenizer_dir(spec)
    try:
        ServerPool(spec.options, "policy server").served_model(spec.options.model)
    except ServerError as e:
        raise ValueError(f"base_url: {e}") from None


@register_policy("openai", options=OpenAIOptions, requires="openai", install=INSTALL, check=check)
def openai_policy(spec: PolicySpec) -> Policy:
    return OpenAIPolicy.from_spec(spec)


__all__ = ["OpenAIOptions", "OpenAIPolicy"]
