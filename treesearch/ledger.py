"""Compute ledger: tokens actually processed, from which FLOPs are derived."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ComputeLedger:
    """Tokens counted at every backend call of one search.

    FLOPs follow Kaplan's forward cost of 2·N per token (N = non-embedding parameters):
    ``paper_flops`` is Wu et al.'s x-axis (generated tokens only); ``full_flops`` adds
    prompt/prefix tokens the policy re-encoded and every token the PRM processed.
    """

    policy_params: int = 0
    prm_params: int = 0
    generated_tokens: int = 0
    policy_processed_tokens: int = 0
    prm_processed_tokens: int = 0
    policy_calls: int = 0
    prm_calls: int = 0

    @property
    def paper_flops(self) -> float:
        return 2.0 * self.policy_params * self.generated_tokens

    @property
    def full_flops(self) -> float:
        return (2.0 * self.policy_params * self.policy_processed_tokens
                + 2.0 * self.prm_params * self.prm_processed_tokens)

    def to_dict(self) -> dict:
        return {**asdict(self), "paper_flops": self.paper_flops, "full_flops": self.full_flops}


def paper_flops(num_parameters: float, generated_tokens: float) -> float:
    """Wu et al.'s FLOPs: 2 · N · generated tokens."""
    return 2.0 * num_parameters * generated_tokens
