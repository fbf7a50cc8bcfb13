"""Problem sets for the scaling experiments: typed records, strict loaders, slicing.

Loaders fail loudly (``DatasetError`` naming file, line and field) rather than skip
lines, because a silently shorter benchmark changes every accuracy number.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from treesearch.builtin.task import on_gold_path
from treesearch.jsonl import read_objects
from treesearch.registry import Registry

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED: dict[str, Path] = {
    "gsm8k": DATA_DIR / "gsm8k_test.jsonl",
    "math500": DATA_DIR / "math500_test.jsonl",
}


class DatasetError(ValueError):
    """A data file that cannot be read as the expected problem format."""


@dataclass(frozen=True)
class Problem:
    """One benchmark question with its gold final answer (kept as given, not normalized further)."""

    id: str
    question: str
    answer: str
    level: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False)  # hash by the other fields


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, JSON object) for each non-blank line."""
    return read_objects(path, DatasetError)


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], path: Path, lineno: int) -> Any:
    """Fetch a required field and check its type, with a message a person can act on."""
    if name not in obj:
        raise DatasetError(f"{path}:{lineno}: missing field {name!r}")
    value = obj[name]
    # bool is an int subclass; a level of `true` is a data error, not level 1.
    if isinstance(value, bool) or not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(f"{path}:{lineno}: field {name!r} must be {want}, got {type(value).__name__}")
    return value


def _gsm8k_final(solution: str, path: Path, lineno: int) -> str:
    """The text after the last '#### ', thousands separators dropped (GSM8K writes '1,600')."""
    if "####" not in solution:
        raise DatasetError(f"{path}:{lineno}: field 'answer' has no '####' final-answer marker (read as GSM8K, whose "
                           "answers end in '#### <number>'; for a plain final answer map the file's fields in the "
                           "config: dataset: {name: FILE, fields: {question: question, answer: answer}})")
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise DatasetError(f"{path}:{lineno}: field 'answer' has an empty final answer after '####'")
    return final


def load_gsm8k(path: str | Path) -> list[Problem]:
    """GSM8K lines {question, answer}; id is 'gsm8k/<line>' since the file has no ids."""
    path = Path(path)
    out = []
    for lineno, obj in _records(path):
        question = _field(obj, "question", str, path, lineno)
        solution = _field(obj, "answer", str, path, lineno)
        out.append(Problem(id=f"gsm8k/{lineno}", question=question,
                           answer=_gsm8k_final(solution, path, lineno), meta={"solution": solution}))
    return out


def load_math500(path: str | Path) -> list[Problem]:
    """MATH500 lines {problem, solution, answer, subject, level, unique_id}."""
    path = Path(path)
    out = []
    for lineno, obj in _records(path):
        get = lambda name, kind: _field(obj, name, kind, path, lineno)  # noqa: E731
        level = get("level", int)
        if not 1 <= level <= 5:
            raise DatasetError(f"{path}:{lineno}: field 'level' must be 1..5, got {level}")
        out.append(Problem(id=get("unique_id", str), question=get("problem", str), answer=get("answer", str),
                           level=level, meta={"subject": get("subject", str), "solution": get("solution", str)}))
    return out


def load_jsonl(path: str | Path, question_field: str, answer_field: str,
               id_field: str | None = None, level_field: str | None = None) -> list[Problem]:
    """Any JSONL with a question and a final answer; numeric answers are accepted and stringified."""
    path = Path(path)
    out = []
    for lineno, obj in _records(path):
        answer = _field(obj, answer_field, (str, int, float), path, lineno)
        pid = str(_field(obj, id_field, (str, int), path, lineno)) if id_field else f"{path.stem}/{lineno}"
        level = _field(obj, level_field, int, path, lineno) if level_field else None
        used = {question_field, answer_field, id_field, level_field}
        out.append(Problem(id=pid, question=_field(obj, question_field, str, path, lineno), answer=str(answer),
                           level=level, meta={k: v for k, v in obj.items() if k not in used}))
    return out


def select(problems: Sequence[Problem], start: int = 0, limit: int | None = None,
           shuffle_seed: int | None = None) -> list[Problem]:
    """Shuffle (seeded, so runs are comparable) then slice [start, start+limit)."""
    if start < 0 or (limit is not None and limit < 0):
        raise ValueError(f"start and limit must be non-negative, got start={start}, limit={limit}")
    items = list(problems)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(items)
    end = None if limit is None else start + limit
    return items[start:end]


def _builtin(n: int = 500, levels: list[int] | None = None) -> list[Problem]:
    """The built-in arithmetic task's fixed test split (options: ``n`` problems, ``levels``)."""
    from treesearch.builtin import task

    kw = {"levels": tuple(levels)} if levels else {}
    return [Problem(id=p.id, question=p.question, answer=p.answer, level=p.level) for p in task.test_split(n, **kw)]


@dataclass(frozen=True)
class NamedDataset:
    """A dataset configs may name: its loader (``load(**options)`` -> problems, sliced by
    ``load_dataset``) and the grader a config's ``grader: auto`` means for it."""

    load: Callable[..., list[Problem]]
    grader: str = "math"  # "math" (symbolic equivalence), "exact" (normalized strings) or another grader's name
    step_checker: Callable[[str, Sequence[str]], Sequence[bool]] | None = None  # exact per-step verdicts, if any


#: Named datasets; an import path ``pkg.mod:loader`` names a loader (its ``grader`` attribute, if any, is its
#: ``auto`` grader).
_REGISTRY: Registry[NamedDataset] = Registry(
    "dataset", wrap=lambda load: load if isinstance(load, NamedDataset) else
    NamedDataset(load, getattr(load, "grader", "math")))
_REGISTRY.add("builtin", NamedDataset(_builtin, grader="exact", step_checker=on_gold_path))  # integer answers: string equality is exact
_REGISTRY.add("gsm8k", NamedDataset(lambda: load_gsm8k(SHIPPED["gsm8k"])))
_REGISTRY.add("math500", NamedDataset(lambda: load_math500(SHIPPED["math500"])))


def register_dataset(name: str, grader: str = "math", *, overwrite: bool = False) -> Callable:
    """Decorator: a loader ``fn(**options) -> list[Problem]`` configs can name as ``dataset: {name: NAME}``
    (from a plug-in module: ``plugins:`` in the config, or ``--plugin``); ``grader`` is what
    ``grader: auto`` means for it."""
    def add(load: Callable[..., list[Problem]]) -> Callable[..., list[Problem]]:
        _REGISTRY.add(name, NamedDataset(load, grader=grader), overwrite=overwrite)
        return load

    return add


def available_datasets() -> list[str]:
    return _REGISTRY.names()


def named(name: str) -> NamedDataset | None:
    """The dataset registered as ``name`` or named by import path; None for anything else (a file path)."""
    key = str(name)
    if key in _REGISTRY.names() or (":" in key and not Path(key).is_file()):
        try:
            return _REGISTRY.get(key)
        except ValueError as e:  # the registry's message names the dataset
            raise DatasetError(str(e)) from None
    return None


def default_grader(name: str) -> str:
    """What ``grader: auto`` means for a dataset: its registered grader, else "math" (a path)."""
    entry = named(name)
    return entry.grader if entry is not None else "math"


def _load_path(path: Path) -> list[Problem]:
    """Guess the format of a user-supplied file from its first record's keys."""
    for _, obj in _records(path):
        if {"problem", "unique_id", "level"} <= obj.keys():
            return load_math500(path)
        if {"question", "answer"} <= obj.keys():
            return load_gsm8k(path)
        break
    raise DatasetError(f"{path}: cannot tell the format; use load_jsonl with explicit field names")


def load_dataset(name_or_path: str | Path, start: int = 0, limit: int | None = None,
                 shuffle_seed: int | None = None, options: dict[str, Any] | None = None) -> list[Problem]:
    """A named dataset ('builtin', 'gsm8k', 'math500'; ``options`` go to its loader) or a
    MATH500/GSM8K-format JSONL by path."""
    key = str(name_or_path)
    entry = named(key)
    if entry is not None:
        try:
            problems = entry.load(**(options or {}))
        except TypeError as e:
            raise DatasetError(f"dataset {key!r} does not take options {sorted(options or {})}: {e}") from None
    elif options:
        raise DatasetError(f"dataset {key!r}: options {sorted(options)} apply to named datasets only")
    elif Path(key).is_file():
        problems = _load_path(Path(key))
    else:
        raise DatasetError(f"unknown dataset {key!r}: not one of {available_datasets()}, not an import path "
                           "'pkg.mod:loader' and not a file")
    return select(problems, start=start, limit=limit, shuffle_seed=shuffle_seed)
