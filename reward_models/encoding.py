"""How a chain becomes token ids and read-out positions: the text layout every adapter builds.

Ids are built by tokenizing text pieces and concatenating them, so step marks (tags,
separators) sit exactly where the adapter put them and their positions are known by
construction — never found by searching the ids, which would break as soon as a step's text
contains the tag's characters. A chain's ids therefore extend its parent chain's ids, which is
what lets a PRM score a child by extending its parent's KV cache (:mod:`reward_models.batching`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

Readout = Literal["mark", "last", "span"]


@dataclass(frozen=True)
class Encoding:
    """Token ids of one chain and, per step, the positions read out for its score."""

    input_ids: tuple[int, ...]
    readout: tuple[tuple[int, ...], ...]  # one non-empty tuple of positions per step
    prompt_length: int = 0  # leading ids that are the question's (shared by all its chains); 0: unknown

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
    prompt_length = len(ids)
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
    return Encoding(tuple(ids), tuple(positions), prompt_length)
