"""The seams of the search core: what a policy and a process reward model must provide."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence, runtime_checkable

from .step_format import StepFormat


@dataclass(frozen=True)
class ExpandRequest:
    """Sample ``width`` next steps after ``prefix_ids`` (prompt + steps so far)."""

    prefix_ids: tuple[int, ...]
    width: int
    seed: int
    max_new_tokens: int  # the step's token cap: SearchLimits.max_step_tokens, less when the path is nearly full
    greedy: bool = False
    logprobs: int = 0  # k > 0: return each sampled token's top-k log-probabilities (StepSample.top_logprobs)

    def __post_init__(self) -> None:
        if self.width < 1 or self.max_new_tokens < 1 or self.logprobs < 0:
            raise ValueError(f"ExpandRequest needs width >= 1, max_new_tokens >= 1 and logprobs >= 0, got "
                             f"{self.width}, {self.max_new_tokens}, {self.logprobs}")


@dataclass(frozen=True)
class StepSample:
    """One sampled step. ``top_logprobs`` only when the request asked (``logprobs=k``): per sampled
    token, the k largest log-probabilities of the model's raw next-token distribution at its position
    (before temperature and top-p), largest first; None otherwise, so asking nothing costs nothing."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "delimiter", "eos" or "step_cap"
    top_logprobs: tuple[tuple[float, ...], ...] | None = None


def top_k(logprobs: Iterable[float], k: int) -> tuple[float, ...]:
    """One position of ``StepSample.top_logprobs`` from an engine's answer: the k largest, largest first.
    Engines answer with the sampled token's log-probability beside the top k, so the k largest are the top k."""
    return tuple(sorted(map(float, logprobs), reverse=True)[:k])


@dataclass(frozen=True)
class ExpandOutput:
    samples: list[StepSample]
    processed_tokens: int  # tokens this request put through the model (prefill + decode), for the ledger


@runtime_checkable
class Policy(Protocol):
    step_format: StepFormat
    num_parameters: int  # non-embedding parameters, for FLOPs

    def encode_prompt(self, question: str) -> tuple[int, ...]: ...

    # Optional: ``encode_text(text) -> ids`` of text continuing a sequence, for fixed step leads
    # (``Expand.leads``, budget forcing). Optional: ``encode_revision(question, attempts) -> ids``, the
    # prompt of a solution that revises earlier attempts (``Expand.revise``; ``PromptFormat.revision_ids``).
    # Optional: honouring ``ExpandRequest.logprobs`` (``StepSample.top_logprobs``); a backend that
    # ignores it fails, naming itself, in the Runner as soon as a search asks (``Expand.logprobs``).

    def expand(self, requests: Sequence[ExpandRequest]) -> list[ExpandOutput]: ...


@dataclass(frozen=True)
class Chain:
    """A question and the steps of one (partial) solution."""

    question: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class ChainScores:
    scores: list[float]  # one per step
    processed_tokens: int = 0  # tokens the PRM put through its model for this chain (0 on a cache hit)


@runtime_checkable
class ProcessRewardModel(Protocol):
    num_parameters: int

    def score(self, chains: Sequence[Chain]) -> list[ChainScores]: ...
