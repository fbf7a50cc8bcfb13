"""Verifier benchmarks in their published formats: read ProcessBench / PRMBench, score, measure.

ProcessBench (Zheng et al. 2024; QwenLM/ProcessBench, ``dataset/<split>.json``): one JSON array
per split, or the same objects as JSON Lines (both are read, told apart by the first character).
Each object has ``problem``, ``steps`` (list of strings) and ``label``, the index of the earliest
wrong step or -1 when every step is right; steps after the first error carry no verdict. Its
metric: the PRM's predicted first error (the first step scored below a threshold, or -1) must
equal the label; accuracy on the erroneous and on the correct chains, and their harmonic mean (F1).

PRMBench (Song et al. 2025; ssmisya/PRMBench, ``mr_eval/tasks/prmtest_classified/data/*.jsonl``):
JSON Lines with ``modified_question``, ``modified_process`` (list of strings) and
``error_steps`` (1-based numbers of the wrong steps; every other step is right). Some published
entries point past the end of the chain; PRMBench's evaluator never reaches them, so they are
dropped here too and counted (``strict=True`` refuses them instead). Its PRMScore: the mean of the
F1 of right steps and the F1 of wrong steps at the threshold, pooled over the file's steps.

Both get the step-level ROC AUC over steps with a verdict. A record that is not in the format is
reported with file, line (or array item) and field, all of a file's bad records at once. Files
are read locally: no download.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from treesearch.jsonl import parse_lines
from treesearch.protocols import Chain, ProcessRewardModel

from .evaluation import roc_auc

FORMATS = ("processbench", "prmbench")


class BenchmarkFormatError(ValueError):
    """A line that is not in the format it was read as; the message names the file, line and field."""


@dataclass(frozen=True)
class JudgedChain:
    """A solution with a verdict per step (None: not judged) and its first wrong step (-1: none)."""

    question: str
    steps: tuple[str, ...]
    right: tuple[bool | None, ...]
    first_error: int
    source: str  # "file:line"


def _field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in obj:
        raise BenchmarkFormatError(f"{where}: field {name!r} is missing")
    value = obj[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise BenchmarkFormatError(f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _steps(obj: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    steps = _field(obj, name, list, where)
    if not steps:
        raise BenchmarkFormatError(f"{where}: field {name!r} is an empty list")
    for i, s in enumerate(steps):
        if not isinstance(s, str):
            raise BenchmarkFormatError(f"{where}: field {name!r}[{i}] must be str, got {type(s).__name__}")
    return tuple(steps)


def _processbench(obj: dict[str, Any], where: str) -> JudgedChain:
    question = _field(obj, "problem", str, where)
    steps = _steps(obj, "steps", where)
    label = _field(obj, "label", int, where)
    if not -1 <= label < len(steps):
        raise BenchmarkFormatError(f"{where}: field 'label' is {label}, outside -1..{len(steps) - 1} "
                                   f"(the index of the first wrong step, -1 for none)")
    right = tuple(True if i < label or label == -1 else (False if i == label else None) for i in range(len(steps)))
    return JudgedChain(question, steps, right, label, where)


def _prmbench(obj: dict[str, Any], where: str, strict: bool = False) -> tuple[JudgedChain, int]:
    """The chain and how many ``error_steps`` entries pointed outside it (dropped unless ``strict``)."""
    question = _field(obj, "modified_question", str, where)
    steps = _steps(obj, "modified_process", where)
    errors = _field(obj, "error_steps", list, where)
    for e in errors:
        if isinstance(e, bool) or not isinstance(e, int):
            raise BenchmarkFormatError(f"{where}: field 'error_steps' holds {e!r}; entries are 1-based step numbers")
    outside = [e for e in errors if not 1 <= e <= len(steps)]
    if outside and strict:
        raise BenchmarkFormatError(f"{where}: field 'error_steps' holds {outside[0]!r}; entries are 1-based step "
                                   f"numbers 1..{len(steps)} (without --strict such entries are dropped, as "
                                   "PRMBench's evaluator does)")
    wrong = {e - 1 for e in errors if 1 <= e <= len(steps)}
    return JudgedChain(question, steps, tuple(i not in wrong for i in range(len(steps))),
                       min(wrong) if wrong else -1, where), len(outside)


SHOWN_ERRORS = 5  # bad records quoted in a file's error; the rest are counted


@dataclass(frozen=True)
class BenchmarkFile:
    """A benchmark file as read: its chains and what was dropped on the way (PRMBench entries past the chain)."""

    path: Path
    fmt: str
    chains: list[JudgedChain]
    dropped_entries: int = 0
    records_with_dropped: int = 0


def _objects(path: Path) -> Iterator[tuple[str, Any]]:
    """("file:line" or "file: item k", object) from a JSON array (ProcessBench's published form) or JSON
    Lines (streamed), told apart by the first non-blank character."""
    with open(path, encoding="utf-8") as f:
        head = ""
        while not head.strip():
            chunk = f.read(64)
            if not chunk:
                break
            head += chunk
    first = head.strip()[:1]
    if first == "[":
        try:
            with open(path, encoding="utf-8") as f:
                items = json.load(f)
        except json.JSONDecodeError as e:
            raise BenchmarkFormatError(f"{path}:{e.lineno}: invalid JSON array ({e.msg} at column {e.colno})") from None
        for k, obj in enumerate(items, start=1):
            yield f"{path}: item {k}", obj
    elif first == "{":
        for lineno, obj in parse_lines(path, BenchmarkFormatError):
            yield f"{path}:{lineno}", obj
    elif first:
        raise BenchmarkFormatError(f"{path}: expected a JSON array of objects (ProcessBench's .json) or JSON Lines, "
                                   f"one object per line; the file starts with {first!r}")


def read_benchmark(path: str | Path, fmt: str, strict: bool = False) -> BenchmarkFile:
    """Every record of a ProcessBench or PRMBench file. Bad records are all collected: the error
    gives their count and the first few (file, line or item, field)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown benchmark format {fmt!r}; choose one of {list(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cannot read: no such file")
    chains, errors, dropped, records_dropped = [], [], 0, 0
    for where, obj in _objects(path):
        try:
            if isinstance(obj, Exception):
                raise obj
            if not isinstance(obj, dict):
                raise BenchmarkFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            if fmt == "prmbench":
                chain, outside = _prmbench(obj, where, strict)
                dropped += outside
                records_dropped += outside > 0
            else:
                chain = _processbench(obj, where)
            chains.append(chain)
        except BenchmarkFormatError as e:
            errors.append(str(e))
    if errors:
        more = f" (and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
        raise BenchmarkFormatError(f"{path}: {len(errors)} bad record(s) as {fmt}: "
                                   + "; ".join(errors[:SHOWN_ERRORS]) + more)
    if not chains:
        raise BenchmarkFormatError(f"{path}: no records")
    return BenchmarkFile(path, fmt, chains, dropped, records_dropped)


@dataclass(frozen=True)
class BenchmarkResult:
    """A file's metrics. Each benchmark's own are ``metrics``; a metric whose class is absent is NaN and
    ``notes`` says why; ``too_long``: chains past the PRM's context, left out (never scored truncated)."""

    fmt: str
    chains: int  # chains scored
    judged_steps: int
    step_auc: float  # NaN when the judged steps hold one class only
    error_accuracy: float  # first error found exactly, on chains with an error (ProcessBench)
    correct_accuracy: float  # no error flagged, on chains without one
    f1: float  # harmonic mean of the two (ProcessBench)
    prm_score: float  # mean of right-step F1 and wrong-step F1 (PRMBench)
    too_long: int = 0
    notes: tuple[str, ...] = ()

    def summary(self, threshold: float) -> str:
        """One line with this benchmark's metrics only."""
        if self.fmt == "processbench":
            metrics = (f"erroneous {_num(self.error_accuracy)}, correct {_num(self.correct_accuracy)}, "
                       f"F1 {_num(self.f1)}")
        else:
            metrics = f"PRMScore {_num(self.prm_score)}"
        line = (f"{self.chains} chains, {self.judged_steps} judged steps: {metrics}; step AUC {_num(self.step_auc)} "
                f"(threshold {threshold})")
        if self.too_long:
            line += f"; {self.too_long} chain(s) longer than the PRM's context left out"
        return line + "".join(f"\n  note: {n}" for n in self.notes)


def _num(x: float) -> str:
    return "NaN" if x != x else f"{x:.3f}"


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def fits_context(prm: ProcessRewardModel, chain: Chain) -> bool:
    """False when the PRM declares a context limit (``context_limit``, ``chain_length``) the chain exceeds."""
    limit = getattr(prm, "context_limit", None)
    length = getattr(prm, "chain_length", None)
    return limit is None or length is None or length(chain) <= limit


def evaluate_benchmark(prm: ProcessRewardModel, chains: Sequence[JudgedChain], threshold: float = 0.5,
                       batch_size: int = 64, fmt: str = "processbench") -> BenchmarkResult:
    """Score every chain once and compute the metrics (NaN, with a note, where a class is absent).
    Chains longer than the PRM's context are left out and counted: a truncated or extrapolated
    input would give a score of something else."""
    pairs = [(c, Chain(c.question, c.steps)) for c in chains]
    pairs = [(c, chain) for c, chain in pairs if fits_context(prm, chain)]
    fitting = [c for c, _ in pairs]
    too_long = len(chains) - len(fitting)
    scores: list[list[float]] = []
    for i in range(0, len(pairs), batch_size):
        scores.extend(r.scores for r in prm.score([chain for _, chain in pairs[i:i + batch_size]]))
    flat_s, flat_y = [], []
    hits = {True: [], False: []}
    tp = fp = fn = tn = 0  # "right" is the positive class
    for c, s in zip(fitting, scores):
        predicted = next((i for i, x in enumerate(s) if x < threshold), -1)
        hits[c.first_error == -1].append(predicted == c.first_error)
        for x, r in zip(s, c.right):
            if r is None:
                continue
            flat_s.append(x)
            flat_y.append(r)
            ok = x >= threshold
            tp += ok and r
            fp += ok and not r
            fn += (not ok) and r
            tn += (not ok) and not r
    notes = [] if fitting else ["no chain fits the PRM's context: nothing was scored"]
    auc = roc_auc(flat_s, flat_y) if any(flat_y) and not all(flat_y) else math.nan
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    err_acc, ok_acc = mean(hits[False]), mean(hits[True])
    f1 = _harmonic(err_acc, ok_acc) if hits[False] and hits[True] else math.nan
    if fmt == "processbench" and f1 != f1 and fitting:
        notes.append(f"no {'erroneous' if not hits[False] else 'correct'} chains: F1 is undefined")
    prm_score = (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2 if (tp + fn) and (tn + fp) else math.nan
    if fmt == "prmbench" and prm_score != prm_score and fitting:
        notes.append(f"no {'wrong' if not (tn + fp) else 'right'} steps: PRMScore (the mean of both classes' F1) "
                     "is undefined")
    if auc != auc and flat_y:
        notes.append("one class of steps only: step AUC is undefined")
    return BenchmarkResult(fmt, len(fitting), len(flat_y), auc, err_acc, ok_acc, f1, prm_score, too_long, tuple(notes))


def benchmark_averages(results: Sequence[BenchmarkResult]) -> list[str]:
    """The summary over several files: ProcessBench's average F1 over its splits (the paper's
    "Avg. F1") and the mean PRMScore over PRMBench files; NaN files are left out and counted."""
    lines = []
    for fmt, name, key in (("processbench", "F1", "f1"), ("prmbench", "PRMScore", "prm_score")):
        values = [getattr(r, key) for r in results if r.fmt == fmt]
        defined = [v for v in values if v == v]
        if len(values) >= 2:
            left = f" ({len(values) - len(defined)} undefined left out)" if len(defined) < len(values) else ""
            lines.append(f"\n{fmt}: mean {name} over {len(defined)} files {_num(sum(defined) / len(defined)) if defined else 'NaN'}"
                         + left)
    return lines
