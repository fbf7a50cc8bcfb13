"""Verifier benchmarks in the public formats: read ProcessBench / PRMBench JSON Lines, score, measure.

ProcessBench (Zheng et al. 2024): one object per line with ``problem``, ``steps`` (list of
strings) and ``label``, the index of the earliest wrong step or -1 when every step is right.
Steps after the first error carry no verdict. Its metric: the PRM's predicted first error
(the first step scored below a threshold, or -1) must equal the label; accuracy on the
erroneous and on the correct chains, and their harmonic mean (F1).

PRMBench (Song et al. 2025): ``modified_question``, ``modified_process`` (list of strings) and
``error_steps`` (1-based indices of the wrong steps; every other step is right). Its
PRMScore: the mean of the F1 of right steps and the F1 of wrong steps at the threshold.

Both get the step-level ROC AUC over steps with a verdict. Files are read locally: no download.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from treesearch.jsonl import read_objects
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


def _prmbench(obj: dict[str, Any], where: str) -> JudgedChain:
    question = _field(obj, "modified_question", str, where)
    steps = _steps(obj, "modified_process", where)
    errors = _field(obj, "error_steps", list, where)
    for e in errors:
        if isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= len(steps):
            raise BenchmarkFormatError(f"{where}: field 'error_steps' holds {e!r}; entries are 1-based step "
                                       f"numbers 1..{len(steps)}")
    wrong = {e - 1 for e in errors}
    return JudgedChain(question, steps, tuple(i not in wrong for i in range(len(steps))),
                       min(wrong) if wrong else -1, where)


_READERS = {"processbench": _processbench, "prmbench": _prmbench}


def read_benchmark(path: str | Path, fmt: str) -> list[JudgedChain]:
    """Every line of a ProcessBench or PRMBench JSONL file (blank lines skipped)."""
    if fmt not in _READERS:
        raise ValueError(f"unknown benchmark format {fmt!r}; choose one of {list(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: cannot read: no such file")
    out = [_READERS[fmt](obj, f"{path}:{lineno}") for lineno, obj in read_objects(path, BenchmarkFormatError)]
    if not out:
        raise BenchmarkFormatError(f"{path}: no records")
    return out


@dataclass(frozen=True)
class BenchmarkResult:
    chains: int
    judged_steps: int
    step_auc: float  # NaN when the judged steps hold one class only
    error_accuracy: float  # first error found exactly, on chains with an error (ProcessBench)
    correct_accuracy: float  # no error flagged, on chains without one
    f1: float  # harmonic mean of the two (ProcessBench)
    prm_score: float  # mean of right-step F1 and wrong-step F1 (PRMBench)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def evaluate_benchmark(prm: ProcessRewardModel, chains: Sequence[JudgedChain], threshold: float = 0.5,
                       batch_size: int = 64) -> BenchmarkResult:
    """Score every chain once and compute both benchmarks' metrics (NaN where a class is absent)."""
    scores: list[list[float]] = []
    for i in range(0, len(chains), batch_size):
        part = chains[i:i + batch_size]
        scores.extend(r.scores for r in prm.score([Chain(c.question, c.steps) for c in part]))
    flat_s, flat_y = [], []
    hits = {True: [], False: []}
    tp = fp = fn = tn = 0  # "right" is the positive class
    for c, s in zip(chains, scores):
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
    auc = roc_auc(flat_s, flat_y) if any(flat_y) and not all(flat_y) else float("nan")
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    err_acc, ok_acc = mean(hits[False]), mean(hits[True])
    f1 = _harmonic(err_acc, ok_acc) if hits[False] and hits[True] else float("nan")
    return BenchmarkResult(len(chains), len(flat_y), auc, err_acc, ok_acc, f1,
                           (_f1(tp, fp, fn) + _f1(tn, fn, fp)) / 2)
