"""What every model-backed PRM shares: the protocol, the typed load spec, and the two base
classes whose scoring runs through the one batch scorer.

An adapter describes three things and nothing else:

* ``encode(chain)``: the token ids of the chain and, per step, the positions whose model
  outputs make that step's score (:mod:`reward_models.encoding`).
* ``features(input_ids, attention_mask, position_ids, cache)``: one vector per token (hidden
  states, or logits when the head is tiny and lives inside the model). ``cache`` is a
  transformers Cache holding the KV of earlier positions (incremental scoring), or None.
* ``head(features_at_positions, next_ids)``: one scalar per read-out position; the step
  score is ``finalize(mean of its scalars)``.

:class:`CheckpointPRM` adds loading: every option of how a checkpoint is loaded and batched
is one field of :class:`PRMSpec`, so an adapter on a transformers model is its layout, its
head and a registration. Batching, padding, out-of-memory backoff, deduplication, the prefix
score cache and the prefix KV store live in :mod:`reward_models.batching`, once.
"""
from __future__ import annotations

import difflib
import inspect
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from treesearch.config_mapping import from_plain
from treesearch.devices import resolve_device, resolve_dtype
from treesearch.kv_cache import PrefixKVStore, forward_with_cache
from treesearch.ledger import non_embedding_parameters
from treesearch.protocols import Chain, ChainScores, ProcessRewardModel

from .batching import BatchScorer, ContextLimitError, PrefixCache
from .encoding import Encoding, PieceTokenizer, encode_chain

__all__ = [
    "Chain", "ChainScores", "ProcessRewardModel", "Encoding", "PieceTokenizer", "ModelPRM", "CheckpointPRM",
    "PRMSpec", "ContextLimitError", "encode_chain", "config_context_limit", "resolve_device", "resolve_dtype",
    "non_embedding_parameters", "softcapped",
]

CUDA_BATCH_TOKENS = 16384  # default token budget per forward pass on a GPU
CPU_BATCH_TOKENS = 1024  # ... and on a CPU
KV_CACHE_BYTES = 1024**3  # default bound of a PRM's prefix KV store
#: Config fields that bound a model's positions (the smallest present wins, as in vLLM's max_model_len).
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "max_seq_len", "seq_length",
                   "n_ctx")


@dataclass(frozen=True)
class PRMSpec:
    """How a model-backed PRM is loaded and batched: the options every adapter takes."""

    path: str | None = None
    device: str | None = None  # None: "auto" for a path, the model's own device for a built model
    dtype: str | None = "auto"  # "auto": bf16/fp16 on a GPU, fp32 on a CPU; a built model is kept as is
    trust_remote_code: bool = False
    max_batch_tokens: int | None = None  # padded tokens per forward pass; None: 16k on a GPU, 1k on a CPU
    max_batch_size: int = 256
    padding_side: str = "right"
    cache: bool = True  # keep step scores by chain prefix: no chain is scored twice
    incremental: bool = True  # score a child by extending its scored parent's KV, not from the question on
    kv_cache_bytes: int = KV_CACHE_BYTES  # bound of the prefix KV store that makes that possible
    max_positions: int | None = None  # context limit; None: the model config's (max_position_embeddings...)

    def __post_init__(self) -> None:
        m = self.max_positions
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 1):
            raise ValueError(f"max_positions must be an integer >= 1 (or None: the model config's), got {m!r}")

    @classmethod
    def of(cls, owner: str, path, options: dict) -> PRMSpec:
        """The spec from an adapter's leftover keyword options; unknown names are a clear error."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"{owner} got unknown option(s) {unknown}; besides its own options it takes "
                            f"the load options {known[1:]}")
        return cls(path=None if path is None else str(path), **options)


class ModelPRM(ABC):
    """A PRM backed by a torch model; ``score`` goes through the shared :class:`BatchScorer`.

    ``causal``: each position sees only earlier tokens (all adapters here); a bidirectional
    model must set it False, and ``prefix_filling`` False too. Only causal models score
    incrementally (a later token would change an earlier position's features otherwise).
    ``prefix_filling``: a step's score depends only on the chain up to it (true for causal
    models read at step positions), so scoring one chain also caches every prefix. Outcome
    RMs and bidirectional models must set it False.
    ``context_limit``: the most positions the model reads (None: unknown). Past it a rotary model
    does not fail, it extrapolates, so the scorer refuses a longer chain with
    :class:`ContextLimitError` before any forward pass rather than score it silently.
    """

    prefix_filling: bool = True
    causal: bool = True
    num_parameters: int = 0
    context_limit: int | None = None

    def __init__(self, *, device: torch.device = torch.device("cpu"), pad_token_id: int = 0,
                 max_batch_tokens: int | None = None, max_batch_size: int = 256, padding_side: str = "right",
                 cache: bool = True, cache_size: int | None = 1_000_000, incremental: bool = False,
                 kv_cache_bytes: int = KV_CACHE_BYTES):
        self.device, self.pad_token_id = device, pad_token_id
        if max_batch_tokens is None:
            # GPU: big batches fill the device. CPU: small ones keep activations in cache, which
            # measured ~1.8x faster per token than 16k-token batches (benchmarks/prm_scoring.py).
            max_batch_tokens = CUDA_BATCH_TOKENS if device.type == "cuda" else CPU_BATCH_TOKENS
        self.scorer = BatchScorer(
            self, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size, padding_side=padding_side,
            cache=PrefixCache(prefix_filling=self.prefix_filling, max_entries=cache_size) if cache else None,
            kv_store=PrefixKVStore(kv_cache_bytes) if incremental and self.causal else None)

    # -- what an adapter defines --
    @abstractmethod
    def encode(self, chain: Chain) -> Encoding: ...

    @abstractmethod
    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 position_ids: torch.Tensor, cache=None) -> torch.Tensor:
        """[B, T, D] per-token features; ``cache`` (when given) holds earlier positions and takes the new ones."""

    @abstractmethod
    def head(self, feats: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        """[N, D] features at read-out positions (and the token after each) -> [N] scalars."""

    def finalize(self, step_values: torch.Tensor) -> torch.Tensor:
        """Mean read-out scalar per step -> step score."""
        return step_values

    # -- the protocol --
    def score(self, chains: Sequence[Chain]) -> list[ChainScores]:
        return self.scorer.score(chains)

    def chain_length(self, chain: Chain) -> int:
        """Tokens the PRM reads for ``chain``, question included (what ``context_limit`` bounds; with
        incremental scoring the parent's stored positions count too)."""
        return len(self.encode(chain))

    @property
    def cache(self):
        return self.scorer.cache

    def forget(self) -> None:
        """Drop every cached score and KV (a sweep does this before each setting)."""
        self.scorer.forget()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(params={self.num_parameters:,}, device={self.device})"


class CheckpointPRM(ModelPRM):
    """A :class:`ModelPRM` on a transformers checkpoint, loaded by one loader from a :class:`PRMSpec`.

    A subclass names how its checkpoint loads (``model_class``, or an own ``load``) and
    defines the adapter methods; its own options are keyword arguments of its ``__init__``,
    everything else goes to the spec. Passing a built ``model`` and ``tokenizer`` (tests,
    training loops) skips the disk.
    """

    model_class: str = "AutoModelForCausalLM"

    def __init__(self, path: str | None = None, *, model: torch.nn.Module | None = None, tokenizer=None,
                 **options):
        self.spec = spec = PRMSpec.of(type(self).__name__, path, options)
        self.model, tokenizer, device = self.load(spec, model, tokenizer)
        self.tok = PieceTokenizer(tokenizer)
        super().__init__(device=device, pad_token_id=self.tok.pad_token_id, max_batch_tokens=spec.max_batch_tokens,
                         max_batch_size=spec.max_batch_size, padding_side=spec.padding_side, cache=spec.cache,
                         incremental=spec.incremental, kv_cache_bytes=spec.kv_cache_bytes)
        self.num_parameters = self.count_parameters()
        self.context_limit = spec.max_positions or config_context_limit(getattr(self.model, "config", None))

    @classmethod
    def check_options(cls, **options) -> None:
        """What ``treesearch check`` can tell of a config's options before loading (a registration's
        ``check``): each is a keyword of an ``__init__`` in the class's line or a typed :class:`PRMSpec`
        field. ValueError ``KEY: why``, naming the closest option for a typo."""
        own = {name for c in cls.__mro__ if c is not ModelPRM and "__init__" in vars(c)
               for name, p in inspect.signature(vars(c)["__init__"]).parameters.items()
               if name != "self" and p.kind is not p.VAR_KEYWORD}
        loads = {f.name for f in fields(PRMSpec)}
        for key in options:
            if key not in own | loads:
                close = difflib.get_close_matches(key, sorted(own | loads), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(own | loads))}"
                raise ValueError(f"{key}: unknown option of {cls.__name__} ({hint})")
        from_plain(PRMSpec, {k: v for k, v in options.items() if k in loads and k not in own}, "", "")

    def load(self, spec: PRMSpec, model: torch.nn.Module | None, tokenizer):
        """(model on its device in eval mode, tokenizer, device)."""
        return load_checkpoint(spec, self.model_class, model, tokenizer)

    def count_parameters(self) -> int:
        """N for the full-cost FLOPs: non-embedding parameters, as on the policy side."""
        return non_embedding_parameters(self.model)

    # ``module``'s forward pass, handing it ``cache`` under the name its transformers version takes.
    run = staticmethod(forward_with_cache)


# ---- loading -------------------------------------------------------------------------------

def load_checkpoint(spec: PRMSpec, model_class: str | None, model: torch.nn.Module | None = None,
                    tokenizer=None, **load_kwargs):
    """(model on its device in eval mode, tokenizer, device): from ``spec.path`` or as given."""
    if model is None:
        if spec.path is None:
            raise ValueError("give a checkpoint path, or a model and a tokenizer")
        dev = resolve_device(spec.device)
        model = auto_class(model_class).from_pretrained(
            spec.path, dtype=resolve_dtype(spec.dtype, dev), trust_remote_code=spec.trust_remote_code, **load_kwargs)
        model = model.to(dev)
    else:
        dev = resolve_device(spec.device) if spec.device is not None else next(model.parameters()).device
        model = model.to(dev)
        if spec.dtype is not None and spec.dtype != "auto":
            model = model.to(resolve_dtype(spec.dtype, dev))
    return model.eval(), resolve_tokenizer(tokenizer, spec.path, spec.trust_remote_code), dev


def config_context_limit(config) -> int | None:
    """The most positions a transformers config says its model was trained for; None when it does not say."""
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    found = [getattr(text, k, None) for k in POSITION_FIELDS]
    found = [v for v in found if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min(found) if found else None


def auto_class(name: str | None):
    """A transformers auto class by name (``"AutoModel"``, ``"AutoModelForTokenClassification"``...)."""
    import transformers

    cls = getattr(transformers, name or "", None)
    if cls is None:
        raise ValueError(f"transformers has no {name!r}")
    return cls


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def resolve_tokenizer(tokenizer, path: str | None, trust_remote_code: bool = False):
    """A tokenizer object as given, loaded from a given tokenizer path, or from the checkpoint."""
    if isinstance(tokenizer, (str, os.PathLike)):
        return load_tokenizer(str(tokenizer), trust_remote_code)
    if tokenizer is None:
        if path is None:
            raise ValueError("a tokenizer is needed when no checkpoint path is given")
        return load_tokenizer(str(path), trust_remote_code)
    return tokenizer


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer under a task head (``model.model`` for Llama/Mistral/Qwen2)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise TypeError(f"{type(model).__name__} exposes no backbone (base_model) under its head")
    return base


def softcapped(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Logits in fp32 through the model's final soft-capping (Gemma 2), if it has one."""
    logits = logits.float()
    return torch.tanh(logits / softcap) * softcap if softcap else logits


# ---- saved head formats ----------------------------------------------------------------------

def write_format_file(directory: str, filename: str, format_name: str, fields: dict) -> None:
    """A head's settings as JSON, tagged with its format so a loader can refuse a foreign file."""
    import json

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, filename), "w") as f:
        json.dump({"format": format_name, "version": 1, **fields}, f, indent=2)


def read_format_file(directory: str, filename: str, format_name: str, what: str, known: Sequence[str]) -> dict:
    """The ``known`` fields of a file written by :func:`write_format_file`; clear errors otherwise."""
    import json

    path = os.path.join(directory, filename)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{directory} is not a {what} directory (no {filename})")
    with open(path) as f:
        data = json.load(f)
    if data.get("format") != format_name:
        raise ValueError(f"{path}: format {data.get('format')!r}, expected {format_name!r}")
    return {k: data[k] for k in known if k in data}
