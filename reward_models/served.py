"""PRMs behind servers: an adapter whose model runs on ``vllm serve`` (``vllm_server``), and a verifier
service of the user's own (``http``).

``{"type": "vllm_server", "adapter": ..., "path": DIR, "base_url": ...}`` is the offline ``vllm``
backend (:mod:`reward_models.vllm_features`) with the engine moved behind a URL. The adapter is built
with transformers on the CPU from the local checkpoint ``path`` (its heads, tokenizer and parameter
count), its backbone's weights are dropped, and its ``features`` come from the server:

* ``endpoint: "pooling"`` (default; a server started with ``--runner pooling``): ``POST /pooling``
  with a row's token ids, ``token_embed`` (final hidden states) for the value-head, Llemma,
  step-tag and self-score adapters, ``token_classify`` (the classifier's logits) for
  ``classification`` / ``qwen_prm``; ``use_activation`` false. The adapter's own head reads them.
* ``endpoint: "completions"`` (``self_score`` and ``likelihood`` only; the policy's own generate
  server): ``POST /v1/completions`` with the row's ids, ``max_tokens: 1`` and vLLM's
  ``prompt_logprobs: 0``, which gives the log-probability of each prompt token given the ones
  before (the first is None). Position t's feature is the log-probability of token t + 1, and the
  head reads it as is; the adapter's ``encode``, reduction and ``finalize`` are unchanged, so a
  policy server also serves its self-score, with no local model weights kept.

``encode``, ``head``, ``finalize`` and the batch scorer (dedup, prefix score cache, ledger) stay the
adapter's, so the scores are the in-process adapter's (1e-3 in fp32, ``tests/test_prm_served.py``).
The server takes ids, not a KV cache: incremental scoring is off and every chain is sent whole, one
request per chain, all of a batch at once (at most ``max_concurrency`` in flight). Rows go out
without padding, and an answer whose shape does not match the row sent (a row of the wrong length,
a token id that is not the one sent, a missing key) is a :class:`ServerError` naming the URL: nothing
is filled in.

``{"type": "http", "url": ..., "num_parameters": N}`` posts ``{"chains": [{"question", "steps"}]}``
and reads ``{"scores": [[float per step]], "processed_tokens": [int per chain]}`` (the latter
optional); chains already scored are served from a :class:`PrefixCache` and not sent again.

Both take :class:`treesearch.serving.ServerOptions` (servers, key from the environment, TLS,
timeout, retries, concurrency) and expose ``server_report()`` (the retried 429/5xx answers, or
None) and ``close()``.
"""
from __future__ import annotations

import binascii
import functools
import json
import math
from dataclasses import fields
from typing import Any, Hashable, Sequence

import torch

from treesearch.protocols import Chain, ChainScores
from treesearch.serving import EventLoop, ServerError, ServerOptions, ServerPool, first_line, gather, run_sync

from .batching import PrefixCache, chain_key
from .registry import register_prm
from .vllm_features import POOLING_TASKS, TokenOutputs, adapter_without_backbone, check_adapter, drop_weights

SERVER_KEYS = tuple(f.name for f in fields(ServerOptions))
#: Adapters whose features may be the policy's own prompt log-probabilities (``endpoint: "completions"``).
LOGPROB_ADAPTERS = ("self_score", "likelihood")
ENDPOINTS = {"pooling": POOLING_TASKS, "completions": dict.fromkeys(LOGPROB_ADAPTERS, "prompt_logprobs")}
ENCODINGS = ("base64", "float")
#: Default padded tokens per scorer batch: a batch is one round of concurrent requests, not a CPU forward pass.
SERVED_BATCH_TOKENS = 16384


# ---- features from a server ----------------------------------------------------------------

class ServedOutputs(TokenOutputs):
    """Per-row outputs from a server: one request per row, all rows of a batch at once through the pool."""

    def __init__(self, pool: ServerPool, model: str, dtype: torch.dtype = torch.float32):
        self.pool, self.model, self.dtype = pool, model, dtype
        self.loop: EventLoop | None = EventLoop()  # kept, so the clients keep their connections between batches

    def row_outputs(self, rows: list[list[int]]) -> list[torch.Tensor]:
        if self.loop is None:
            raise RuntimeError(f"{self.pool.what} was closed")
        n = len(self.pool.urls)  # rows are spread over the servers (no prefix cache to meet on a pooling server)
        calls = [self.pool.call(b % n, functools.partial(self.request, row)) for b, row in enumerate(rows)]
        return [out.to(self.dtype) for out in self.loop.run(gather(calls))]

    async def request(self, row: list[int], client: Any) -> torch.Tensor:
        """[len(row), D] outputs of one row."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the HTTP clients and the event loop (idempotent)."""
        self.loop = _close(self.pool, self.loop)


class PoolingOutputs(ServedOutputs):
    """``POST /pooling`` per row: ``token_embed`` hidden states or ``token_classify`` logits, [T, width]."""

    def __init__(self, pool: ServerPool, model: str, task: str, *, width: int | None = None,
                 encoding_format: str = "base64", dtype: torch.dtype = torch.float32):
        super().__init__(pool, model, dtype)
        if encoding_format not in ENCODINGS:
            raise ValueError(f"encoding_format must be one of {ENCODINGS}, got {encoding_format!r}")
        self.task, self.width, self.encoding_format = task, width, encoding_format

    async def request(self, row: list[int], client: Any) -> torch.Tensor:
        where = _endpoint(client, "pooling")
        body = {"model": self.model, "input": [row], "task": self.task, "use_activation": False,
                "encoding_format": self.encoding_format}
        if self.encoding_format == "base64":
            body.update(embed_dtype="float32", endianness="little")
        answer = await post_json(self.pool, client, where, body)
        bad = functools.partial(malformed, self.pool, where)
        item = _only_item(answer, "data", bad)
        out = item.get("data") if isinstance(item, dict) else None
        if isinstance(out, str):
            return self._decoded(out, len(row), bad)
        if not isinstance(out, list):
            raise bad(f"no data[0].data (per-token outputs) for the {len(row)}-token input sent")
        try:
            t = torch.tensor(out, dtype=torch.float32)
        except (TypeError, ValueError):
            raise bad("data[0].data is not a [tokens, values] array of numbers") from None
        if t.dim() != 2 or t.shape[0] != len(row) or (self.width is not None and t.shape[1] != self.width):
            raise bad(f"outputs of shape {list(t.shape)} for the {len(row)}-token input sent "
                      f"(expected [{len(row)}, {self.width or 'D'}]; is the server's pooling 'ALL' per token?)")
        return _finite(t, bad)

    def _decoded(self, text: str, tokens: int, bad) -> torch.Tensor:
        import numpy as np

        try:
            raw = binascii.a2b_base64(text.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError):
            raise bad("data[0].data is neither base64 nor a list of numbers") from None
        width = self.width or (len(raw) // 4 // tokens if tokens else 0)
        if not width or len(raw) != 4 * tokens * width:
            raise bad(f"{len(raw)} bytes of float32 for the {tokens}-token input sent (expected "
                      f"{tokens} x {self.width or 'D'} x 4; is the server's pooling 'ALL' per token?)")
        t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").astype(np.float32)).reshape(tokens, width)
        return _finite(t, bad)


class PromptLogprobs(ServedOutputs):
    """``POST /v1/completions`` per row with ``prompt_logprobs: 0``: [T, 1], row t the log-probability of
    token t + 1 given tokens 0..t (the last row, which has no next token, NaN)."""

    async def request(self, row: list[int], client: Any) -> torch.Tensor:
        where = _endpoint(client, "completions")
        body = {"model": self.model, "prompt": row, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
        answer = await post_json(self.pool, client, where, body)
        bad = functools.partial(malformed, self.pool, where)
        choice = _only_item(answer, "choices", bad)
        lps = choice.get("prompt_logprobs") if isinstance(choice, dict) else None
        if not isinstance(lps, list) or len(lps) != len(row):
            got = f"{len(lps)} prompt log-probabilities" if isinstance(lps, list) else "no prompt_logprobs"
            raise bad(f"{got} for the {len(row)}-token prompt sent (vLLM's prompt_logprobs)")
        out = torch.full((len(row), 1), math.nan)
        for t in range(1, len(row)):
            entry = lps[t].get(str(row[t])) if isinstance(lps[t], dict) else None
            value = entry.get("logprob") if isinstance(entry, dict) else None
            if not _is_number(value):
                raise bad(f"no log-probability of prompt token {row[t]} at position {t}")
            out[t - 1, 0] = float(value)
        return out


def read_logprob(feats: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
    """The head of a log-probability adapter on served features: they already are log P(next token)."""
    return feats[:, 0]


# ---- vllm_server -------------------------------------------------------------------------------

def _vllm_server(adapter: str, path: str, *, endpoint: str = "pooling", model: str | None = None,
                 encoding_format: str = "base64", **kwargs: Any):
    """The ``adapter`` PRM (its own options in ``kwargs``) with its model on a vLLM server."""
    check_adapter(adapter, f"vllm_server ({endpoint!r} endpoint)", _adapters(endpoint))
    options = ServerOptions(**{k: kwargs.pop(k) for k in SERVER_KEYS if k in kwargs})
    what = "vllm_server PRM"
    model = ServerPool(options, what).served_model(model)
    kwargs.setdefault("max_batch_tokens", SERVED_BATCH_TOKENS)
    # Left padding: the scorer then always passes the attention mask, which gives each row's real tokens,
    # so no pad is sent (a padded position's outputs would cost the server and the transfer for nothing).
    prm = adapter_without_backbone(adapter, path, {**kwargs, "padding_side": "left"})
    if endpoint == "completions":
        drop_weights(prm.model)  # the LM head too: the server gives the log-probabilities
        prm.features = PromptLogprobs(ServerPool(options, what), model)
        prm.head = read_logprob
    else:
        from treesearch.devices import resolve_dtype

        task = POOLING_TASKS[adapter]
        config = getattr(prm.model, "config", None)
        width = getattr(config, "hidden_size" if task == "token_embed" else "num_labels", None)
        prm.features = PoolingOutputs(ServerPool(options, what, root=True), model, task, width=width,
                                      encoding_format=encoding_format,
                                      dtype=resolve_dtype(prm.spec.dtype, torch.device("cpu")))
    prm.server_report = prm.features.pool.retry_report
    prm.close = prm.features.close
    return prm


def _adapters(endpoint: str) -> dict:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {sorted(ENDPOINTS)}, got {endpoint!r}")
    return ENDPOINTS[endpoint]


def _check_vllm_server(adapter: str | None = None, endpoint: str = "pooling", model: str | None = None,
                       encoding_format: str = "base64", **options: Any) -> None:
    """What ``treesearch check`` can tell before loading: the options, the key, the adapter, and that every
    server answers and serves ``model``."""
    server = ServerOptions(**{k: options[k] for k in SERVER_KEYS if k in options})
    pool = ServerPool(server, "vllm_server PRM")  # the key's variable must be set
    check_adapter(adapter, f"vllm_server ({endpoint!r} endpoint)", _adapters(endpoint))
    if encoding_format not in ENCODINGS:
        raise ValueError(f"encoding_format must be one of {ENCODINGS}, got {encoding_format!r}")
    pool.served_model(model)


register_prm("vllm_server", check=_check_vllm_server)(_vllm_server)


# ---- http: a verifier service ------------------------------------------------------------------

class HttpPRM:
    """A verifier behind ``POST url``: ``{"chains": [{"question", "steps"}, ...]}`` in,
    ``{"scores": [[float per step], ...], "processed_tokens": [int per chain]}`` out (the latter optional:
    without it a chain counts 0 processed tokens).

    ``prefix_filling``: the verifier scores step k from the question and steps 1..k alone (a causal PRM),
    so a scored chain also fills the cache for its prefixes; off by default, when only whole chains are
    cached (a judge reading the whole chain may score an early step by what follows).
    """

    def __init__(self, url: str | list[str] | None = None, *, num_parameters: int, max_batch_chains: int = 64,
                 cache: bool = True, prefix_filling: bool = False, **server: Any):
        if url is not None:
            if "base_url" in server:
                raise ValueError("give the verifier's address as url or as base_url, not both")
            server["base_url"] = url
        elif "base_url" not in server:
            raise ValueError("the http PRM needs url: the verifier's address (e.g. http://127.0.0.1:9000/score)")
        self.pool = ServerPool(_server_options(server), "http PRM")
        _check_http_numbers(num_parameters, max_batch_chains)
        self.num_parameters = num_parameters
        self.max_batch_chains = max_batch_chains
        self.cache = PrefixCache(prefix_filling=prefix_filling) if cache else None
        self.loop: EventLoop | None = EventLoop()

    def score(self, chains: Sequence[Chain]) -> list[ChainScores]:
        results: list[ChainScores | None] = [None] * len(chains)
        pending: dict[Hashable, list[int]] = {}  # each distinct chain once, with every index it sits at
        for i, c in enumerate(chains):
            if not c.steps:
                raise ValueError(f"chain {i} has no steps; a PRM scores steps, so there is nothing to score")
            hit = self.cache.get(c) if self.cache is not None else None
            if hit is not None:
                results[i] = ChainScores(hit, processed_tokens=0)
            else:
                pending.setdefault(chain_key(c), []).append(i)
        firsts = [idx[0] for idx in pending.values()]
        batches = [firsts[k:k + self.max_batch_chains] for k in range(0, len(firsts), self.max_batch_chains)]
        calls = [self.pool.call(chains[b[0]].question, functools.partial(self._request, [chains[i] for i in b], b))
                 for b in batches]
        if calls and self.loop is None:
            raise RuntimeError(f"{self.pool.what} was closed")
        answers = self.loop.run(gather(calls)) if calls else []
        for batch, (scores, tokens) in zip(batches, answers):
            for i, s, t in zip(batch, scores, tokens):
                idx = pending[chain_key(chains[i])]
                results[i] = ChainScores(s, processed_tokens=t)
                for j in idx[1:]:
                    results[j] = ChainScores(list(s), processed_tokens=0)
                if self.cache is not None:
                    self.cache.put(chains[i], s)
        return results  # type: ignore[return-value]

    async def _request(self, batch: list[Chain], index: list[int], client: Any):
        """(scores, processed tokens) of each chain of ``batch`` (``index``: their places in the call)."""
        where = _endpoint(client, "")
        body = {"chains": [{"question": c.question, "steps": list(c.steps)} for c in batch]}
        answer = await post_json(self.pool, client, where, body)
        return parse_verifier_answer(answer, [len(c.steps) for c in batch], index,
                                     functools.partial(malformed, self.pool, where))

    def forget(self) -> None:
        """Drop every cached score (a sweep does this before each setting)."""
        if self.cache is not None:
            self.cache.clear()

    def server_report(self) -> str | None:
        return self.pool.retry_report()

    def close(self) -> None:
        """Close the HTTP clients and the event loop (idempotent)."""
        self.loop = _close(self.pool, self.loop)

    def __repr__(self) -> str:
        return f"HttpPRM({', '.join(self.pool.urls)}, params={self.num_parameters:,})"


def parse_verifier_answer(answer: Any, steps: list[int], index: list[int], bad):
    """(scores per chain, processed tokens per chain) from a verifier's answer; ``bad(text)`` makes the error."""
    if not isinstance(answer, dict) or "scores" not in answer:
        raise bad("answered without the key 'scores'" if isinstance(answer, dict)
                  else f"answered {type(answer).__name__}, not a JSON object with 'scores'")
    scores, tokens = answer["scores"], answer.get("processed_tokens")
    if not isinstance(scores, list) or len(scores) != len(steps):
        got = f"{len(scores)} score lists" if isinstance(scores, list) else f"'scores' of type {type(scores).__name__}"
        raise bad(f"answered {got} for {len(steps)} chains")
    out = []
    for k, (s, n, i) in enumerate(zip(scores, steps, index)):
        if not isinstance(s, list) or len(s) != n:
            got = f"{len(s)} scores" if isinstance(s, list) else f"a {type(s).__name__}"
            raise bad(f"chain {i}: {got} for {n} steps")
        for j, v in enumerate(s):
            if not _is_number(v) or not math.isfinite(v):
                raise bad(f"chain {i}: score {j} is {_short(v)}, not a finite number")
        out.append([float(v) for v in s])
    if tokens is None:
        return out, [0] * len(out)
    if not isinstance(tokens, list) or len(tokens) != len(steps):
        raise bad(f"'processed_tokens' is not a list of {len(steps)} integers")
    for i, t in zip(index, tokens):
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise bad(f"chain {i}: processed_tokens {_short(t)} is not an integer >= 0")
    return out, list(tokens)


def _server_options(server: dict[str, Any]) -> ServerOptions:
    unknown = sorted(set(server) - set(SERVER_KEYS))
    if unknown:
        raise ValueError(f"the http PRM has no option(s) {unknown}; it takes url, num_parameters, max_batch_chains, "
                         f"cache, prefix_filling and the server options {list(SERVER_KEYS)}")
    return ServerOptions(**server)


def _check_http_numbers(num_parameters: Any, max_batch_chains: Any) -> None:
    if not isinstance(num_parameters, int) or isinstance(num_parameters, bool) or num_parameters < 0:
        raise ValueError("num_parameters: required for the http PRM, an integer >= 0 (the verifier's "
                         f"non-embedding parameters, for the FLOPs ledger; 0: its cost is not counted), "
                         f"got {num_parameters!r}")
    if not isinstance(max_batch_chains, int) or isinstance(max_batch_chains, bool) or max_batch_chains < 1:
        raise ValueError(f"max_batch_chains must be an integer >= 1, got {max_batch_chains!r}")


def _http(**kwargs: Any) -> HttpPRM:
    return HttpPRM(**kwargs)


def _check_http(url: str | list[str] | None = None, num_parameters: Any = None, max_batch_chains: int = 64,
                cache: bool = True, prefix_filling: bool = False, **server: Any) -> None:
    """The options, the key, ``num_parameters``, and that every verifier answers an empty batch
    (``{"chains": []}`` -> ``{"scores": []}``)."""
    if url is not None:
        server["base_url"] = url
    if url is None and "base_url" not in server:
        _server_options(server)  # an inline key is refused first
        raise ValueError("the http PRM needs url: the verifier's address (e.g. http://127.0.0.1:9000/score)")
    pool = ServerPool(_server_options(server), "http PRM")  # the key's variable must be set
    _check_http_numbers(num_parameters, max_batch_chains)
    run_sync(_probe(pool))


async def _probe(pool: ServerPool, timeout: float = 10.0) -> None:
    from openai import APIConnectionError, APIStatusError, APITimeoutError

    try:
        for i, url in enumerate(pool.urls):
            client = pool.client(i).with_options(timeout=timeout, max_retries=0)
            try:
                answer = await client.post(url, body={"chains": []}, cast_to=object)
            except (APIConnectionError, APITimeoutError) as e:
                cause = first_line(str(e.__cause__ or e))
                raise ServerError(pool.redact(f"{pool.what} {url} does not answer ({cause})")) from None
            except APIStatusError as e:
                raise ServerError(pool.redact(f"{pool.what} {url} answered {e.status_code} to an empty batch "
                                              f"(POST {{\"chains\": []}}): {first_line(e.message)}")) from None
            except json.JSONDecodeError:
                raise ServerError(pool.redact(f"{pool.what} {url} answered an empty batch with invalid JSON")) \
                    from None
            parse_verifier_answer(answer, [], [], functools.partial(malformed, pool, url))
    finally:
        await pool.aclose()


register_prm("http", check=_check_http)(_http)


# ---- answers -------------------------------------------------------------------------------------

async def post_json(pool: ServerPool, client: Any, where: str, body: dict) -> Any:
    """``client.post`` of ``body`` to the absolute URL ``where`` (the SDK's retries kept); the parsed answer."""
    try:
        return await client.post(where, body=body, cast_to=object)
    except json.JSONDecodeError:
        raise malformed(pool, where, "answered invalid JSON") from None


def malformed(pool: ServerPool, where: str, text: str) -> ServerError:
    return ServerError(pool.redact(f"{pool.what} {where}: malformed answer: {text}"))


def _endpoint(client: Any, path: str) -> str:
    """The absolute URL of ``path`` under the client's base URL ("": the base URL itself)."""
    base = str(client.base_url).rstrip("/")
    return f"{base}/{path}" if path else base


def _only_item(answer: Any, key: str, bad) -> Any:
    """``answer[key][0]``, which must be the only item (one input was sent)."""
    items = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise bad(f"no list '{key}' in the answer" if isinstance(answer, dict)
                  else f"answered {type(answer).__name__}, not a JSON object")
    if len(items) != 1:
        raise bad(f"{len(items)} items in '{key}' for the one input sent")
    return items[0]


def _close(pool: ServerPool, loop: EventLoop | None) -> None:
    """Close ``pool``'s clients on ``loop`` (which made them), then the loop; nothing when already closed."""
    if loop is not None:
        loop.close(last=pool.aclose())


def _finite(t: torch.Tensor, bad) -> torch.Tensor:
    if not torch.isfinite(t).all():
        raise bad("non-finite values in the per-token outputs")
    return t


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


