"""A transformers causal LM as a step-sampling policy.

One batched decode loop samples the next step for many prefixes at once and stops each
row at the step delimiter or EOS. The KV cache of every sampled step is kept
(``PrefixKVStore``), so expanding that step later feeds only its last token instead of
re-encoding question and path. Sampling noise comes from a counter-based hash of
(row seed, position, token), so a row's sample does not depend on what else is in the
batch, on the batch order or on whether its prefix came from the cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import DynamicLayer

from .kv_cache import CacheEntry, PrefixKVStore
from .ledger import non_embedding_parameters
from .protocols import ExpandOutput, ExpandRequest, StepSample
from .step_format import StepFormat

_M32 = 0xFFFFFFFF


class _GrowingLayer(DynamicLayer):
    """A KV cache layer with spare capacity: a decode step writes in place instead of
    concatenating (which copies the whole cache at every token)."""

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
        self._set_length(length)

    def _set_length(self, n: int) -> None:
        self._n = n
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self._n + key_states.shape[2]
        if end > self._k.shape[2]:
            self.__init__(self.keys, self.values, spare=max(64, end))  # double the room
        self._k[:, :, self._n:end] = key_states
        self._v[:, :, self._n:end] = value_states
        self._set_length(end)
        return self.keys, self.values

    def select(self, idx: torch.Tensor) -> _GrowingLayer:
        return _GrowingLayer(self._k[idx], self._v[idx], self._n)


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
        self._vocab_mix = (torch.arange(vocab, device=self.device, dtype=torch.int64) * 0x9E3779B1) & _M32

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
        parts = []
        for g in groups:
            part, counts = self._prefill([reqs[i] for i in g], [entries[i] for i in g])
            parts.append(part)
            for i, n in zip(g, counts):
                fed[i] = n
        rows = _Rows.concat(parts)
        req_order = [i for g in groups for i in g]

        # one row per sample: repeat each request's row ``width`` times
        widths = torch.tensor([reqs[i].width for i in req_order], device=self.device)
        rows = rows.select(torch.repeat_interleave(torch.arange(len(req_order), device=self.device), widths))
        owner = [i for i in req_order for _ in range(reqs[i].width)]
        sample_k = [k for i in req_order for k in range(reqs[i].width)]
        seeds = torch.tensor([_seed32(reqs[i].seed, k) for i, k in zip(owner, sample_k)], device=self.device)
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
                        self._keep(reqs[owner[s]].prefix_ids, gen[s], reasons[s], rows, b)
                    slots[b] = -1
                    live -= 1
            if live == 0:
                break
            if (len(slots) - live) * 8 >= len(slots):  # drop finished rows once they are an eighth of the batch
                keep = torch.tensor([b for b, s in enumerate(slots) if s >= 0], device=self.device)
                rows, tok, seeds, greedy = rows.select(keep), tok[keep], seeds[keep], greedy[keep]
                slots = [s for s in slots if s >= 0]
            positions = [len(reqs[owner[s]].prefix_ids) + t if s >= 0 else 0 for s in slots]
            rows = self._step(rows, tok, positions)
            t += 1

        outs = []
        for i, r in enumerate(reqs):
            samples = [(k, s) for s, (o, k) in enumerate(zip(owner, sample_k)) if o == i]
            samples.sort()
            steps = [StepSample(self.tokenizer.decode(gen[s], skip_special_tokens=True), tuple(gen[s]), reasons[s])
                     for _, s in samples]
            processed = fed[i] + sum(len(gen[s]) - 1 for _, s in samples)
            outs.append(ExpandOutput(steps, processed))
        return outs

    def _prefill(self, reqs: list[ExpandRequest], entries: list[CacheEntry | None]) -> tuple[_Rows, list[int]]:
        """Feed each row's uncached suffix; returns the rows and the tokens each fed.

        Rows are right-aligned so that no row has a hole: every row feeds the same number
        of tokens ``n_in``, and a cached row whose suffix is shorter drops the tail of its
        cache and feeds those tokens again (a cache of a prefix is valid for any shorter prefix).
        """
        n_in = max(len(r.prefix_ids) - (e.length if e else 0) for r, e in zip(reqs, entries))
        use = [max(0, len(r.prefix_ids) - n_in) if e else 0 for r, e in zip(reqs, entries)]
        n_cache = max(use)
        R = len(reqs)
        ids = torch.full((R, n_in), self.pad_id, dtype=torch.long)
        mask = torch.zeros((R, n_cache + n_in), dtype=torch.long)
        pos = torch.zeros((R, n_in), dtype=torch.long)
        fed = []
        for b, (r, c) in enumerate(zip(reqs, use)):
            feed = r.prefix_ids[c:]
            ids[b, n_in - len(feed):] = torch.tensor(feed)
            mask[b, n_cache - c: n_cache] = 1
            mask[b, n_cache + n_in - len(feed):] = 1
            pos[b, n_in - len(feed):] = torch.arange(c, c + len(feed))
            fed.append(len(feed))
        if n_cache:
            ref = next(e for e in entries if e is not None).kv

            def left_padded(t: torch.Tensor) -> torch.Tensor:
                return torch.cat([t.new_zeros((t.shape[0], n_cache - t.shape[1], t.shape[2])), t], 1)

            cache = _cache(*zip(*[
                (torch.stack([left_padded(e.kv[layer][0][:, :c] if e else k_ref[:, :0]) for e, c in zip(entries, use)]),
                 torch.stack([left_padded(e.kv[layer][1][:, :c] if e else k_ref[:, :0]) for e, c in zip(entries, use)]))
                for layer, (k_ref, _) in enumerate(ref)]))
        else:
            cache = DynamicCache()
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1)
        cache = out.past_key_values
        if not all(isinstance(l, _GrowingLayer) for l in cache.layers):
            cache = _cache([l.keys for l in cache.layers], [l.values for l in cache.layers])
        return _Rows(cache, mask.to(self.device), out.logits[:, -1].float()), fed

    def _step(self, rows: _Rows, tok: torch.Tensor, positions: list[int]) -> _Rows:
        mask = torch.cat([rows.mask, rows.mask.new_ones((rows.mask.shape[0], 1))], 1)
        out = self.model(input_ids=tok[:, None], attention_mask=mask,
                         position_ids=torch.tensor(positions, device=self.device)[:, None],
                         past_key_values=rows.cache, use_cache=True)
        return _Rows(out.past_key_values, mask, out.logits[:, -1].float())

    def _keep(self, prefix: tuple[int, ...], gen: list[int], reason: str, rows: _Rows, b: int) -> None:
        """Store the KV of prefix + step (all but the step's last token, which was never fed)."""
        if reason == "eos":
            return
        text = self.tokenizer.decode(gen, skip_special_tokens=True)
        if self.step_format.extract_answer(text) is not None:
            return  # a final step is never expanded
        n = len(prefix) + len(gen) - 1
        kv = tuple((k[b, :, -n:].clone(), v[b, :, -n:].clone()) for k, v in zip(*rows.kv()))
        self.store.put(prefix + tuple(gen), CacheEntry(kv, n))

    def _sample(self, logits: torch.Tensor, seeds: torch.Tensor, greedy: torch.Tensor, t: int) -> torch.Tensor:
        best = logits.argmax(-1)
        if self.temperature == 0 or bool(greedy.all()):
            return best
        scores = logits / self.temperature
        if self.top_p < 1.0:
            sorted_l, sorted_i = scores.sort(-1, descending=True)
            probs = sorted_l.softmax(-1)
            drop = probs.cumsum(-1) - probs > self.top_p  # keep the smallest head with mass >= top_p
            sorted_l = sorted_l.masked_fill(drop, float("-inf"))
            scores = torch.full_like(scores, float("-inf")).scatter(-1, sorted_i, sorted_l)
        u = _uniform(seeds, t, self._vocab_mix)
        drawn = (scores.double() - torch.log(-torch.log(u))).argmax(-1)  # Gumbel-max = a categorical draw
        return torch.where(greedy, best, drawn)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def _uniform(seeds: torch.Tensor, t: int, vocab_mix: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1) that depend only on (row seed, position t, token id)."""
    base = _hash32(seeds ^ _hash32(torch.tensor(t * 0x27D4EB2F & _M32, device=seeds.device)))
    h = _hash32((base[:, None] + vocab_mix[None, :]) & _M32)
    return (h.double() + 0.5) / 2.0**32


def _seed32(seed: int, k: int) -> int:
    x = (seed * 0x9E3779B1 + k * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 29
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 32)) & _M32
