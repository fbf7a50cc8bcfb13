"""The seams of the search core: what a policy and a process reward model must provide."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from .step_format import StepFormat


@dataclass(frozen=True)
class ExpandRequest:
    """Sample ``width`` next steps after ``prefix_ids`` (prompt + steps so far)."""

    prefix_ids: tuple[int, ...]
    width: int
    seed: int
    max_new_tokens: int  # the step's token cap: SearchLimits.max_step_tokens, less when the path is nearly full
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.width < 1 or self.max_new_tokens < 1:
            raise ValueError(f"ExpandRequest needs width >= 1 and max_new_tokens >= 1, got {self.width}, "
                             f"{self.max_new_tokens}")


@dataclass(frozen=True)
class StepSample:
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "delimiter", "eos" or "step_cap"


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
