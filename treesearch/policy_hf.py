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

from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from .devices import resolve_device, resolve_dtype
from .kv_cache import PrefixKVStore, Segment, buffer_cache, cache_arguments, gather, returned_cache, stacked
from .ledger import count_parameters
from .prompts import PromptFormat
from .protocols import ExpandOutput, ExpandRequest, StepSample
from .sampler import draw
from .seeds import seed32
from .step_format import StepFormat


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

    @staticmethod
    def from_cache(cache: DynamicCache, mask: torch.Tensor, logits: torch.Tensor, spare: int) -> _Rows:
        """Copy a model-built cache into one buffer with ``spare`` free positions."""
        n = cache.layers[0].keys.shape[2]
        return _Rows(stacked(cache, spare), n, mask, logits)

    def select(self, idx: torch.Tensor) -> _Rows:
        return _Rows(self.kv.index_select(2, idx), self.length, self.mask[idx], self.logits[idx])

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

    def last(self, b: int, n: int) -> torch.Tensor:
        """A copy of row b's last ``n`` positions, [layers, 2, heads, n, dim]."""
        return self.kv[:, :, b, :, self.length - n:self.length].clone()

    @staticmethod
    def concat(parts: list[_Rows], spare: int) -> _Rows:
        """Stack row groups of different lengths, left-padding the shorter ones."""
        if len(parts) == 1:
            return parts[0]
        n = max(p.length for p in parts)
        ref = parts[0].kv
        kv = ref.new_zeros((ref.shape[0], 2, sum(p.kv.shape[2] for p in parts), ref.shape[3], n + spare, ref.shape[5]))
        row = 0
        for p in parts:
            rows = p.kv.shape[2]
            kv[:, :, row:row + rows, :, n - p.length:n] = p.kv[:, :, :, :, :p.length]
            row += rows
        mask = torch.cat([torch.cat([p.mask.new_zeros((p.mask.shape[0], n - p.length)), p.mask], 1) for p in parts])
        return _Rows(kv, n, mask, torch.cat([p.logits for p in parts]))


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
        self._free_kv: torch.Tensor | None = None  # the last batch's KV buffer, reused by the next
        self.max_batch_rows = max_batch_rows
        self.num_parameters = int(num_parameters) if num_parameters is not None else count_parameters(model, parameter_count)
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.eos_ids = self._eos_ids()
        vocab = model.get_output_embeddings().weight.shape[0]
        tail = self.step_format.delimiter[-1]
        # Tokens whose text holds the delimiter's last character: only then is a row decoded to test for a stop.
        self._may_stop = torch.tensor([tail in tokenizer.decode([i]) for i in range(vocab)], device=self.device)
        self._eos_mask = torch.zeros(vocab, dtype=torch.bool, device=self.device)
        self._eos_mask[[i for i in self.eos_ids if i < vocab]] = True

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
        fed = [0] * len(reqs)
        # A stored child's segment hangs off chain bases[i] and covers positions from starts[i] on.
        bases: list[Segment | None] = [None] * len(reqs)
        starts = [0] * len(reqs)
        parts = []
        spare = max(r.max_new_tokens for r in reqs)  # KV positions a step may add (the search's cap)
        for g in groups:
            part, counts, links = self._prefill([reqs[i] for i in g], [entries[i] for i in g], spare)
            parts.append(part)
            for i, n, (base, start) in zip(g, counts, links):
                fed[i], bases[i], starts[i] = n, base, start
        rows = _Rows.concat(parts, spare)  # one row per sample: ``width`` copies per request
        req_order = [i for g in groups for i in g]
        owner = [i for i in req_order for _ in range(reqs[i].width)]
        sample_k = [k for i in req_order for k in range(reqs[i].width)]
        seeds = torch.tensor([seed32(reqs[i].seed, k) for i, k in zip(owner, sample_k)], device=self.device)
        greedy = torch.tensor([reqs[i].greedy for i in owner], device=self.device)
        first_pos = torch.tensor([len(reqs[i].prefix_ids) for i in owner], device=self.device)  # of the step
        caps = [reqs[i].max_new_tokens for i in owner]

        n = len(owner)
        tokens = torch.zeros((n, max(caps)), dtype=torch.long, device=self.device)  # sample -> its step so far
        row_sample = torch.arange(n, device=self.device)  # batch row -> sample index, -1 once finished
        row_cap = torch.tensor(caps, device=self.device)
        gen: list[tuple[int, ...]] = [()] * n
        texts: list[str] = [""] * n
        reasons: list[str] = [""] * n
        # sample -> top-k log-probabilities per position, only when a request asks (from the raw logits)
        k_top = min(max(r.logprobs for r in reqs), rows.logits.shape[-1])
        top = torch.zeros((n, max(caps), k_top), device=self.device) if k_top else None
        live, t = n, 0
        while True:
            tok = self._sample(rows.logits, seeds, greedy, t)
            alive = row_sample >= 0
            tokens[row_sample[alive], t] = tok[alive]
            if top is not None:
                top[row_sample[alive], t] = rows.logits[alive].log_softmax(-1).topk(k_top, -1).values
            # Python looks only at rows whose token may end the step: EOS, the delimiter's last character, the cap.
            maybe = (alive & (self._may_stop[tok] | self._eos_mask[tok] | (row_cap <= t + 1))).nonzero().flatten()
            finished = []
            if len(maybe):
                samples = row_sample[maybe]
                for b, s, ids, eos, may_stop in zip(maybe.tolist(), samples.tolist(), tokens[samples, :t + 1].tolist(),
                                                     self._eos_mask[tok[maybe]].tolist(),
                                                     self._may_stop[tok[maybe]].tolist()):
                    if eos:
                        reasons[s] = "eos"
                    elif may_stop and self.step_format.delimiter in self.tokenizer.decode(ids):
                        reasons[s] = "delimiter"
                    elif t + 1 >= caps[s]:
                        reasons[s] = "step_cap"
                    else:
                        continue
                    gen[s], texts[s] = tuple(ids), self.tokenizer.decode(ids, skip_special_tokens=True)
                    finished.append(b)
                    if self.reuse_kv and self._expandable(texts[s], reasons[s]):
                        i = owner[s]  # keep all but the step's last token (never fed)
                        end = len(reqs[i].prefix_ids) + len(ids) - 1
                        self.store.put(reqs[i].prefix_ids + gen[s],
                                       Segment(rows.last(b, end - starts[i]), starts[i], bases[i]))
            if finished:
                row_sample[torch.tensor(finished, device=self.device)] = -1
                live -= len(finished)
            if live == 0:
                break
            if (len(row_sample) - live) * 8 >= len(row_sample):  # drop finished rows once they are an eighth
                keep = torch.tensor(rows.drop((row_sample >= 0).tolist()), device=self.device)
                tok, seeds, greedy, first_pos = tok[keep], seeds[keep], greedy[keep], first_pos[keep]
                row_sample, row_cap = row_sample[keep], row_cap[keep]
            rows = self._step(rows, tok, first_pos + t)  # finished rows still in the batch decode on, unread
            t += 1
        # Keep the buffer for the next batch on CPU only: there a fresh allocation page-faults, while
        # CUDA's caching allocator reuses freed blocks anyway and the PRM may need the memory meanwhile.
        self._free_kv = rows.kv if rows.kv.device.type == "cpu" else None

        by_request: list[list[int]] = [[] for _ in reqs]  # sample indices, in sample order k = 0, 1, ...
        for s, i in enumerate(owner):
            by_request[i].append(s)
        outs = []
        for i, samples in enumerate(by_request):
            k = reqs[i].logprobs
            steps = [StepSample(texts[s], gen[s], reasons[s],
                                tuple(map(tuple, top[s, :len(gen[s]), :k].tolist())) if k else None)
                     for s in samples]
            processed = fed[i] + sum(len(gen[s]) - 1 for s in samples)
            outs.append(ExpandOutput(steps, processed))
        return outs

    def _prefill(self, reqs: list[ExpandRequest], entries: list[Segment | None], spare: int
                 ) -> tuple[_Rows, list[int], list[tuple[Segment | None, int]]]:
        """Feed each request's uncached suffix. Returns ``width`` rows per request, the tokens
        each request fed, and where a stored child's KV segment attaches: (chain, start).

        Rows are right-aligned so that no row has a hole: every row feeds the same number
        of tokens ``n_in``, and a cached row whose suffix is shorter drops the tail of its
        cache and feeds those tokens again (a cache of a prefix is valid for any shorter prefix).
        Cached prefixes are copied straight into the per-sample rows, which then each feed
        their (usually one-token) suffix; uncached prompts are encoded once per request, kept
        as one shared segment, and repeated.
        """
        n_in = max(len(r.prefix_ids) - (e.end if e else 0) for r, e in zip(reqs, entries))
        use = [max(0, len(r.prefix_ids) - n_in) if e else 0 for r, e in zip(reqs, entries)]
        n_cache = max(use)
        R = len(reqs)
        ids = torch.full((R, n_in), self.pad_id, dtype=torch.long)
        mask = torch.zeros((R, n_cache + n_in), dtype=torch.long)
        pos = torch.zeros((R, n_in), dtype=torch.long)
        for b, (r, c) in enumerate(zip(reqs, use)):
            feed = r.prefix_ids[c:]
            ids[b, n_in - len(feed):] = torch.tensor(feed)
            mask[b, n_cache - c: n_cache] = 1
            mask[b, n_cache + n_in - len(feed):] = 1
            pos[b, n_in - len(feed):] = torch.arange(c, c + len(feed))
        widths = torch.tensor([r.width for r in reqs])
        repeat = torch.repeat_interleave(torch.arange(R), widths)
        fed = [len(r.prefix_ids) - c for r, c in zip(reqs, use)]
        if n_cache:
            kv = self._cached_rows(entries, use, widths.tolist(), n_cache + n_in + spare)
            rows = _Rows(kv, n_cache, mask[repeat].to(self.device), logits=None)
            out = self.model(input_ids=ids[repeat].to(self.device), attention_mask=rows.mask,
                             position_ids=pos[repeat].to(self.device), logits_to_keep=1,
                             **cache_arguments(self.model, rows.cache))
            rows.logits = out.logits[:, -1].float()
            fed = [n * r.width for n, r in zip(fed, reqs)]
            links = [(e.truncated(c), c) for e, c in zip(entries, use)]
            return rows, fed, links
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), logits_to_keep=1,
                         **cache_arguments(self.model, DynamicCache()))
        rows = _Rows.from_cache(returned_cache(out), mask.to(self.device), out.logits[:, -1].float(), spare)
        links = [(Segment(rows.last(b, len(r.prefix_ids)), 0) if self.reuse_kv else None, len(r.prefix_ids))
                 for b, r in enumerate(reqs)]
        return rows.select(repeat.to(self.device)), fed, links

    def _cached_rows(self, entries: list[Segment], use: list[int], widths: list[int], capacity: int) -> torch.Tensor:
        """A KV buffer with ``widths[i]`` rows holding the first ``use[i]`` cached positions of
        entry i, right-aligned at ``max(use)``, laid out in the previous batch's buffer when
        that is big enough."""
        return gather([e.truncated(c) for e, c in zip(entries, use)], widths, capacity, out=self._free_kv)

    def _step(self, rows: _Rows, tok: torch.Tensor, positions: torch.Tensor) -> _Rows:
        mask = torch.cat([rows.mask, rows.mask.new_ones((rows.mask.shape[0], 1))], 1)
        out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=positions[:, None],
                         **cache_arguments(self.model, rows.cache))
        rows.mask, rows.logits = mask, out.logits[:, -1].float()
        return rows

    def _expandable(self, text: str, reason: str) -> bool:
        """Whether a finished step may be expanded later (else its KV is not worth keeping)."""
        return reason != "eos" and self.step_format.extract_answer(text) is None

    def _sample(self, logits: torch.Tensor, seeds: torch.Tensor, greedy: torch.Tensor, t: int) -> torch.Tensor:
        best = logits.argmax(-1)
        if self.temperature == 0 or bool(greedy.all()):
            return best
        return torch.where(greedy, best, draw(logits, seeds, t, self.temperature, self.top_p))
