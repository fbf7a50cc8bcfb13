"""Compute ledger: tokens actually processed, from which FLOPs are derived."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ComputeLedger:
    """Tokens counted at every backend call of one search.

    FLOPs follow Kaplan's forward cost of 2·N per token (N: non-embedding parameters by default,
    or the total count, as the policy's ``parameter_count`` says):
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
        return paper_flops(self.policy_params, self.generated_tokens)

    @property
    def policy_flops(self) -> float:
        """The policy's part of ``full_flops``: every token it processed (prefill and decode)."""
        return 2.0 * self.policy_params * self.policy_processed_tokens

    @property
    def prm_flops(self) -> float:
        """The PRM's part of ``full_flops``: every token it processed (0 for cache hits)."""
        return 2.0 * self.prm_params * self.prm_processed_tokens

    @property
    def full_flops(self) -> float:
        return self.policy_flops + self.prm_flops

    def to_dict(self) -> dict:
        return {**asdict(self), "paper_flops": self.paper_flops, "full_flops": self.full_flops}


def paper_flops(num_parameters: float, generated_tokens: float) -> float:
    """Wu et al.'s FLOPs: 2 · N · generated tokens."""
    return 2.0 * num_parameters * generated_tokens


def non_embedding_parameters(model) -> int:
    """Kaplan's N: parameters outside the vocabulary-sized input and output embedding tables.

    One convention for policies and PRMs; a tied output head is counted once (not at all),
    a small value head on top of a backbone is counted.
    """
    total = sum(p.numel() for p in model.parameters())
    seen = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        emb = getattr(model, getter, lambda: None)()
        weight = getattr(emb, "weight", None)
        if weight is not None and _storage(weight) not in seen:
            seen.add(_storage(weight))
            total -= weight.numel()
    return total


def total_parameters(model) -> int:
    """Every parameter once (a tied output head is the input table): the count model cards quote,
    and Wu et al.'s N (6.74e9 for Llemma-7B)."""
    seen, total = set(), 0
    for p in model.parameters():
        if _storage(p) not in seen:
            seen.add(_storage(p))
            total += p.numel()
    return total


def _storage(p) -> int:
    """What tied weights share: the memory, or on the meta device (a model counted without
    its weights, as the vLLM backend does) the tensor itself."""
    return id(p) if p.is_meta else p.data_ptr()


PARAMETER_COUNTS = {"non_embedding": non_embedding_parameters, "total": total_parameters}


def count_parameters(model, convention: str = "non_embedding") -> int:
    """N for FLOPs under a convention: "non_embedding" (Kaplan's) or "total" (the paper's)."""
    try:
        return PARAMETER_COUNTS[convention](model)
    except KeyError:
        raise ValueError(f"unknown parameter count {convention!r}; choose one of {sorted(PARAMETER_COUNTS)}") from None
