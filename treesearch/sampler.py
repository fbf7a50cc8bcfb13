"""Batch-independent categorical draws for the decode loop.

Each row's draw depends only on its own logits and a uniform hashed from (row seed,
position): never on the other rows, the batch order or a global RNG. So a problem's samples
are the same whether it is decoded alone, in a big batch, on another shard or after a resume.
One uniform per row and an inverse-CDF lookup cost O(vocab) per row; top-p looks in the
top ``NUCLEUS_K`` tokens first and sorts the whole vocabulary only for rows whose nucleus
is wider than that. The decode loop hashes every row's uniforms for a whole step once
(``uniforms``) and draws with ``draw_uniform``: the same numbers as ``draw`` at each position.
"""
from __future__ import annotations

import torch


_M32 = 0xFFFFFFFF
NUCLEUS_K = 256


def draw(logits: torch.Tensor, seeds: torch.Tensor, t: int, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), restricted to the top-p nucleus.

    ``seeds`` are per-row int64 seeds below 2**32, ``t`` the position within the step.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    return draw_uniform(logits, row_uniform(seeds, t), temperature, top_p)


def draw_uniform(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """``draw`` given each row's uniform ``u`` (from ``row_uniform`` or a column of ``uniforms``); temperature > 0."""
    scores = logits.float() / temperature
    if top_p >= 1.0:
        return _inverse_cdf(scores.softmax(-1), u)
    vocab = scores.shape[-1]
    lse = scores.logsumexp(-1, keepdim=True)
    top, idx = scores.topk(min(NUCLEUS_K, vocab), -1)  # sorted, descending
    out = _nucleus(top, idx, lse, u, top_p)
    wide = ((top - lse).exp().sum(-1) < top_p).nonzero().flatten()
    if len(wide) and top.shape[-1] < vocab:  # the nucleus spills past the top k: sort those rows fully
        full, full_idx = scores[wide].sort(-1, descending=True)
        out[wide] = _nucleus(full, full_idx, lse[wide], u[wide], top_p)
    return out


def _nucleus(sorted_scores: torch.Tensor, idx: torch.Tensor, lse: torch.Tensor, u: torch.Tensor, top_p: float):
    """Draw among the smallest head of the descending-sorted tokens whose mass reaches top_p."""
    probs = (sorted_scores - lse).exp()
    before = probs.cumsum(-1) - probs
    probs = probs.masked_fill(before >= top_p, 0.0)  # the first token is always kept
    return idx.gather(-1, _inverse_cdf(probs, u)[:, None]).squeeze(-1)


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index j with cdf[j-1] <= u * total < cdf[j]: a token of zero weight is never drawn."""
    cdf = weights.double().cumsum(-1)
    x = (u * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp_(max=weights.shape[-1] - 1)


def row_uniform(seeds: torch.Tensor, t: int) -> torch.Tensor:
    """A uniform in (0, 1) per row that depends only on (row seed, t)."""
    return _uniform(seeds, torch.tensor(t, device=seeds.device))


def uniforms(seeds: torch.Tensor, steps: int) -> torch.Tensor:
    """[rows, steps]: column t is ``row_uniform(seeds, t)``, all hashed in one go."""
    return _uniform(seeds[:, None], torch.arange(steps, device=seeds.device))


def _uniform(seeds: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    h = _hash32(seeds ^ _hash32(t * 0x27D4EB2F & _M32))
    return (h.double() + 0.5) / 2.0**32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x
