"""A transformers causal LM as a step-sampling policy.

One batched decode loop samples the next step for many prefixes at once and stops each
row at the step delimiter or EOS. The KV cache of every sampled step is kept
(``PrefixKVStore``), so expanding that step later feeds only its last token instead of
re-encoding question and path. Sampling draws come from ``sampler.draw``: a row's sample depends on
its own logits and seed only, never on what else is in the batch or on whether its prefix
came from the cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import DynamicLayer

from .kv_cache import PrefixKVStore, Segment
from .ledger import non_embedding_parameters
from .protocols import ExpandOutput, ExpandRequest, StepSample
from .sampler import draw, seed32
from .step_format import StepFormat

class _GrowingLayer(DynamicLayer):
    """A KV cache layer with spare capacity: a decode step writes in place instead of
    concatenating (which copies the whole cache at every token), and finished rows are
    dropped in place (a fresh CPU allocation of the whole cache would page-fault on every write)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int | None = None, spare: int = 64):
        super().__init__()
        if length is None:  # copy into a new buffer with room to grow
            length = keys.shape[2]
            self._k = keys.new_empty((*keys.shape[:2], length + spare, keys.shape[3]))
            self._v = values.new_empty((*values.shape[:2], length + spare, values.shape[3]))
            self._k[:, :, :length], self._v[:, :, :length] = keys, values
        else:  # adopt a buffer that already has room
            self._k, self._v = keys, values
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._rows = self._k.shape[0]
        self._set_length(length)

    def _set_length(self, n: int) -> None:
        self._n = n
        self.keys, self.values = self._k[:self._rows, :, :n], self._v[:self._rows, :, :n]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self._n + key_states.shape[2]
        if end > self._k.shape[2]:
            self.__init__(self.keys, self.values, spare=max(64, end))  # double the room
        self._k[:self._rows, :, self._n:end] = key_states
        self._v[:self._rows, :, self._n:end] = value_states
        self._set_length(end)
        return self.keys, self.values

    def select(self, idx: torch.Tensor) -> _GrowingLayer:
        return _GrowingLayer(self._k[:self._rows].index_select(0, idx), self._v[:self._rows].index_select(0, idx), self._n)

    def keep_rows(self, rows: int, holes: list[int], tail: list[int]) -> None:
        """Keep the first ``rows`` rows after moving rows ``tail`` (all >= rows) into ``holes``."""
        for h, t in zip(holes, tail):  # row by row: no temporary, and a hole never overlaps a tail row
            self._k[h].copy_(self._k[t])
            self._v[h].copy_(self._v[t])
        self._rows = rows
        self._set_length(self._n)


def _reuse(buffer: torch.Tensor | None, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``shape`` laid out in ``buffer`` if it is big enough, else a new one."""
    n = 1
    for d in shape:
        n *= d
    if buffer is not None and buffer.is_contiguous() and buffer.numel() >= n and buffer.dtype == like.dtype \
            and buffer.device == like.device:
        return buffer.view(-1)[:n].view(shape)
    return like.new_empty(shape)


def _cache(keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = [_GrowingLayer(k, v) for k, v in zip(keys, values)]
    return cache


@dataclass
class _Rows:
    """A batch of rows in decode layout: a left-padded KV cache, its mask and the next-token logits."""

    cache: DynamicCache
    mask: torch.Tensor  # [rows, L]
    logits: torch.Tensor  # [rows, vocab]

    def kv(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [l.keys for l in self.cache.layers], [l.values for l in self.cache.layers]

    def select(self, idx: torch.Tensor) -> _Rows:
        cache = DynamicCache()
        cache.layers = [l.select(idx) for l in self.cache.layers]
        return _Rows(cache, self.mask[idx], self.logits[idx])

    def drop(self, alive: list[bool]) -> list[int]:
        """Drop dead rows in place: live rows from the tail fill the holes in front.
        Returns the old index of each remaining row."""
        m = sum(alive)
        holes = [b for b in range(m) if not alive[b]]
        tail = [b for b in range(m, len(alive)) if alive[b]]
        order = list(range(m))
        for h, t in zip(holes, tail):
            order[h] = t
        for layer in self.cache.layers:
            layer.keep_rows(m, holes, tail)
        idx = torch.tensor(order, device=self.mask.device)
        self.mask, self.logits = self.mask[idx], self.logits[idx]
        return order

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        """Stack row groups of different lengths, left-padding the shorter ones."""
        if len(parts) == 1:
            return parts[0]
        length = max(p.mask.shape[1] for p in parts)

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            extra = length - t.shape[dim]
            if extra == 0:
                return t
            shape = list(t.shape)
            shape[dim] = extra
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        kvs = [p.kv() for p in parts]
        n_layers = len(kvs[0][0])
        return _Rows(_cache([torch.cat([pad(k[i], 2) for k, _ in kvs]) for i in range(n_layers)],
                            [torch.cat([pad(v[i], 2) for _, v in kvs]) for i in range(n_layers)]),
                     torch.cat([pad(p.mask, 1) for p in parts]),
                     torch.cat([p.logits for p in parts]))


class TransformersPolicy:
    """Samples one reasoning step per row from any transformers causal LM, CPU or GPU."""

    def __init__(self, model, tokenizer, step_format: StepFormat | None = None, *,
                 temperature: float = 1.0, top_p: float = 1.0, max_step_tokens: int = 256,
                 prompt_template: str = "{question}\n", chat_template: bool = False,
                 system_prompt: str | None = None, reuse_kv: bool = True,
                 kv_cache_bytes: int = 2 * 1024**3, max_batch_rows: int = 64,
                 num_parameters: int | None = None):
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        if "{question}" not in prompt_template:
            raise ValueError("prompt_template must contain '{question}'")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.step_format = step_format or StepFormat.preset("paper")
        self.temperature, self.top_p = temperature, top_p
        self.max_step_tokens = max_step_tokens
        self.prompt_template, self.chat_template, self.system_prompt = prompt_template, chat_template, system_prompt
        self.reuse_kv = reuse_kv
        self.store = PrefixKVStore(kv_cache_bytes if reuse_kv else 0)
        self._free_kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # the last batch's KV buffers, per layer
        self.max_batch_rows = max_batch_rows
        self.num_parameters = int(num_parameters) if num_parameters is not None else non_embedding_parameters(model)
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
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
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
        if self.chat_template:
            messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
            messages.append({"role": "user", "content": question})
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return tuple(int(i) for i in ids)
        return tuple(self.tokenizer(self.prompt_template.format(question=question))["input_ids"])

    def expand(self, requests: Sequence[ExpandRequest]) -> list[ExpandOutput]:
        outputs: list[ExpandOutput | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prefix_ids))
        chunk: list[int] = []
        rows = 0
        for i in order + [None]:  # type: ignore[list-item]
            if chunk and (i is None or rows + requests[i].width > self.max_batch_rows):
                for j, out in zip(chunk, self._expand_batch([requests[j] for j in chunk])):
                    outputs[j] = out
                chunk, rows = [], 0
            if i is not None:
                chunk.append(i)
                rows += requests[i].width
        return outputs  # type: ignore[return-value]

    # ---- one batch ----------------------------------------------------------------------
    @torch.inference_mode()
    def _expand_batch(self, reqs: list[ExpandRequest]) -> list[ExpandOutput]:
        entries = [self.store.pop(r.prefix_ids) if self.reuse_kv else None for r in reqs]
        cached = [i for i, e in enumerate(entries) if e is not None]
        fresh = [i for i, e in enumerate(entries) if e is None]
        groups = [g for g in (cached, fresh) if g]  # prefilled apart: a 1-token suffix never pads to a prompt
        fed = [0] * len(reqs)
        bases: list[Segment | None] = [None] * len(reqs)  # KV of each request's whole prefix
        parts = []
        for g in groups:
            part, counts, segments = self._prefill([reqs[i] for i in g], [entries[i] for i in g])
            parts.append(part)
            for i, n, seg in zip(g, counts, segments):
                fed[i], bases[i] = n, seg
        rows = _Rows.concat(parts)  # one row per sample: each request's rows are ``width`` copies
        req_order = [i for g in groups for i in g]
        owner = [i for i in req_order for _ in range(reqs[i].width)]
        sample_k = [k for i in req_order for k in range(reqs[i].width)]
        seeds = torch.tensor([seed32(reqs[i].seed, k) for i, k in zip(owner, sample_k)], device=self.device)
        greedy = torch.tensor([reqs[i].greedy for i in owner], device=self.device)
        caps = [reqs[i].max_new_tokens or self.max_step_tokens for i in owner]
        caps = [max(1, min(c, self.max_step_tokens)) for c in caps]

        gen: list[list[int]] = [[] for _ in owner]
        reasons: list[str] = [""] * len(owner)
        slots = list(range(len(owner)))  # batch row -> sample index, or -1 once that sample has finished
        live, t = len(slots), 0
        while True:
            tok = self._sample(rows.logits, seeds, greedy, t)
            tok_list, may_stop, is_eos = tok.tolist(), self._may_stop[tok].tolist(), self._eos_mask[tok].tolist()
            for b, s in enumerate(slots):
                if s < 0:
                    continue
                gen[s].append(tok_list[b])
                if is_eos[b]:
                    reasons[s] = "eos"
                elif may_stop[b] and self.step_format.delimiter in self.tokenizer.decode(gen[s]):
                    reasons[s] = "delimiter"
                elif len(gen[s]) >= caps[s]:
                    reasons[s] = "step_cap"
                if reasons[s]:
                    if self.reuse_kv:
                        self._keep(bases[owner[s]], reqs[owner[s]].prefix_ids, gen[s], reasons[s], rows, b)
                    slots[b] = -1
                    live -= 1
            if live == 0:
                break
            if (len(slots) - live) * 8 >= len(slots):  # drop finished rows once they are an eighth of the batch
                order = rows.drop([s >= 0 for s in slots])
                keep = torch.tensor(order, device=self.device)
                tok, seeds, greedy = tok[keep], seeds[keep], greedy[keep]
                slots = [slots[b] for b in order]
            positions = [len(reqs[owner[s]].prefix_ids) + t if s >= 0 else 0 for s in slots]
            rows = self._step(rows, tok, positions)
            t += 1
        self._free_kv = [(l._k, l._v) for l in rows.cache.layers if isinstance(l, _GrowingLayer)]

        outs = []
        for i, r in enumerate(reqs):
            samples = [(k, s) for s, (o, k) in enumerate(zip(owner, sample_k)) if o == i]
            samples.sort()
            steps = [StepSample(self.tokenizer.decode(gen[s], skip_special_tokens=True), tuple(gen[s]), reasons[s])
                     for _, s in samples]
            processed = fed[i] + sum(len(gen[s]) - 1 for _, s in samples)
            outs.append(ExpandOutput(steps, processed))
        return outs

    def _prefill(self, reqs: list[ExpandRequest], entries: list[Segment | None]
                 ) -> tuple[_Rows, list[int], list[Segment | None]]:
        """Feed each request's uncached suffix; returns ``width`` rows per request, the
        tokens each request fed and (with reuse on) the KV chain of each whole prefix.

        Rows are right-aligned so that no row has a hole: every row feeds the same number
        of tokens ``n_in``, and a cached row whose suffix is shorter drops the tail of its
        cache and feeds those tokens again (a cache of a prefix is valid for any shorter prefix).
        Cached prefixes are copied straight into the per-sample rows, which then each feed
        their (usually one-token) suffix; uncached prompts are encoded once per request and
        the result repeated.
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
            cache = self._cached_rows(entries, use, widths.tolist(), n_cache + n_in + self.max_step_tokens)
            ids, mask, pos = ids[repeat], mask[repeat], pos[repeat]
            fed = [n * r.width for n, r in zip(fed, reqs)]
        else:
            cache = DynamicCache()
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1)
        cache = out.past_key_values
        if not all(isinstance(l, _GrowingLayer) for l in cache.layers):
            cache = _cache([l.keys for l in cache.layers], [l.values for l in cache.layers])
        rows = _Rows(cache, mask.to(self.device), out.logits[:, -1].float())
        if not n_cache:
            rows = rows.select(repeat.to(self.device))
        bases: list[Segment | None] = [None] * R
        if self.reuse_kv:  # the fed positions of each request's first row, after its cached chain
            first = torch.cumsum(widths, 0) - widths
            for i, (r, c, e) in enumerate(zip(reqs, use, entries)):
                n = len(r.prefix_ids) - c
                kv = tuple((k[first[i], :, k.shape[2] - n:].clone(), v[first[i], :, v.shape[2] - n:].clone())
                           for k, v in zip(*rows.kv()))
                bases[i] = Segment(kv, c, e.truncated(c) if e else None)
        return rows, fed, bases

    def _cached_rows(self, entries: list[Segment | None], use: list[int], widths: list[int], capacity: int) -> DynamicCache:
        """A cache with ``widths[i]`` rows holding the first ``use[i]`` cached positions of
        entry i, right-aligned at ``max(use)``, with room for ``capacity`` positions. It is
        laid out in the previous batch's KV buffers when they are big enough: a fresh CPU
        allocation of this size page-faults on every first write."""
        n_cache = max(use)
        layers = []
        for layer, (k_ref, _) in enumerate(next(e for e in entries if e is not None).chain()[0].kv):
            shape = (sum(widths), k_ref.shape[0], capacity, k_ref.shape[2])
            buffers = tuple(_reuse(self._free_kv[layer][j] if layer < len(self._free_kv) else None, k_ref, shape)
                            for j in range(2))
            row = 0
            for e, c, w in zip(entries, use, widths):
                rows = slice(row, row + w)
                for buf in buffers:
                    buf[rows, :, :n_cache - c] = 0  # left padding, masked out but kept finite
                for seg in (e.truncated(c).chain() if e and c else ()):
                    at = n_cache - c + seg.start
                    buffers[0][rows, :, at:at + seg.length] = seg.kv[layer][0]
                    buffers[1][rows, :, at:at + seg.length] = seg.kv[layer][1]
                row += w
            layers.append(_GrowingLayer(*buffers, n_cache))
        cache = DynamicCache()
        cache.layers = layers
        return cache

    def _step(self, rows: _Rows, tok: torch.Tensor, positions: list[int]) -> _Rows:
        mask = torch.cat([rows.mask, rows.mask.new_ones((rows.mask.shape[0], 1))], 1)
        out = self.model(input_ids=tok[:, None], attention_mask=mask,
                         position_ids=torch.tensor(positions, device=self.device)[:, None],
                         past_key_values=rows.cache, use_cache=True)
        return _Rows(out.past_key_values, mask, out.logits[:, -1].float())

    def _keep(self, base: Segment, prefix: tuple[int, ...], gen: list[int], reason: str, rows: _Rows, b: int) -> None:
        """Store the KV of prefix + step (all but the step's last token, which was never fed)
        as a segment of the step's positions after the prefix's chain ``base``."""
        if reason == "eos":
            return
        text = self.tokenizer.decode(gen, skip_special_tokens=True)
        if self.step_format.extract_answer(text) is not None:
            return  # a final step is never expanded
        n = len(gen) - 1
        kv = tuple((k[b, :, k.shape[2] - n:].clone(), v[b, :, v.shape[2] - n:].clone()) for k, v in zip(*rows.kv()))
        self.store.put(prefix + tuple(gen), Segment(kv, len(prefix), base))

    def _sample(self, logits: torch.Tensor, seeds: torch.Tensor, greedy: torch.Tensor, t: int) -> torch.Tensor:
        best = logits.argmax(-1)
        if self.temperature == 0 or bool(greedy.all()):
            return best
        return torch.where(greedy, best, draw(logits, seeds, t, self.temperature, self.top_p))
