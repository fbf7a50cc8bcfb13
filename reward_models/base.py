"""What every PRM adapter shares: the protocol, chain encoding, model loading, and the
``ModelPRM`` base class whose scoring runs through the one batch scorer.

An adapter describes three things and nothing else:

* ``encode(chain)``: the token ids of the chain and, per step, the positions whose model
  outputs make that step's score. Ids are built by tokenizing text pieces and
  concatenating them, so step marks (tags, separators) sit exactly where the adapter put
  them and their positions are known by construction — never found by searching the ids,
  which would break as soon as a step's text contains the tag's characters.
* ``features(input_ids, attention_mask, position_ids)``: one vector per token (hidden
  states, or logits when the head is tiny and lives inside the model).
* ``head(features_at_positions, next_ids)``: one scalar per read-out position; the step
  score is ``finalize(mean of its scalars)``.

Batching, padding, out-of-memory backoff, deduplication and the prefix cache live in
:mod:`reward_models.batching`, once, for every adapter.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from treesearch.ledger import non_embedding_parameters

from treesearch.protocols import Chain, ChainScores, ProcessRewardModel

__all__ = [
    "Chain", "ChainScores", "ProcessRewardModel", "Encoding", "PieceTokenizer", "ModelPRM",
    "encode_chain", "resolve_device", "resolve_dtype", "non_embedding_parameters",
]

Readout = Literal["mark", "last", "span"]
CUDA_BATCH_TOKENS = 16384  # default token budget per forward pass on a GPU
CPU_BATCH_TOKENS = 1024  # ... and on a CPU


@dataclass(frozen=True)
class Encoding:
    """Token ids of one chain and, per step, the positions read out for its score."""

    input_ids: tuple[int, ...]
    readout: tuple[tuple[int, ...], ...]  # one non-empty tuple of positions per step

    def __post_init__(self) -> None:
        if not self.readout:
            raise ValueError("a chain must have at least one step to score (got no read-out positions)")
        n = len(self.input_ids)
        for i, pos in enumerate(self.readout):
            if not pos:
                raise ValueError(f"step {i} yields no read-out position (empty step text and no step mark?)")
            if min(pos) < 0 or max(pos) >= n:
                raise ValueError(f"step {i} reads position outside the {n} input ids: {pos}")

    def __len__(self) -> int:
        return len(self.input_ids)


class PieceTokenizer:
    """A transformers tokenizer seen as a map from text pieces to ids, memoised.

    Search re-scores the same step texts over and over (every child shares its parent's
    steps), so encoding each piece once pays. ``prefix_ids`` are the special tokens the
    tokenizer puts before a text (e.g. ``<s>``), found by comparing encodings with and
    without special tokens rather than assumed.

    Continuation pieces (everything after the prompt) must not get what a tokenizer adds
    at the start of a text: SentencePiece-style tokenizers (Llama 2, Mistral, Llemma)
    prepend "▁" to every encode call, which would put a stray space token before every
    step. When the tokenizer does that, continuations are encoded after a special-token
    anchor (a new section, so nothing is prepended) and the anchor's id is dropped.
    """

    def __init__(self, tokenizer, max_memo: int = 200_000):
        self.tokenizer = tokenizer
        self._memo: dict[tuple[str, bool], tuple[int, ...]] = {}
        self._max_memo = max_memo
        with_sp = list(tokenizer.encode("a", add_special_tokens=True))
        without = list(tokenizer.encode("a", add_special_tokens=False))
        k = next((i for i in range(len(with_sp) - len(without) + 1)
                  if with_sp[i:i + len(without)] == without), 0)
        self.prefix_ids: tuple[int, ...] = tuple(with_sp[:k])
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_token_id: int = int(pad)
        self.anchor: str | None = self._find_anchor()

    def _raw(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _find_anchor(self) -> str | None:
        """A special token to encode continuations after, if the tokenizer prepends at text start."""
        tok = self.tokenizer
        for a in (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token):
            if not isinstance(a, str) or not a:
                continue
            a_ids = self._raw(a)
            if len(a_ids) != 1:
                continue
            anchored = self._raw(a + "x\n")
            if anchored[:1] != a_ids:
                continue
            return a if anchored[1:] != self._raw("x\n") else None
        return None

    def encode(self, text: str, continuation: bool = False) -> tuple[int, ...]:
        """Ids of ``text`` at the start of an input, or (``continuation``) in the middle of one."""
        key = (text, continuation)
        ids = self._memo.get(key)
        if ids is None:
            if not text:
                ids = ()
            elif continuation and self.anchor is not None:
                ids = tuple(self._raw(self.anchor + text)[1:])
            else:
                ids = tuple(self._raw(text))
            if len(self._memo) >= self._max_memo:
                self._memo.clear()
            self._memo[key] = ids
        return ids

    def single_token_id(self, text: str, role: str) -> int:
        """The one token ``text`` stands for; a clear error when it is not exactly one token.

        Tries the text as encoded at the start of a string (how Math-Shepherd derives its
        '+'/'-' ids), then as a raw vocabulary entry (SentencePiece pieces like 'ки').
        """
        if not text:
            raise ValueError(f"{role} string is empty")
        ids = self.encode(text)
        if len(ids) == 1:
            return ids[0]
        tok = self.tokenizer
        tid = tok.convert_tokens_to_ids(text)
        if isinstance(tid, int) and tid != tok.unk_token_id and tid is not None:
            return tid
        pieces = tok.convert_ids_to_tokens(list(ids)) if ids else []
        raise ValueError(
            f"{role} {text!r} does not map to exactly one token of this tokenizer "
            f"(it encodes to {len(ids)} tokens {pieces!r} and is not a vocabulary entry); "
            f"choose a {role} string that is a single token")


def encode_chain(tok: PieceTokenizer, prompt: str, steps: Sequence[str], *, readout: Readout,
                 step_lead: str = "", step_suffix: str = "", mark_id: int | None = None,
                 mark_suffix: str = "", add_special_prefix: bool = True) -> Encoding:
    """Ids of ``prompt`` then each step, with the positions each step's score reads.

    Layout: ``[special prefix] prompt | lead step_1 suffix | [mark] | mark_suffix step_2 suffix | [mark] ...``
    where ``|`` separates independently tokenized pieces, ``lead`` = ``step_lead`` for the
    first step (e.g. the space after the question) and ``mark_suffix`` after a mark.
    Separators lead the next piece rather than trail the previous one, so a word keeps
    its leading space ("▁Step", "ĠStep") as in a joint tokenization. With a mark, the
    step is ``rstrip``-ed (the tag follows the text, as in "... = 5 ки\n"); without one,
    the step is kept verbatim and ``step_suffix`` is appended only if it does not already
    end with it (a policy's steps usually end with their delimiter). Nothing follows the
    last step: every model here is causal, so later text could not change the scores.

    readout="mark": the position of the inserted ``mark_id`` after each step;
    readout="last": the last token of each step piece (value heads on "step end");
    readout="span": every position whose next token belongs to the step (self-score).
    """
    if not steps:
        raise ValueError("a chain must have at least one step to score (got 0 steps)")
    if readout == "mark" and mark_id is None:
        raise ValueError("readout='mark' needs a mark token id")
    ids: list[int] = list(tok.prefix_ids) if add_special_prefix else []
    ids.extend(tok.encode(prompt))
    positions: list[tuple[int, ...]] = []
    for i, step in enumerate(steps):
        lead = step_lead if i == 0 else (mark_suffix if mark_id is not None else "")
        if readout == "mark":  # the mark goes right after the text: drop the policy's trailing delimiter
            body = step.rstrip() + step_suffix
        else:  # the step as the policy wrote it, ending with step_suffix (added only if missing)
            body = step if step.endswith(step_suffix) else step + step_suffix
        piece = tok.encode(lead + body, continuation=bool(ids))
        start = len(ids)
        ids.extend(piece)
        if readout == "mark":
            positions.append((len(ids),))
            ids.append(mark_id)  # type: ignore[arg-type]
        elif readout == "last":
            if not piece:
                raise ValueError(f"step {i} ({step!r}) encodes to no tokens, so it has no end to read")
            positions.append((len(ids) - 1,))
        elif readout == "span":
            if start == 0:
                raise ValueError("the prompt encodes to no tokens, so the first step's first token has no context")
            if not piece:
                raise ValueError(f"step {i} ({step!r}) encodes to no tokens")
            positions.append(tuple(range(start - 1, len(ids) - 1)))
        else:
            raise ValueError(f"unknown readout {readout!r}")
    return Encoding(tuple(ids), tuple(positions))


# ---- devices, dtypes, parameters -----------------------------------------------------------

def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """"auto": bf16 on a GPU that has it, else fp16 on GPU; fp32 on CPU (exact, and fast enough)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    try:
        return names[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(names)} or 'auto'") from None


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_model(auto_cls, path: str, device: torch.device, dtype: torch.dtype,
               trust_remote_code: bool = False, **kwargs) -> torch.nn.Module:
    model = auto_cls.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    return model.to(device).eval()


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer under a task head (``model.model`` for Llama/Mistral/Qwen2)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise TypeError(f"{type(model).__name__} exposes no backbone (base_model) under its head")
    return base


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


# ---- the base class --------------------------------------------------------------------------

class ModelPRM(ABC):
    """A PRM backed by a torch model; ``score`` goes through the shared :class:`BatchScorer`.

    ``causal``: each position sees only earlier tokens (all adapters here); a bidirectional
    model must set it False, and ``prefix_filling`` False too.
    ``prefix_filling``: a step's score depends only on the chain up to it (true for causal
    models read at step positions), so scoring one chain also caches every prefix. Outcome
    RMs and bidirectional models must set it False.
    """

    prefix_filling: bool = True
    causal: bool = True  # False for bidirectional models: padding then always gets a mask
    num_parameters: int = 0
    device: torch.device = torch.device("cpu")
    pad_token_id: int = 0

    def __init__(self, *, max_batch_tokens: int | None = None, max_batch_size: int = 256,
                 padding_side: str = "right", cache: bool = True, cache_size: int | None = 1_000_000):
        from .batching import BatchScorer, PrefixCache

        if max_batch_tokens is None:
            # GPU: big batches fill the device. CPU: small ones keep activations in cache, which
            # measured ~1.8x faster per token than 16k-token batches (benchmarks/prm_scoring.py).
            max_batch_tokens = CUDA_BATCH_TOKENS if self.device.type == "cuda" else CPU_BATCH_TOKENS
        self.scorer = BatchScorer(
            self, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
            padding_side=padding_side,
            cache=PrefixCache(prefix_filling=self.prefix_filling, max_entries=cache_size) if cache else None)

    # -- what an adapter defines --
    @abstractmethod
    def encode(self, chain: Chain) -> Encoding: ...

    @abstractmethod
    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 position_ids: torch.Tensor) -> torch.Tensor:
        """[B, T, D] per-token features."""

    @abstractmethod
    def head(self, feats: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        """[N, D] features at read-out positions (and the token after each) -> [N] scalars."""

    def finalize(self, step_values: torch.Tensor) -> torch.Tensor:
        """Mean read-out scalar per step -> step score."""
        return step_values

    # -- the protocol --
    def score(self, chains: Sequence[Chain]) -> list[ChainScores]:
        return self.scorer.score(chains)

    @property
    def cache(self):
        return self.scorer.cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}(params={self.num_parameters:,}, device={self.device})"


def prepare(path: str | None, model: torch.nn.Module | None, tokenizer, auto_cls,
            device: str | torch.device | None, dtype: str | torch.dtype | None,
            trust_remote_code: bool, **load_kwargs):
    """(model on its device in eval mode, tokenizer, device): loaded from ``path`` or as given.

    Passing a built ``model`` and ``tokenizer`` (tests, training loops) skips the disk.
    """
    if model is None:
        if path is None:
            raise ValueError("give a checkpoint path, or a model and a tokenizer")
        dev = resolve_device(device)
        model = load_model(auto_cls, str(path), dev, resolve_dtype(dtype, dev), trust_remote_code, **load_kwargs)
    else:
        dev = resolve_device(device) if device is not None else next(model.parameters()).device
        model = model.to(dev)
        if dtype is not None and dtype != "auto":
            model = model.to(resolve_dtype(dtype, dev))
        model.eval()
    return model, resolve_tokenizer(tokenizer, path, trust_remote_code), dev


def resolve_tokenizer(tokenizer, path: str | None, trust_remote_code: bool = False):
    """A tokenizer object as given, loaded from a given tokenizer path, or from the checkpoint."""
    if isinstance(tokenizer, (str, os.PathLike)):
        return load_tokenizer(str(tokenizer), trust_remote_code)
    if tokenizer is None:
        if path is None:
            raise ValueError("a tokenizer is needed when no checkpoint path is given")
        return load_tokenizer(str(path), trust_remote_code)
    return tokenizer
