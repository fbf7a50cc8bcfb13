"""Append-only JSON Lines records: write a chunk at a time, resume after a crash, merge shards.

One record per (problem, model, method, budget, seed). Why append-only with a torn-tail
repair: a sweep killed at any instant (SIGKILL, pre-emption) must lose at most the chunk
in flight, and a rerun must neither redo finished work nor trip over half a line.
Each process of a sharded run appends to its own ``records.rank<k>.jsonl``; readers take
the union of every ``records*.jsonl`` in the directory.

A record is a typed ``Record`` (its schema is the dataclass); ``to_json`` / ``from_json`` map
it to and from one JSON line, and records written by earlier versions still read.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from treesearch.jsonl import LineAppender
from treesearch.ledger import ComputeLedger

KEY_FIELDS = ("problem_id", "model", "method", "budget", "seed")
SCHEMA_VERSION = 1
Key = tuple
PASS_AT_N = "pass@n"  # the rule name for pass@n: some candidate is right (an upper bound for any voting rule)
_LEDGER_FIELDS = tuple(f.name for f in dataclasses.fields(ComputeLedger))
_LEDGER_DERIVED = ("paper_flops", "full_flops")  # written for readers of the raw JSON, recomputed on reading


class RecordsError(ValueError):
    """A records file damaged somewhere other than its last line."""


class RecordsWarning(UserWarning):
    """A torn last line (an interrupted write) was ignored or cut off."""


@dataclass(frozen=True)
class CandidateRecord:
    """One finished solution as stored: what voting and the report read of it."""

    answer: str | None
    correct: bool | None  # graded against the gold answer; None in records written before verdicts were kept
    step_scores: tuple[float, ...]
    num_tokens: int
    finish_reason: str
    sample: int  # index of the independent first step it grew from (the sample, for sampling)
    steps: tuple[str, ...] | None = None  # step text, only with store_steps
    chain: int | None = None  # the revision chain it belongs to (revisions only; written only then)
    confidence: float | None = None  # the policy's confidence in it (DeepConf only; written only then)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"answer": self.answer}
        if self.correct is not None:
            d["correct"] = self.correct
        d.update(step_scores=list(self.step_scores), num_tokens=self.num_tokens, finish_reason=self.finish_reason,
                 sample=self.sample)
        if self.steps is not None:
            d["steps"] = list(self.steps)
        if self.chain is not None:
            d["chain"] = self.chain
        if self.confidence is not None:
            d["confidence"] = self.confidence
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CandidateRecord:
        _known(d, cls, "candidate")
        steps = d.get("steps")
        return cls(answer=d["answer"], correct=d.get("correct"), step_scores=tuple(d["step_scores"]),
                   num_tokens=d["num_tokens"], finish_reason=d.get("finish_reason", ""), sample=d.get("sample", 0),
                   steps=None if steps is None else tuple(steps), chain=d.get("chain"),
                   confidence=d.get("confidence"))


@dataclass(frozen=True)
class Vote:
    """The answer a voting rule picked and whether it is right."""

    answer: str | None
    correct: bool


@dataclass(frozen=True)
class Derivation:
    """How a record was cut from a larger sampling run: its first ``budget`` samples of that run's."""

    budget: int  # the budget of the run it was cut from
    share: float  # the share of that run's generated tokens it keeps
    exact_paper_flops: bool  # False when the share had to be budget / big (token counts did not add up)


@dataclass(frozen=True)
class Record:
    """One (problem, model, method, budget, seed): its candidates, votes and compute.

    Fields with defaults may be absent from records written by earlier versions (and from
    hand-written fixtures); they read as the default.
    """

    problem_id: str
    model: str
    method: str
    budget: int
    seed: int
    problem_seed: int | None = None  # what the Runner seeded the problem with (treesearch.seeds.problem_seed)
    dataset: str = ""
    level: int | None = None
    gold: str = ""
    algorithm: str = ""  # as the config names it: a registry name or an import path
    params: Mapping[str, Any] = field(default_factory=dict)  # the algorithm's parameters, the budget's included
    candidates: tuple[CandidateRecord, ...] = ()
    votes: Mapping[str, Vote] = field(default_factory=dict)  # "majority" | "<rule>/<aggregation>" -> Vote
    pass_at_n: bool | None = None  # some candidate is right (written as "oracle_correct", the schema's first name)
    num_answered: int = 0  # candidates with an answer
    ledger: ComputeLedger = field(default_factory=ComputeLedger)
    wall_time: float = 0.0  # seconds from the problem's start to its finish inside its lock-step chunk
    derived_from: Derivation | None = None  # set when cut from a larger sampling run
    verifier: Mapping[str, Any] | None = None  # the PRM spec that scored it (None without one)
    parameter_count: str = "non_embedding"  # what N in its FLOPs is: "non_embedding", "total" or "configured"
    # where the policy's processed tokens come from: "model" (the backend counts its forward positions),
    # "server_usage" (a server's usage, its cached prompt tokens subtracted) or "server_usage_uncached"
    # (a server that reports no cached count: every prompt token counted)
    processed_source: str = "model"
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> Key:
        return (self.problem_id, self.model, self.method, self.budget, self.seed)

    def verdict(self, rule: str) -> bool | None:
        """Was the answer ``rule`` ("majority", "weighted/last", ..., or "pass@n": some candidate is right) picked right?
        None when the record has no such rule."""
        if rule == PASS_AT_N:
            return self.pass_at_n
        v = self.votes.get(rule)
        return None if v is None else bool(v.correct)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data, keys in the order records have always been written."""
        d = self.derived_from
        return {
            "schema": self.schema, "problem_id": self.problem_id, "model": self.model, "method": self.method,
            "budget": self.budget, "seed": self.seed, "problem_seed": self.problem_seed, "dataset": self.dataset,
            "level": self.level, "gold": self.gold, "algorithm": self.algorithm, "params": dict(self.params),
            "candidates": [c.to_json() for c in self.candidates],
            "votes": {k: {"answer": v.answer, "correct": v.correct} for k, v in self.votes.items()},
            "oracle_correct": self.pass_at_n, "num_answered": self.num_answered,
            "ledger": self.ledger.to_dict(), "wall_time": self.wall_time,
            "derived_from": None if d is None else {"budget": d.budget, "share": d.share,
                                                    "exact_paper_flops": d.exact_paper_flops},
            "verifier": None if self.verifier is None else dict(self.verifier),
            "parameter_count": self.parameter_count, "processed_source": self.processed_source,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Record:
        """A record from its JSON object; ValueError naming the first field that does not fit."""
        if not isinstance(d, Mapping):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        missing = [k for k in KEY_FIELDS if k not in d]
        if missing:
            raise ValueError(f"missing key fields {missing}")
        _known(d, cls, "record")
        for k, kind in (("problem_id", str), ("model", str), ("method", str), ("budget", int), ("seed", int)):
            if not isinstance(d[k], kind) or isinstance(d[k], bool):
                raise ValueError(f"field {k!r} must be {kind.__name__}, got {type(d[k]).__name__}")
        try:
            ledger = d.get("ledger") or {}
            unknown = sorted(set(ledger) - set(_LEDGER_FIELDS) - set(_LEDGER_DERIVED))
            if unknown:
                raise ValueError(f"unknown ledger fields {unknown}")
            derived = d.get("derived_from")
            values = {k: d[_FILE_KEYS.get(k, k)] for k in (
                "problem_seed", "dataset", "level", "gold", "algorithm", "params", "pass_at_n", "num_answered",
                "wall_time", "verifier", "parameter_count", "processed_source", "schema") if _FILE_KEYS.get(k, k) in d}
            return cls(**{k: d[k] for k in KEY_FIELDS}, **values,
                       candidates=tuple(CandidateRecord.from_json(c) for c in d.get("candidates", ())),
                       votes={k: Vote(v["answer"], v["correct"]) for k, v in d.get("votes", {}).items()},
                       ledger=ComputeLedger(**{k: ledger[k] for k in _LEDGER_FIELDS if k in ledger}),
                       derived_from=None if derived is None else Derivation(**derived))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed record: {type(e).__name__}: {e}") from None


#: Fields whose key in the file is an earlier name (the file format does not change with a rename).
_FILE_KEYS = {"pass_at_n": "oracle_correct"}


def _known(d: Mapping[str, Any], cls: type, what: str) -> None:
    unknown = sorted(set(d) - {_FILE_KEYS.get(f.name, f.name) for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}")


def records_file(directory: str | Path, rank: int = 0, world: int = 1) -> Path:
    """This process's file: records.jsonl alone, records.rank<k>.jsonl in a sharded run."""
    return Path(directory) / ("records.jsonl" if world == 1 else f"records.rank{rank}.jsonl")


def shard_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("records*.jsonl") if p.is_file())


def _scan(path: Path) -> tuple[list[Record], int, int]:
    """(complete records, bytes they span, file size). A last line that is unterminated or
    unparsable is torn; a bad line anywhere else is damage we must not paper over."""
    data = path.read_bytes()
    records: list[Record] = []
    pos = lineno = 0
    while pos < len(data):
        lineno += 1
        nl = data.find(b"\n", pos)
        if nl == -1:  # the write was cut before its newline
            break
        line = data[pos:nl]
        if line.strip():
            try:
                record = Record.from_json(json.loads(line))
            except ValueError as e:
                if data[nl + 1:].strip():
                    raise RecordsError(f"{path}:{lineno}: damaged record ({e}); fix or remove this line") from None
                break
            records.append(record)
        pos = nl + 1
    return records, pos, len(data)


def read_records(path: str | Path) -> list[Record]:
    """Every complete record of one file; a torn last line is ignored with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    records, good, size = _scan(path)
    if good < size:
        warnings.warn(f"{path}: ignoring a torn last line ({size - good} bytes, an interrupted write)",
                      RecordsWarning, stacklevel=2)
    return records


def repair(path: str | Path) -> int:
    """Cut a torn last line off so appends start on a fresh line; returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    _, good, size = _scan(path)
    if good < size:
        warnings.warn(f"{path}: cutting off a torn last line ({size - good} bytes) before appending",
                      RecordsWarning, stacklevel=2)
        with open(path, "r+b") as f:
            f.truncate(good)
    return size - good


class RecordWriter(LineAppender):
    """Appends records a chunk at a time (``LineAppender``), after cutting a torn last line off."""

    def __init__(self, path: str | Path, fsync: bool = False):
        repair(path)
        super().__init__(path, fsync)

    def write(self, records: Iterable[Record]) -> int:
        return self.write_lines([_line(r) for r in records])


def _line(record: Record) -> str:
    return json.dumps(record.to_json(), ensure_ascii=False) + "\n"


def iter_dir(directory: str | Path) -> Iterator[Record]:
    for path in shard_files(directory):
        yield from read_records(path)


def load_dir(directory: str | Path) -> list[Record]:
    """The union of all shard files, one record per key (the first seen if two runs overlapped)."""
    seen: dict[Key, Record] = {}
    dups = 0
    for rec in iter_dir(directory):
        k = rec.key
        if k in seen:
            dups += 1
        else:
            seen[k] = rec
    if dups:
        warnings.warn(f"{directory}: {dups} duplicate records (same problem, model, method, budget, seed) "
                      f"ignored; were two runs writing here at once?", RecordsWarning, stacklevel=2)
    return list(seen.values())


def merge(directory: str | Path, out: str | Path) -> int:
    """Write the merged records of every shard to one file; returns how many.

    Name ``out`` outside ``directory`` or not ``records*.jsonl``, or readers count it twice."""
    records = load_dir(directory)
    tmp = Path(str(out) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(_line(r))
    os.replace(tmp, out)
    return len(records)
