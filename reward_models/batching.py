"""The one batch scorer behind every model-based PRM, and its prefix cache.

Why it looks like this:

* Search asks for many chains at once, mostly sharing prefixes with chains already scored
  (every REBASE child extends a scored parent). So the scorer first serves what the
  :class:`PrefixCache` knows, drops duplicates and chains that are a prefix of another
  chain in the same request, and runs the model only on what is left.
* What is left is sorted by length (longest first, so an out-of-memory error shows up on
  the first batch, not the last) and packed greedily so that rows × longest row stays
  under ``max_batch_tokens``: little padding, few forward calls.
* On ``torch.cuda.OutOfMemoryError`` the failing batch is halved and retried, down to one
  chain, which re-raises. The lowered token budget is kept for later calls, so a long
  search does not hit the same wall on every step (``reset_budget()`` restores it).
* Left and right padding give the same scores: position ids come from the attention
  mask, and read-out positions are shifted by each row's left padding. With right
  padding a causal model needs no attention mask at all (pads only follow real tokens).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from typing import Protocol, Sequence

import torch

from treesearch.protocols import Chain, ChainScores

from .base import Encoding

Key = tuple[str, tuple[str, ...]]


def chain_key(chain: Chain) -> Key:
    return (chain.question, tuple(chain.steps))


class PrefixCache:
    """Step scores keyed by (question, step prefix).

    ``prefix_filling=True`` (causal PRMs read at step positions): the score of step k is a
    function of the prefix up to step k alone, so one scored chain fills an entry for each
    of its prefixes, and a chain is a hit when all its prefixes are known. Outcome RMs
    and any bidirectional PRM must use ``prefix_filling=False``: a step's score may then
    depend on later steps, so only whole chains are cached.

    Bounded by ``max_entries`` (oldest entries are dropped first; search visits a problem's
    tree once, so recency of insertion is a fair proxy for reuse).
    """

    def __init__(self, prefix_filling: bool = True, max_entries: int | None = 1_000_000):
        self.prefix_filling = prefix_filling
        self.max_entries = max_entries
        self._d: dict = {}

    def get(self, chain: Chain) -> list[float] | None:
        q, steps = chain_key(chain)
        if not self.prefix_filling:
            hit = self._d.get((q, steps))
            return list(hit) if hit is not None else None
        out = []
        for k in range(1, len(steps) + 1):
            v = self._d.get((q, steps[:k]))
            if v is None:
                return None
            out.append(v)
        return out or None

    def put(self, chain: Chain, scores: Sequence[float]) -> None:
        q, steps = chain_key(chain)
        if len(scores) != len(steps):
            raise ValueError(f"{len(scores)} scores for {len(steps)} steps")
        if self.prefix_filling:
            for k in range(1, len(steps) + 1):
                self._d[(q, steps[:k])] = float(scores[k - 1])
        else:
            self._d[(q, steps)] = tuple(float(s) for s in scores)
        if self.max_entries is not None:
            while len(self._d) > self.max_entries:
                del self._d[next(iter(self._d))]

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()


class ScoringBackend(Protocol):
    """What the batch scorer needs from an adapter (``ModelPRM`` provides it)."""

    prefix_filling: bool
    causal: bool  # optional, default True: right padding then needs no attention mask
    device: torch.device
    pad_token_id: int

    def encode(self, chain: Chain) -> Encoding: ...

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 position_ids: torch.Tensor) -> torch.Tensor: ...

    def head(self, feats: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor: ...

    def finalize(self, step_values: torch.Tensor) -> torch.Tensor: ...

    # Optional: ``reduce(values, segments, n)`` turns read-out scalars into per-step values
    # (default: their mean), ``combine(scores)`` maps one chain's step scores (default: as is).


@dataclass
class ScorerStats:
    """Running totals, for benchmarks and the compute ledger's sanity checks."""

    chains_requested: int = 0
    served_from_cache: int = 0  # every prefix already known: no model call
    deduplicated: int = 0  # identical to, or a prefix of, another chain in the same request
    chains_run: int = 0  # chains put through the model
    tokens_run: int = 0  # their tokens (padding excluded)
    forward_calls: int = 0  # successful forward passes
    oom_retries: int = 0  # forward passes that ran out of memory and were split

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


class BatchScorer:
    """Scores chains for a :class:`ScoringBackend`: cache, dedup, pack, pad, back off, read out."""

    def __init__(self, backend: ScoringBackend, *, max_batch_tokens: int = 16384,
                 max_batch_size: int = 256, padding_side: str = "right",
                 cache: PrefixCache | None = None):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
        self.backend = backend
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.padding_side = padding_side
        self.cache = cache
        self.stats = ScorerStats()
        self._budget = max_batch_tokens  # lowered after an out-of-memory error

    def reset_budget(self) -> None:
        self._budget = self.max_batch_tokens

    # ---- the protocol's entry point --------------------------------------------------------
    def score(self, chains: Sequence[Chain]) -> list[ChainScores]:
        n = len(chains)
        self.stats.chains_requested += n
        results: list[ChainScores | None] = [None] * n
        groups: dict[Key, list[int]] = {}
        for i, c in enumerate(chains):
            if not c.steps:
                raise ValueError(f"chain {i} has no steps; a PRM scores steps, so there is nothing to score")
            hit = self.cache.get(c) if self.cache is not None else None
            if hit is not None:
                results[i] = ChainScores(hit, processed_tokens=0)
                self.stats.served_from_cache += 1
            else:
                groups.setdefault(chain_key(c), []).append(i)

        # A chain that is a proper prefix of another pending chain gets its scores from it.
        covered: dict[Key, Key] = {}
        if self.backend.prefix_filling and len(groups) > 1:
            longest: dict[Key, Key] = {}
            for key in sorted(groups, key=lambda k: -len(k[1])):
                q, steps = key
                for k in range(1, len(steps)):
                    longest.setdefault((q, steps[:k]), key)
            covered = {key: longest[key] for key in groups if key in longest}
        to_run = [key for key in groups if key not in covered]
        self.stats.deduplicated += sum(len(v) - 1 for k, v in groups.items() if k not in covered)
        self.stats.deduplicated += sum(len(groups[k]) for k in covered)

        encs = {key: self.backend.encode(chains[groups[key][0]]) for key in to_run}
        for key, enc in encs.items():
            if len(enc.readout) != len(key[1]):
                raise RuntimeError(f"{type(self.backend).__name__}.encode gave {len(enc.readout)} "
                                   f"read-outs for {len(key[1])} steps")
        computed = self._run(to_run, encs)

        for key in to_run:
            scores = computed[key]
            idx = groups[key]
            results[idx[0]] = ChainScores(list(scores), processed_tokens=len(encs[key]))
            for j in idx[1:]:
                results[j] = ChainScores(list(scores), processed_tokens=0)
            if self.cache is not None:
                self.cache.put(chains[idx[0]], scores)
        for key, by in covered.items():
            scores = computed[by][: len(key[1])]
            for j in groups[key]:
                results[j] = ChainScores(list(scores), processed_tokens=0)
        return results  # type: ignore[return-value]

    # ---- packing and backoff ----------------------------------------------------------------
    def _pack(self, keys: list, encs: dict, budget: int) -> list[list]:
        """Consecutive keys (longest encoding first) in batches of at most ``budget`` padded tokens."""
        batches: list[list[Key]] = []
        cur: list[Key] = []
        for key in keys:  # longest first, so the first row sets the batch width
            width = len(encs[cur[0]]) if cur else len(encs[key])
            if cur and ((len(cur) + 1) * width > budget or len(cur) >= self.max_batch_size):
                batches.append(cur)
                cur = []
            cur.append(key)
        if cur:
            batches.append(cur)
        return batches

    def _run(self, keys: list[Key], encs: dict[Key, Encoding]) -> dict[Key, list[float]]:
        keys = sorted(keys, key=lambda k: -len(encs[k]))
        queue = deque(self._pack(keys, encs, self._budget))
        out: dict[Key, list[float]] = {}
        while queue:
            batch = queue.popleft()
            padded = len(batch) * max(len(encs[k]) for k in batch)
            if len(batch) > 1 and padded > self._budget:  # the budget shrank since packing
                queue.extendleft(reversed(self._pack(batch, encs, self._budget)))
                continue
            try:
                scores = self._forward([encs[k] for k in batch])
            except torch.cuda.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                self.stats.oom_retries += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self._budget = max(1, padded // 2)
                half = (len(batch) + 1) // 2
                queue.extendleft([batch[half:], batch[:half]])
                continue
            self.stats.forward_calls += 1
            self.stats.chains_run += len(batch)
            self.stats.tokens_run += sum(len(encs[k]) for k in batch)
            out.update(zip(batch, scores))
        return out

    # ---- raw step values (training a head on them) -----------------------------------------
    def step_values(self, chains: Sequence[Chain]) -> list[torch.Tensor]:
        """Per chain, the reduced read-out values of each step before ``finalize`` ([steps, ...]).

        No cache: this is for fitting what ``finalize`` does (a head on likelihood features)."""
        encs = dict(enumerate(self.backend.encode(c) for c in chains))  # chain index -> encoding
        order = sorted(encs, key=lambda i: -len(encs[i]))
        out: list[torch.Tensor | None] = [None] * len(encs)
        for batch in self._pack(order, encs, self._budget):
            values, counts = self._values([encs[i] for i in batch])
            start = 0
            for i, n in zip(batch, counts):
                out[i] = values[start:start + n]
                start += n
        return out  # type: ignore[return-value]

    # ---- one forward pass ---------------------------------------------------------------------
    def _forward(self, encs: list[Encoding]) -> list[list[float]]:
        b = self.backend
        values, steps_per_chain = self._values(encs)
        step_scores = b.finalize(values).float().cpu().tolist()
        combine = getattr(b, "combine", None)
        out, i = [], 0
        for k in steps_per_chain:
            scores = step_scores[i:i + k]
            out.append(list(combine(scores)) if combine is not None else scores)
            i += k
        return out

    def _values(self, encs: list[Encoding]) -> tuple[torch.Tensor, list[int]]:
        """One padded forward pass: the backend's reduced read-out values per step, and steps per chain."""
        b = self.backend
        width = max(len(e) for e in encs)
        ids = torch.full((len(encs), width + 1), b.pad_token_id, dtype=torch.long)  # +1: next_ids of the last column
        mask = torch.zeros((len(encs), width), dtype=torch.long)
        rows: list[int] = []
        cols: list[int] = []
        seg: list[int] = []
        steps_per_chain: list[int] = []
        s = 0
        for r, e in enumerate(encs):
            off = width - len(e) if self.padding_side == "left" else 0
            ids[r, off:off + len(e)] = torch.tensor(e.input_ids, dtype=torch.long)
            mask[r, off:off + len(e)] = 1
            for pos in e.readout:
                rows.extend([r] * len(pos))
                cols.extend(p + off for p in pos)
                seg.extend([s] * len(pos))
                s += 1
            steps_per_chain.append(len(e.readout))
        # Positions count real tokens only (left padding shifts nothing); pads after the real
        # tokens keep counting up, so positions never repeat (which models read as packing).
        position_ids = torch.where(mask.bool(), mask.cumsum(-1) - 1,
                                   torch.arange(width).expand(len(encs), width) if self.padding_side == "right" else 0)
        rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
        next_ids = ids[rows_t, cols_t + 1]
        seg_t = torch.tensor(seg)
        dev = b.device
        reduce = getattr(b, "reduce", None) or segment_mean
        with torch.inference_mode():
            # Causal model, right padding: real tokens never see the pads after them, so no mask
            # is needed, and attention takes its fused causal path instead of a materialised mask.
            skip_mask = self.padding_side == "right" and getattr(b, "causal", True)
            feats = b.features(ids[:, :width].to(dev), None if skip_mask else mask.to(dev), position_ids.to(dev))
            h = feats[rows_t.to(dev), cols_t.to(dev)]
            vals = b.head(h, next_ids.to(dev)).float().reshape(-1)
            values = reduce(vals, seg_t.to(vals.device), s).float().cpu()
        return values, steps_per_chain


def segment_mean(values: torch.Tensor, segments: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of ``values`` per segment id (0..n-1): a step's score from its read-out positions."""
    sums = torch.zeros(n, device=values.device).index_add_(0, segments, values)
    counts = torch.bincount(segments, minlength=n).to(values.device).float()
    return sums / counts
