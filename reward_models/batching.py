"""The one batch scorer behind every model-based PRM, its prefix score cache and its prefix KV store.

Why it looks like this:

* Search asks for many chains at once, mostly sharing prefixes with chains already scored
  (every REBASE child extends a scored parent). So the scorer first serves what the
  :class:`PrefixCache` knows, drops duplicates and chains that are a prefix of another
  chain in the same request, and runs the model only on what is left.
* Incremental scoring: a chain whose ancestor chain was scored is not read again from the
  question on. The KV of every scored chain (all but its last token) is kept in a bounded
  :class:`~treesearch.kv_cache.PrefixKVStore`, a child's segment pointing at its parent's;
  a child then feeds only its parent's last token and its new step(s), and takes the
  scores of the steps before from the stored entry. A chain whose ancestors were evicted is
  encoded in full. Only causal models do this (their earlier positions cannot depend on
  what follows), and the ledger counts the tokens actually fed.
* What is left is sorted by length (longest first, so an out-of-memory error shows up on
  the first batch, not the last) and packed greedily so that rows × longest row stays
  under ``max_batch_tokens``: little padding, few forward calls. A fed token counts in
  full, a position read from stored KV a quarter (memory, no compute); fully encoded and
  incremental chains are packed apart, so a one-step suffix never pads to a whole chain.
* On ``torch.cuda.OutOfMemoryError`` the failing batch is halved and retried, down to one
  chain, which re-raises. The lowered token budget is kept for later calls, so a long
  search does not hit the same wall on every step (``reset_budget()`` restores it).
* A chain longer than the backend's ``context_limit`` is refused (:class:`ContextLimitError`)
  when it is encoded, before any forward pass of its request: past its trained positions a
  rotary model extrapolates without error, so its score would silently be of something else.
  The whole encoding counts, also when a child only feeds its new step on its parent's KV.
* Left and right padding give the same scores: position ids come from the attention
  mask, and read-out positions are shifted by each row's left padding. With right
  padding a causal model needs no attention mask at all (pads only follow real tokens).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, fields
from typing import Protocol, Sequence

import torch
from transformers import DynamicCache

from treesearch.kv_cache import PrefixKVStore, Segment, buffer_cache, gather, stacked
from treesearch.protocols import Chain, ChainScores

from .encoding import Encoding

log = logging.getLogger(__name__)

Key = tuple[str, tuple[str, ...]]


def chain_key(chain: Chain) -> Key:
    return (chain.question, tuple(chain.steps))


class ContextLimitError(ValueError):
    """A chain longer than the PRM's context limit (raised before any forward pass)."""


class PrefixCache:
    """Step scores keyed by (question, step prefix): each step's own score, before ``combine``.

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

    # Optional: ``context_limit`` (int or None), the most positions the model reads.

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 position_ids: torch.Tensor, cache=None) -> torch.Tensor: ...

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
    incremental: int = 0  # ... of which extended a stored ancestor's KV
    tokens_run: int = 0  # tokens fed to the model (padding excluded)
    tokens_reused: int = 0  # positions read from stored KV instead
    forward_calls: int = 0  # successful forward passes
    oom_retries: int = 0  # forward passes that ran out of memory and were split

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


@dataclass(frozen=True, eq=False)
class _Job:
    """One chain to run: positions from ``start`` on are fed, earlier ones come from ``past``;
    ``known`` are the scores of the first steps, whose read-outs all lie before ``start``."""

    key: Key
    enc: Encoding
    past: Segment | None = None  # KV of positions [0, start)
    start: int = 0
    known: tuple[float, ...] = ()

    @property
    def fed(self) -> int:
        return len(self.enc) - self.start

    @property
    def size(self) -> int:
        return self.fed + self.start // 4


class BatchScorer:
    """Scores chains for a :class:`ScoringBackend`: cache, dedup, extend stored KV, pack, pad, back off, read out."""

    def __init__(self, backend: ScoringBackend, *, max_batch_tokens: int = 16384,
                 max_batch_size: int = 256, padding_side: str = "right",
                 cache: PrefixCache | None = None, kv_store: PrefixKVStore | None = None):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
        self.backend = backend
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.padding_side = padding_side
        self.cache = cache
        self.kv_store = kv_store
        self.stats = ScorerStats()
        self._budget = max_batch_tokens  # lowered after an out-of-memory error

    def reset_budget(self) -> None:
        self._budget = self.max_batch_tokens

    def forget(self) -> None:
        """Empty the score cache and the KV store."""
        if self.cache is not None:
            self.cache.clear()
        if self.kv_store is not None:
            self.kv_store.clear()

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
                results[i] = ChainScores(self._combine(hit), processed_tokens=0)
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

        jobs = []
        for key in to_run:
            enc = self._encode(chains, groups[key][0])
            if len(enc.readout) != len(key[1]):
                raise RuntimeError(f"{type(self.backend).__name__}.encode gave {len(enc.readout)} "
                                   f"read-outs for {len(key[1])} steps")
            jobs.append(self._plan(key, enc))
        jobs, later = self._question_first(jobs)
        computed = self._run(jobs)
        if later:  # now that their question's KV is stored, they feed only their steps
            later = [self._plan(j.key, j.enc) for j in later]
            computed.update(self._run(later))
            jobs += later

        for job in jobs:
            local = computed[job.key]
            scores = self._combine(local)
            idx = groups[job.key]
            results[idx[0]] = ChainScores(scores, processed_tokens=job.fed)
            for j in idx[1:]:
                results[j] = ChainScores(list(scores), processed_tokens=0)
            if self.cache is not None:
                self.cache.put(chains[idx[0]], local)
        for key, by in covered.items():
            scores = self._combine(computed[by][: len(key[1])])
            for j in groups[key]:
                results[j] = ChainScores(list(scores), processed_tokens=0)
        return results  # type: ignore[return-value]

    def _encode(self, chains: Sequence[Chain], i: int) -> Encoding:
        """``chains[i]``'s encoding; ContextLimitError when it is longer than the backend reads."""
        enc = self.backend.encode(chains[i])
        limit = getattr(self.backend, "context_limit", None)
        if limit is not None and len(enc) > limit:
            b = self.backend
            path = getattr(getattr(b, "spec", None), "path", None)
            name = type(b).__name__ + (f" ({path})" if path else "")
            raise ContextLimitError(
                f"{name} has a context limit of {limit} tokens, but chain {i} of this request (its question and "
                f"{len(chains[i].steps)} step(s)) is {len(enc)} tokens: lower the search's max_solution_tokens (or "
                f"shorten the question), or pass the PRM option max_positions if the model really reads longer inputs")
        return enc

    def _combine(self, local: Sequence[float]) -> list[float]:
        combine = getattr(self.backend, "combine", None)
        return list(combine(list(local))) if combine is not None else list(local)

    # ---- incremental scoring -----------------------------------------------------------------
    def _plan(self, key: Key, enc: Encoding) -> _Job:
        """Extend the longest stored ancestor chain whose ids this chain's ids start with."""
        if self.kv_store is None:
            return _Job(key, enc)
        q, steps = key
        for k in range(len(steps) - 1, -1, -1):  # k = 0: the question alone, stored with its first chain
            found = self.kv_store.get((q, steps[:k]))
            if found is None:
                continue
            past, (ids, local) = found
            start = len(ids) - 1  # the stored KV covers all but the ancestor's last token, which is fed again
            if enc.input_ids[:len(ids)] != ids:
                continue  # an adapter whose layout of a prefix is not a prefix of the layout
            first = next((s for s, pos in enumerate(enc.readout) if max(pos) >= start), len(enc.readout))
            if first > len(local) or any(min(pos) < start for pos in enc.readout[first:]):
                continue
            return _Job(key, enc, past, start, tuple(local[:first]))
        return _Job(key, enc)

    def _question_first(self, jobs: list[_Job]) -> tuple[list[_Job], list[_Job]]:
        """Jobs to run now, and chains to run after them: of several chains read from the same
        question on (a first level of siblings, or finished samples scored at the end), one goes
        first and stores the question's KV, and the others then extend it."""
        if self.kv_store is None:
            return jobs, []
        now, later, seen = [], [], set()
        for j in jobs:
            if j.past is None and j.enc.prompt_length >= 2:
                if j.key[0] in seen:
                    later.append(j)
                    continue
                seen.add(j.key[0])
            now.append(j)
        return now, later

    def _keep(self, job: _Job, kv: torch.Tensor, row: int, col: int, local: list[float]) -> None:
        """Store a run chain's KV (all but its last token; ``col``: the buffer column of position ``job.start``).

        A chain read from the question on also stores the question's KV once (under the chain
        with no steps), so its siblings, which all start from the same question, feed only their step."""
        if self.kv_store is None or len(job.enc) < 2:
            return
        ids, start, past = job.enc.input_ids, job.start, job.past
        prompt = job.enc.prompt_length
        if start == 0 and 2 <= prompt < len(ids):
            key = (job.key[0], ())
            found = self.kv_store.get(key)
            if found is not None and found[1][0] == ids[:prompt]:
                past = found[0]
            else:
                past = Segment(kv[:, :, row, :, col:col + prompt - 1].clone(), 0)
                self.kv_store.put(key, past, (ids[:prompt], ()))
            start = prompt - 1
        n = len(ids) - 1 - start
        seg = Segment(kv[:, :, row, :, col + start - job.start:col + start - job.start + n].clone(), start, past) \
            if n > 0 else past
        self.kv_store.put(job.key, seg, (ids, tuple(local)))

    # ---- packing and backoff ----------------------------------------------------------------
    def _pack(self, items: list, size, budget: int) -> list[list]:
        """Consecutive items (largest first) in batches of at most ``budget`` padded tokens."""
        batches: list[list] = []
        cur: list = []
        for item in items:  # largest first, so the first row sets the batch width
            width = size(cur[0]) if cur else size(item)
            if cur and ((len(cur) + 1) * width > budget or len(cur) >= self.max_batch_size):
                batches.append(cur)
                cur = []
            cur.append(item)
        if cur:
            batches.append(cur)
        return batches

    def _run(self, jobs: list[_Job]) -> dict[Key, list[float]]:
        size = _Job.size.fget
        ordered = sorted(jobs, key=lambda j: (j.past is not None, -j.size))  # full chains and extensions apart
        queue = deque(b for part in (False, True)
                      for b in self._pack([j for j in ordered if (j.past is not None) == part], size, self._budget))
        out: dict[Key, list[float]] = {}
        while queue:
            batch = queue.popleft()
            padded = len(batch) * max(j.size for j in batch)
            if len(batch) > 1 and padded > self._budget:  # the budget shrank since packing
                queue.extendleft(reversed(self._pack(batch, size, self._budget)))
                continue
            try:
                scores = self._forward(batch)
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
            self.stats.incremental += sum(j.past is not None for j in batch)
            self.stats.tokens_run += sum(j.fed for j in batch)
            self.stats.tokens_reused += sum(j.start for j in batch)
            out.update((j.key, s) for j, s in zip(batch, scores))
        return out

    # ---- raw step values (training a head on them) -----------------------------------------
    def step_values(self, chains: Sequence[Chain]) -> list[torch.Tensor]:
        """Per chain, the reduced read-out values of each step before ``finalize`` ([steps, ...]).

        No cache: this is for fitting what ``finalize`` does (a head on likelihood features)."""
        jobs = [_Job((c.question, tuple(c.steps)), self._encode(chains, i)) for i, c in enumerate(chains)]
        index = {id(j): i for i, j in enumerate(jobs)}
        out: list[torch.Tensor | None] = [None] * len(jobs)
        for batch in self._pack(sorted(jobs, key=lambda j: -j.size), _Job.size.fget, self._budget):
            values, counts, _ = self._values(batch, keep_kv=False)
            start = 0
            for j, n in zip(batch, counts):
                out[index[id(j)]] = values[start:start + n]
                start += n
        return out  # type: ignore[return-value]

    # ---- one forward pass ---------------------------------------------------------------------
    def _forward(self, jobs: list[_Job]) -> list[list[float]]:
        """Each job's local step scores (known ones first); run chains are kept in the KV store."""
        values, computed, kept = self._values(jobs, keep_kv=self.kv_store is not None)
        step_scores = self.backend.finalize(values).float().cpu().tolist()
        out, i = [], 0
        for j, k in zip(jobs, computed):
            out.append([*j.known, *step_scores[i:i + k]])
            i += k
        if kept is not None:
            kv, cols = kept
            for row, (j, col) in enumerate(zip(jobs, cols)):
                self._keep(j, kv, row, col, out[row])
        return out

    def _values(self, jobs: list[_Job], keep_kv: bool):
        """One padded forward pass over the fed positions: the backend's reduced read-out values
        of every step not known yet, how many steps each job computed, and (``keep_kv``) the
        batch's KV with the column where each row's fed positions start."""
        b = self.backend
        past = max(j.start for j in jobs)  # stored positions, right-aligned at column ``past``
        width = max(j.fed for j in jobs)
        left = self.padding_side == "left"
        ids = torch.full((len(jobs), width), b.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), past + width), dtype=torch.long)
        pos = torch.zeros((len(jobs), width), dtype=torch.long)
        rows: list[int] = []
        cols: list[int] = []
        seg: list[int] = []
        nxt: list[int] = []
        computed: list[int] = []
        offsets: list[int] = []
        s = 0
        for r, j in enumerate(jobs):
            e, fed = j.enc, j.fed
            off = width - fed if left else 0
            offsets.append(off)
            ids[r, off:off + fed] = torch.tensor(e.input_ids[j.start:], dtype=torch.long)
            mask[r, past - j.start:past] = 1
            mask[r, past + off:past + off + fed] = 1
            # Positions count real tokens only; pads after the real tokens keep counting up, so
            # positions never repeat (which models read as packing); pads before them are 0.
            pos[r, off:] = torch.arange(j.start, j.start + width - off)
            following = e.input_ids[1:] + (b.pad_token_id,)  # the token after each position
            for read in e.readout[len(j.known):]:
                rows += [r] * len(read)
                cols += [off + p - j.start for p in read]
                seg += [s] * len(read)
                nxt += [following[p] for p in read]
                s += 1
            computed.append(len(e.readout) - len(j.known))
        dev = b.device
        reduce = getattr(b, "reduce", None) or segment_mean
        with torch.inference_mode():
            cache = None
            if past:
                kv = gather([j.past for j in jobs], [1] * len(jobs), past + width)
                cache = buffer_cache(kv, past)
            elif keep_kv:
                cache = DynamicCache()
            # Causal model, right padding, nothing stored: real tokens never see the pads after them, so no
            # mask is needed, and attention takes its fused causal path instead of a materialised mask.
            skip_mask = not past and not left and getattr(b, "causal", True)
            extra = {} if cache is None else {"cache": cache}  # adapters that never score incrementally need no cache argument
            feats = b.features(ids.to(dev), None if skip_mask else mask.to(dev), pos.to(dev), **extra)
            rows_t, cols_t = torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)
            vals = b.head(feats[rows_t, cols_t], torch.tensor(nxt, device=dev)).float().reshape(-1)
            values = reduce(vals, torch.tensor(seg, device=vals.device), s).float().cpu()
            kept = None
            if keep_kv:
                try:
                    kept = (kv if past else stacked(cache), [past + off for off in offsets])
                except ValueError as err:  # layers of different shapes: no single buffer, so no reuse
                    log.warning("incremental PRM scoring is off: %s", err)
                    self.kv_store = None
        return values, computed, kept


def segment_mean(values: torch.Tensor, segments: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of ``values`` per segment id (0..n-1): a step's score from its read-out positions."""
    sums = torch.zeros(n, device=values.device).index_add_(0, segments, values)
    counts = torch.bincount(segments, minlength=n).to(values.device).float()
    return sums / counts
