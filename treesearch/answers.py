"""The final answer in a solution's text: the one extractor, for the search and for grading.

The search core uses it (through ``StepFormat``) to tell a terminal step and read its answer; the
grader (``experiments.grading``) uses it on whole solutions. One implementation, so the answer a
run records is the answer a grader would find in the same text.

Markers (``MARKERS``), the last one in the text wins:

* ``answer_is``: "The answer is X" / "The final answer is X", to the end of the line; a
  Minerva-style ending ("... $28\\%$. I hope it is correct.") and the Math-Shepherd tag "ки" are dropped.
* ``final_answer``: "Final Answer: X" / "Answer: X" (markdown bold allowed); when nothing follows on
  the marker's line, the next non-empty line.
* ``boxed``: ``\\boxed{X}`` / ``\\fbox{X}``, brace-matched in linear time. Boxes separated only by
  commas, semicolons, "and", "or", spacing or math delimiters are one answer listing them all
  ("\\boxed{-2} and \\boxed{1}" -> "-2, 1"); "first \\boxed{1}, then \\boxed{2}" answers 2.
* ``hashes``: "#### X" (GSM8K).

A box after a marker is later in the text, so "The answer is $\\boxed{5}$." answers "5". Math
delimiters around the whole answer (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``) and a
sentence-final period are dropped.
"""
from __future__ import annotations

import re
from typing import Callable, Iterator

MARKERS = ("answer_is", "final_answer", "boxed", "hashes")

_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is:?[ \t]*([^\n]*)")
_FINAL_ANSWER = re.compile(r"(?<![A-Za-z])(?:[Ff]inal [Aa]nswer|Answer)(?:\*\*)?[ \t]*(?::(?:\*\*)?|(?=\$|\\[\[(]))"
                           r"[ \t]*([^\n]*)")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BARE_TOKEN = re.compile(r"[ ]+([^\s$]+)")
_NEXT_LINE = re.compile(r"\s*([^\s][^\n]*)")
_HOPE = "I hope it is correct"
# What may stand between boxes that list one answer: spacing, delimiters, commas, 'and'/'or'.
_BOX_GAP = re.compile(r"(?:\s|\$|\\[()\[\],;!]|\\q?quad(?![a-zA-Z])|[,;]|and|or|\\text\{\s*(?:and|or)\s*\})*")
_MAX_BOX_GAP = 40
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def brace_pairs(text: str) -> dict[int, int]:
    """Each '{' index mapped to its closing '}', in one pass (\\{ and \\} are literal, not grouping)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for j, c in enumerate(text):
        if c not in "{}" or (j > 0 and text[j - 1] == "\\"):
            continue
        if c == "{":
            stack.append(j)
        elif stack:
            pairs[stack.pop()] = j
    return pairs


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every \\boxed{...} / \\fbox{...} (and '\\boxed 5')."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    pairs = brace_pairs(text)
    found = []
    for m in _BOXED.finditer(text):
        j = m.end()
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            if j in pairs:
                found.append((m.start(), pairs[j] + 1, text[j + 1:pairs[j]].strip()))
        else:  # "\boxed 5": one whitespace-delimited token
            token = _BARE_TOKEN.match(text, m.end())
            if token:
                found.append((m.start(), token.end(), token.group(1)))
    return found


def _box_groups(text: str) -> Iterator[tuple[int, str]]:
    """(start of its last box, answer) per run of boxes that only separators divide."""
    group: list[str] = []
    last_end = last_start = -1
    for start, end, content in _boxes(text):
        gap = text[last_end:start] if group else ""
        if group and not (len(gap) <= _MAX_BOX_GAP and _BOX_GAP.fullmatch(gap)):
            yield last_start, ", ".join(group)
            group = []
        if content and content not in group:
            group.append(content)
        last_start, last_end = start, end
    if group:
        yield last_start, ", ".join(group)


def boxed_answer(text: str) -> str | None:
    """The last run of boxes in ``text`` as one answer, or None without a (non-empty) box."""
    groups = list(_box_groups(text))
    return groups[-1][1] if groups else None


def strip_math_delimiters(s: str) -> str:
    """'$x$', '\\(x\\)', '\\[x\\]' -> 'x' (only when one pair encloses the whole string)."""
    s = s.strip()
    changed = True
    while changed:
        changed = False
        for left, right in _DELIMITERS:
            inner = s[len(left):len(s) - len(right)]
            if (len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right)
                    and left not in inner and right not in inner):
                s, changed = inner.strip(), True
                break
    return s


_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")
_IS = re.compile(r"\s(?:is|are|equals)\s")
_LEADING_NUMBER = re.compile(r"\s*(?:about\s+|approximately\s+)?(-?[0-9][0-9,]*(?:\.[0-9]+)?)")
_WORDS = re.compile(r"(?<![a-zA-Z\\])[a-zA-Z]{3,}")
_MAX_PROSE = 2000


def _math_segments(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None).strip() for m in _MATH.finditer(text)]


def _prose_answer(answer: str, last_number: bool = False) -> str | None:
    """The answer a sentence states ('The smallest $k$ is 12.' -> '12', 'So $y \\le 4$ is the
    solution.' -> 'y \\le 4'): after its first 'is', the first math or a leading number; else its last
    math; with ``last_number``, else its last number. None when the sentence states none."""
    answer = answer[-_MAX_PROSE:]
    is_ = _IS.search(answer)
    if is_:
        after = answer[is_.end():]
        math = _math_segments(after)
        if math:
            return math[0]
        number = _LEADING_NUMBER.match(after)
        if number:
            return number.group(1).rstrip(",")
    math = _math_segments(answer)
    if math:
        return math[-1]
    numbers = re.findall(r"-?[0-9]+(?:\.[0-9]+)?", answer) if last_number else []
    return numbers[-1] if numbers else None


def _has_prose(answer: str) -> bool:
    """Words outside math, \\text{} and commands: a sentence, not an answer."""
    bare = re.sub(r"\\text\{[^{}]*\}", " ", _MATH.sub(" ", answer))
    return len(_WORDS.findall(bare)) >= 2


def _clean(answer: str) -> str:
    """Drop the step tag 'ки', a Minerva ending, sentence-final periods and enclosing delimiters; a
    sentence gives the answer it states ('The smallest $k$ is 12.' -> '12')."""
    answer = answer.strip()
    if _has_prose(answer):
        answer = _prose_answer(answer) or answer
    if answer.endswith("ки"):
        answer = answer[:-2].rstrip()
    answer = answer.rstrip(". \t")
    if answer.endswith(_HOPE):
        answer = answer[:-len(_HOPE)].rstrip(". \t")
    return strip_math_delimiters(answer).rstrip(". \t")


def _after_marker(pattern: re.Pattern[str], next_line: bool) -> Callable[[str], Iterator[tuple[int, str]]]:
    def find(text: str) -> Iterator[tuple[int, str]]:
        for m in pattern.finditer(text):
            answer = m.group(1)
            if next_line and not answer.strip():
                following = _NEXT_LINE.match(text, m.end())
                answer = following.group(1) if following else ""
            yield m.start(), _clean(answer)
    return find


def _boxed(text: str) -> Iterator[tuple[int, str]]:
    for start, answer in _box_groups(text):
        yield start, _clean(answer)


_FINDERS: dict[str, Callable[[str], Iterator[tuple[int, str]]]] = {
    "answer_is": _after_marker(_ANSWER_IS, next_line=False),
    "final_answer": _after_marker(_FINAL_ANSWER, next_line=True),
    "boxed": _boxed,
    "hashes": _after_marker(_HASHES, next_line=False),
}


def check_markers(markers: tuple[str, ...]) -> None:
    """Raise ValueError naming any unknown marker (or none at all)."""
    if not markers:
        raise ValueError(f"no answer markers given; choose from {MARKERS}")
    unknown = [m for m in markers if m not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown answer marker(s) {unknown}; choose from {MARKERS}")


def last_sentence_answer(text: str) -> str | None:
    """The answer the last sentence of ``text`` states, without a marker: after its first 'is', the
    first math or number; else its last math; else its last number (None if it has neither)."""
    lines = [line for line in text[-_MAX_PROSE:].splitlines() if line.strip()]
    if not lines:
        return None
    sentences = [p for p in re.split(r"(?<=[.!?])\s+(?=[A-Z\\$])", lines[-1]) if p.strip()]
    found = _prose_answer(sentences[-1], last_number=True) if sentences else None
    return _clean(found) if found else None


def extract_answer(text: str | None, markers: tuple[str, ...] = MARKERS, last_sentence: bool = False) -> str | None:
    """The final answer ``text`` states with any of ``markers`` (the last one wins), else None; with
    ``last_sentence`` (the grader's reading of a whole solution), a text without a marker answers
    what its last sentence states (``last_sentence_answer``)."""
    if not text:
        return None
    best: tuple[int, str] | None = None
    for kind in markers:
        for pos, answer in _FINDERS[kind](text):
            if answer and (best is None or pos >= best[0]):
                best = (pos, answer)
    if best is None and last_sentence:
        return last_sentence_answer(text)
    return best[1] if best else None
