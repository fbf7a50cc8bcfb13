"""A transformers causal LM as a step-sampling policy.

One batched decode loop samples the next step for many prefixes at once and stops each
row at the step delimiter or EOS. The KV cache of every sampled step is kept
(``PrefixKVStore``), so expanding that step later feeds only its last token instead of
re-encoding question and path. Sampling draws come from ``sampler.draw``: a row's sample depends on
its own logits and seed only, never on what else is in the batch or on whether its prefix
came from the cache. A request that asks for log-probabilities gets the top k of those logits'
log-softmax at each sampled token, read beside the draw and never changing it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from .devices import resolve_device, resolve_dtype
from .kv_cache import PrefixKVStore, Segment, buffer_cache, cache_arguments, gather, returned_cache, reuse, stacked
from .ledger import count_parameters
from .prompts import PromptFormat
from .protocols import ExpandOutput, ExpandRequest, StepSample
from .sampler import draw_uniform, uniforms
from .seeds import seed32
from .step_format import StepFormat


# Positions of room a CPU batch's KV buffer gets at a time. CPU attention reads the cache one
# (row, head) block after another, and unused capacity between blocks (the room not filled yet)
# breaks the prefetcher's stream at every block: 512 rows x 4 heads x 120 positions of 16 dims on
# one EPYC thread took 3.1 ms with no gap, 4.4 ms with 4 positions, 6.7 ms with 32 (the demo's step
# cap). So the buffer grows by re-laying it out every CPU_ROOM positions, a copy that costs about one
# gapless attention: in the demo's sampling and REBASE runs the policy's forward time fell by 25 %
# with a room of 8 and by 31 % with 4 (its copies cost 3 % of the wall). A GPU gets all the room at once.
CPU_ROOM = 4


class _Rows:
    """A batch of rows in decode layout: every layer's left-padded KV in one tensor
    ``kv`` [layers, 2, rows, heads, capacity, dim] (so row moves and copies take one op for
    all layers), its attention mask [rows, length] and the next-token logits [rows, vocab]."""

    def __init__(self, kv: torch.Tensor, length: int, mask: torch.Tensor, logits: torch.Tensor | None):
        self.kv, self.mask, self.logits = kv, mask, logits
        self._views(length)

    def _views(self, length: int) -> None:
        self.cache = buffer_cache(self.kv, length)

    @property
    def length(self) -> int:
        """Positions filled: the model's forward passes advance the layer views."""
        return self.cache.layers[0].length

    def drop(self, alive: list[bool]) -> list[int]:
        """Drop dead rows in place: live rows from the tail fill the holes in front.
        Returns the old index of each remaining row."""
        m = sum(alive)
        holes = [b for b in range(m) if not alive[b]]
        tail = [b for b in range(m, len(alive)) if alive[b]]
        order = list(range(m))
        for h, t in zip(holes, tail):  # row by row: no temporary, and a hole never overlaps a tail row
            self.kv[:, :, h].copy_(self.kv[:, :, t])
            order[h] = t
        idx = torch.tensor(order, device=self.mask.device)
        length = self.length
        self.kv, self.mask, self.logits = self.kv[:, :, :m], self.mask[idx], self.logits[idx]
        self._views(length)
        return order

    def move(self, kv: torch.Tensor) -> None:
        """Lay the rows out in ``kv`` (same rows, another capacity): one copy for all layers."""
        length = self.length
        kv[..., :length, :] = self.kv[..., :length, :]
        self.kv = kv
        self._views(length)

    def last(self, b: int, n: int) -> torch.Tensor:
        """A copy of row b's last ``n`` positions, [layers, 2, heads, n, dim]."""
        return self.kv[:, :, b, :, self.length - n:self.length].clone()


class TransformersPolicy:
    """Samples one reasoning step per row from any transformers causal LM, CPU or GPU."""

    def __init__(self, model, tokenizer, step_format: StepFormat | None = None, *,
                 temperature: float = 1.0, top_p: float = 1.0,
                 prompt_template: str = "{question}\n", chat_template: bool = False,
                 system_prompt: str | None = None, prompt: PromptFormat | None = None, reuse_kv: bool = True,
                 kv_cache_bytes: int = 2 * 1024**3, max_batch_rows: int = 64,
                 num_parameters: int | None = None, parameter_count: str = "non_embedding"):
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.step_format = step_format or StepFormat.preset("paper")
        self.temperature, self.top_p = temperature, top_p
        # ``prompt`` (the backends pass the spec's, revision request included) or its three common fields
        self.prompt = prompt or PromptFormat(prompt_template, chat_template, system_prompt)
        self.reuse_kv = reuse_kv
        self.store = PrefixKVStore(kv_cache_bytes if reuse_kv else 0)
        self._free_kv: list[torch.Tensor] = []  # CPU KV buffers no batch uses now, kept for the next
        self._kv_dims: tuple[tuple[int, int, int], torch.Tensor] | None = None  # see _probe
        self.max_batch_rows = max_batch_rows
        self.num_parameters = int(num_parameters) if num_parameters is not None else count_parameters(model, parameter_count)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.eos_ids = self._eos_ids()
        vocab = model.get_output_embeddings().weight.shape[0]
        delimiter = self.step_format.delimiter
        pieces = [tokenizer.decode([i]) for i in range(vocab)]
        # Tokens whose text holds the delimiter's last character: only then may a row's step have ended.
        may_stop = [i for i, p in enumerate(pieces) if delimiter[-1] in p]
        self._may_stop = set(may_stop)
        self._eos = {i for i in self.eos_ids if i < vocab}
        # A delimiter that is one whole token, whose last character no other token holds, ends a step
        # exactly when that token is drawn: the step is then never decoded to look for it.
        self._delimiter_id = may_stop[0] if len(may_stop) == 1 and pieces[may_stop[0]] == delimiter else None
        self._stop = torch.zeros(vocab, dtype=torch.bool, device=self.device)  # EOS or may end the step
        self._stop[sorted(self._may_stop | self._eos)] = True

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", dtype: str = "float32", *,
                        trust_remote_code: bool = False, **kwargs) -> TransformersPolicy:
        """Load a local checkpoint directory (no hub access is attempted for local paths)."""
        torch_dtype = resolve_dtype(dtype, resolve_device(device))
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        return cls(model.to(device), tokenizer, **kwargs)

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None) if gen is not None else None
        ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
        return sorted(i for i in ids if i is not None)

    # ---- Policy protocol ----------------------------------------------------------------
    def encode_prompt(self, question: str) -> tuple[int, ...]:
        return self.prompt.ids(self.tokenizer, question)

    def encode_revision(self, question: str, attempts: Sequence[str]) -> tuple[int, ...]:
        """Ids of the prompt of a solution that revises earlier attempts (``Expand.revise``)."""
        return self.prompt.revision_ids(self.tokenizer, question, attempts)

    def encode_text(self, text: str) -> tuple[int, ...]:
        """Ids of text that continues a sequence (no special tokens): fixed step leads."""
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def expand(self, requests: Sequence[ExpandRequest]) -> list[ExpandOutput]:
        outputs: list[ExpandOutput | None] = [None] * len(requests)
        # One lookup per distinct prefix: identical sibling steps (common with a trained
        # policy) share the stored KV instead of all but the first missing it.
        cached: dict[tuple[int, ...], Segment | None] = {}
        if self.reuse_kv:
            for r in requests:
                if r.prefix_ids not in cached:
                    cached[r.prefix_ids] = self.store.pop(r.prefix_ids)
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prefix_ids))
        chunk: list[int] = []
        rows = 0
        for i in order + [None]:  # type: ignore[list-item]
            if chunk and (i is None or rows + requests[i].width > self.max_batch_rows):
                batch = [requests[j] for j in chunk]
                for j, out in zip(chunk, self._expand_batch(batch, [cached.get(r.prefix_ids) for r in batch])):
                    outputs[j] = out
                chunk, rows = [], 0
            if i is not None:
                chunk.append(i)
                rows += requests[i].width
        return outputs  # type: ignore[return-value]

    # ---- one batch ----------------------------------------------------------------------
    @torch.inference_mode()
    def _expand_batch(self, reqs: list[ExpandRequest], entries: list[Segment | None]) -> list[ExpandOutput]:
        cached = [i for i, e in enumerate(entries) if e is not None]
        fresh = [i for i, e in enumerate(entries) if e is None]
        groups = [g for g in (cached, fresh) if g]  # prefilled apart: a 1-token suffix never pads to a prompt
        spare = max(r.max_new_tokens for r in reqs)  # KV positions a step may add (the search's cap)
        # One row per sample (``width`` copies per request); a stored child's segment hangs off chain
        # bases[i] and covers positions from starts[i] on.
        rows, fed, bases, starts = self._prefill(reqs, entries, groups, spare)
        full = rows.length + spare
        owner = [i for g in groups for i in g for _ in range(reqs[i].width)]
        sample_k = [k for g in groups for i in g for k in range(reqs[i].width)]
        seeds = torch.tensor([seed32(reqs[i].seed, k) for i, k in zip(owner, sample_k)], device=self.device)
        greedy = torch.tensor([reqs[i].greedy for i in owner], device=self.device)
        any_greedy = bool(greedy.any())
        first_pos = torch.tensor([len(reqs[i].prefix_ids) for i in owner], device=self.device)  # of the step
        caps = [reqs[i].max_new_tokens for i in owner]
        least_cap = min(caps)

        n = len(owner)
        steps = max(caps)
        hist = torch.zeros((n, steps), dtype=torch.long, device=self.device)  # batch row -> its step so far
        # Every row's uniform for every position, hashed once (none when no row samples).
        u = None if self.temperature == 0 or bool(greedy.all()) else uniforms(seeds, steps)
        row_sample = list(range(n))  # batch row -> sample index, -1 once finished
        alive = torch.ones(n, dtype=torch.bool, device=self.device)
        row_cap = torch.tensor(caps, device=self.device)
        gen: list[tuple[int, ...]] = [()] * n
        texts: list[str] = [""] * n
        reasons: list[str] = [""] * n
        # batch row -> top-k log-probabilities per position, only when a request asks (from the raw logits)
        k_top = min(max(r.logprobs for r in reqs), rows.logits.shape[-1])
        top = torch.zeros((n, steps, k_top), device=self.device) if k_top else None
        tops: list[torch.Tensor | None] = [None] * n  # sample -> its step's rows of ``top``
        live, t = n, 0
        while True:
            tok = self._sample(rows.logits, u, greedy, any_greedy, t)
            hist[:, t] = tok
            if top is not None:
                top[:, t] = rows.logits.log_softmax(-1).topk(k_top, -1).values
            # Python looks only at rows whose token may end the step: EOS, the delimiter's last character, the cap.
            stop = self._stop[tok]
            if t + 1 >= least_cap:
                stop |= row_cap <= t + 1
            maybe = (stop & alive).nonzero().flatten().tolist()
            finished = []
            for b, ids in zip(maybe, hist[maybe, :t + 1].tolist() if maybe else ()):
                s, last = row_sample[b], ids[-1]
                if last in self._eos:
                    reasons[s] = "eos"
                elif last in self._may_stop and (self._delimiter_id is not None
                                                 or self.step_format.delimiter in self.tokenizer.decode(ids)):
                    reasons[s] = "delimiter"
                elif t + 1 >= caps[s]:
                    reasons[s] = "step_cap"
                else:
                    continue
                gen[s], texts[s] = tuple(ids), self.tokenizer.decode(ids, skip_special_tokens=True)
                if top is not None:
                    tops[s] = top[b, :t + 1]
                finished.append(b)
                if self.reuse_kv and self._expandable(texts[s], reasons[s]):
                    i = owner[s]  # keep all but the step's last token (never fed)
                    end = len(reqs[i].prefix_ids) + len(ids) - 1
                    self.store.put(reqs[i].prefix_ids + gen[s],
                                   Segment(rows.last(b, end - starts[i]), starts[i], bases[i]))
            if finished:
                alive[finished] = False
                for b in finished:
                    row_sample[b] = -1
                live -= len(finished)
            if live == 0:
                break
            if (len(row_sample) - live) * 8 >= len(row_sample):  # drop finished rows once they are an eighth
                order = rows.drop([s >= 0 for s in row_sample])
                keep = torch.tensor(order, device=self.device)
                tok, hist, greedy, first_pos, row_cap, alive = (x[keep] for x in (tok, hist, greedy, first_pos,
                                                                                 row_cap, alive))
                u = u[keep] if u is not None else None
                top = top[keep] if top is not None else None
                row_sample = [row_sample[k] for k in order]
            if rows.length == rows.kv.shape[4]:  # the buffer is full: lay it out again with more room
                old = rows.kv
                shape = (*old.shape[:4], min(full, rows.length + CPU_ROOM), old.shape[5])
                rows.move(self._buffer(shape, old, reserve=old[:, :, :, :, :1].numel() * full))
                self._keep(old)
            rows = self._step(rows, tok, first_pos + t)  # finished rows still in the batch decode on, unread
            t += 1
        self._keep(rows.kv)

        by_request: list[list[int]] = [[] for _ in reqs]  # sample indices, in sample order k = 0, 1, ...
        for s, i in enumerate(owner):
            by_request[i].append(s)
        outs = []
        for i, samples in enumerate(by_request):
            k = reqs[i].logprobs
            steps_out = [StepSample(texts[s], gen[s], reasons[s],
                                    tuple(map(tuple, tops[s][:, :k].tolist())) if k else None)
                         for s in samples]
            processed = fed[i] + sum(len(gen[s]) - 1 for s in samples)
            outs.append(ExpandOutput(steps_out, processed))
        return outs

    def _prefill(self, reqs: list[ExpandRequest], entries: list[Segment | None], groups: list[list[int]],
                 spare: int) -> tuple[_Rows, list[int], list[Segment | None], list[int]]:
        """Feed each request's uncached suffix into the batch's KV buffer: ``width`` rows per request,
        group by group. Returns the rows, the tokens each request fed, and where a stored child's KV
        segment attaches: the chain it hangs off and its start, per request.

        Within a group rows are right-aligned so that no row has a hole: every row feeds the same
        number of tokens ``n_in``, and a cached row whose suffix is shorter drops the tail of its
        cache and feeds those tokens again (a cache of a prefix is valid for any shorter prefix).
        Cached prefixes are copied straight into the per-sample rows, which then each feed
        their (usually one-token) suffix; uncached prompts are encoded once per request, kept
        as one shared segment, and repeated. Each group runs in its own window of the buffer,
        right-aligned with the longest group and with its own padding only, so its forward pass
        is the one it would be alone; the window's positions left of it are zeroed (masked, finite).
        """
        plans = []
        for g in groups:
            rs, es = [reqs[i] for i in g], [entries[i] for i in g]
            n_in = max(len(r.prefix_ids) - (e.end if e else 0) for r, e in zip(rs, es))
            use = [max(0, len(r.prefix_ids) - n_in) if e else 0 for r, e in zip(rs, es)]
            plans.append((g, rs, es, n_in, use))
        n = max(max(use) + n_in for *_, n_in, use in plans)
        (layers, heads, dim), like = self._kv_dims or self._probe()
        R = sum(r.width for r in reqs)
        room = min(spare, CPU_ROOM) if self.device.type == "cpu" else spare
        kv = self._buffer((layers, 2, R, heads, n + room, dim), like, reserve=layers * 2 * R * heads * (n + spare) * dim)
        fed, bases, starts = [0] * len(reqs), [None] * len(reqs), [0] * len(reqs)
        masks, logits = [], []
        row = 0
        for g, rs, es, n_in, use in plans:
            n_cache = max(use)
            w, width = sum(r.width for r in rs), n_cache + n_in
            # Row b feeds prefix_ids[c:] right-aligned (left-padded) after its c cached positions, which
            # end at column n_cache.
            ids = torch.tensor([(self.pad_id,) * (n_in - len(r.prefix_ids) + c) + r.prefix_ids[c:]
                                for r, c in zip(rs, use)], dtype=torch.long)
            kept = torch.tensor(use)[:, None]
            pad = torch.tensor([n_in - len(r.prefix_ids) + c for r, c in zip(rs, use)])[:, None]  # the feed's left padding
            col = torch.arange(width)[None]
            mask = (((col >= n_cache - kept) & (col < n_cache)) | (col >= n_cache + pad)).long()
            at = torch.arange(n_in)[None]
            pos = torch.where(at >= pad, kept + at - pad, 0)
            repeat = torch.repeat_interleave(torch.arange(len(rs)), torch.tensor([r.width for r in rs]))
            widths = [r.width for r in rs]
            window = kv[:, :, row:row + w, :, n - width:]
            if n_cache:  # each sample's row feeds its suffix on its copy of the cached prefix
                gather([e.truncated(c) for e, c in zip(es, use)], widths, into=window)
                into, ids, mask, pos = window, ids[repeat], mask[repeat], pos[repeat]
            else:  # each prompt once, then repeated
                into = window if w == len(rs) else kv.new_empty((layers, 2, len(rs), heads, width, dim))
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=pos.to(self.device), logits_to_keep=1,
                             **cache_arguments(self.model, buffer_cache(into, n_cache)))
            last = out.logits[:, -1].float()
            if n_cache:
                links = [(e.truncated(c), c) for e, c in zip(es, use)]
                counts = [(len(r.prefix_ids) - c) * r.width for r, c in zip(rs, use)]
            else:
                if into is not window:
                    window[..., :width, :] = into[:, :, repeat]
                    last, mask = last[repeat], mask[repeat]
                links = [(Segment(into[:, :, b, :, width - len(r.prefix_ids):width].clone(), 0) if self.reuse_kv
                          else None, len(r.prefix_ids)) for b, r in enumerate(rs)]
                counts = [len(r.prefix_ids) for r in rs]
            for i, k, (base, start) in zip(g, counts, links):
                fed[i], bases[i], starts[i] = k, base, start
            if width < n:
                kv[:, :, row:row + w, :, :n - width] = 0
            masks.append(torch.cat([mask.new_zeros((w, n - width)), mask], 1).to(self.device))
            logits.append(last)
            row += w
        return _Rows(kv, n, torch.cat(masks), torch.cat(logits)), fed, bases, starts

    def _probe(self) -> tuple[tuple[int, int, int], torch.Tensor]:
        """(layers, KV heads, head dim) of the model's cache and an empty tensor of its dtype and
        device, from a one-token forward pass on first use."""
        one = torch.ones((1, 1), dtype=torch.long, device=self.device)
        out = self.model(input_ids=one * self.pad_id, attention_mask=one, **cache_arguments(self.model, DynamicCache()))
        kv = stacked(returned_cache(out))  # [layers, 2, 1, heads, 1, dim]; a clear error for mixed layers
        self._kv_dims = (kv.shape[0], kv.shape[3], kv.shape[5]), kv.new_empty(0)
        return self._kv_dims

    def _buffer(self, shape: tuple[int, ...], like: torch.Tensor, reserve: int = 0) -> torch.Tensor:
        """A tensor of ``shape`` in a kept CPU buffer that is big enough (a fresh allocation of a few
        hundred MB page-faults on every first write), else in a new one of at least ``reserve``
        elements, so that the batch's later layouts fit it too."""
        size = math.prod(shape)
        for i, buf in enumerate(self._free_kv):
            if buf.dtype == like.dtype and buf.untyped_storage().nbytes() >= size * like.element_size():
                return reuse(self._free_kv.pop(i), like, shape)
        return like.new_empty(max(size, reserve))[:size].view(shape)

    def _keep(self, kv: torch.Tensor) -> None:
        """Keep a buffer no batch uses any more for later ones, the two largest, on a CPU only: CUDA's
        caching allocator reuses freed blocks anyway, and the PRM may need the memory meanwhile."""
        if kv.device.type == "cpu":
            self._free_kv = sorted(self._free_kv + [kv], key=lambda b: b.untyped_storage().nbytes())[-2:]

    def _step(self, rows: _Rows, tok: torch.Tensor, positions: torch.Tensor) -> _Rows:
        mask = torch.cat([rows.mask, rows.mask.new_ones((rows.mask.shape[0], 1))], 1)
        out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=positions[:, None],
                         **cache_arguments(self.model, rows.cache))
        rows.mask, rows.logits = mask, out.logits[:, -1].float()
        return rows

    def _expandable(self, text: str, reason: str) -> bool:
        """Whether a finished step may be expanded later (else its KV is not worth keeping)."""
        return reason != "eos" and self.step_format.extract_answer(text) is None

    def _sample(self, logits: torch.Tensor, u: torch.Tensor | None, greedy: torch.Tensor, any_greedy: bool,
                t: int) -> torch.Tensor:
        """Row tokens at position ``t``: argmax for greedy rows, else a draw with the row's uniform."""
        if u is None:  # nothing to draw: temperature 0, or every row greedy
            return logits.argmax(-1)
        drawn = draw_uniform(logits, u[:, t], self.temperature, self.top_p)
        return torch.where(greedy, logits.argmax(-1), drawn) if any_greedy else drawn
