"""What the analysis must know of each method, as its registry entries declare it: the algorithm's
budget parameter, whether it searches with a PRM, whether its candidates are independent draws,
and whether its verifier is a reference verifier (the exact checker, noisy or not) with what error.

The sweep writes them beside the records (``facts.json``), so the report reads facts instead of
importing algorithm or PRM code, and a study whose plug-ins are not importable where it is reported
still reports. Records written before this file existed, and records built in memory, get their
facts from the registries (:func:`facts_for`), the one place that asks them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

FACTS = "facts.json"
BASELINE_ALGORITHM = "sampling"  # every method is measured against the study's sampling method (with a real verifier)


@dataclass(frozen=True)
class MethodFacts:
    algorithm: str
    budget_param: str | None = None
    needs_prm: bool = False
    independent_samples: bool = False  # its candidates are independent draws: their hit rate estimates pass@1
    reference_error: float | None = None  # a reference verifier's error rate (the exact checker: 0); None: a real PRM
    reference_flip: str = "both"  # which verdicts its errors flip ("right": only right steps called wrong)

    @property
    def reference(self) -> bool:
        """Scored by a reference verifier: not a setting a user could run, so left out of choices and findings."""
        return self.reference_error is not None


def declared(algorithm: str, verifier: Mapping[str, Any] | None, budget_param: str | None = None) -> MethodFacts:
    """The facts the registries declare for ``algorithm`` scored by ``verifier`` (a flat PRM config).
    An algorithm or PRM this process cannot import declares nothing (defaults)."""
    from treesearch.algorithms import algorithm_class, independent_samples

    try:
        cls = algorithm_class(algorithm)
    except ValueError:
        return MethodFacts(algorithm, budget_param)
    facts = MethodFacts(algorithm, budget_param if budget_param is not None else cls.budget_param,
                        bool(cls.needs_prm), independent_samples(cls))
    if verifier:
        from reward_models.registry import reference_of

        try:
            ref = reference_of(verifier)
        except (ValueError, TypeError):
            ref = None
        if ref is not None:
            facts = MethodFacts(**{**asdict(facts), "reference_error": float(ref.error_rate),
                                   "reference_flip": ref.flip})
    return facts


def study_facts(cfg: Any) -> dict[str, MethodFacts]:
    """Every method of a study config (``StudyConfig``), by name."""
    out = {}
    for m in cfg.methods:
        prm = cfg.verifier(m)
        out[m.name] = declared(m.algorithm, prm.to_plain() if prm is not None else None, m.budget_key)
    return out


def write_facts(results: str | Path, facts: Mapping[str, MethodFacts]) -> None:
    """Add ``facts`` to the directory's file (a resumed study may add methods), atomically."""
    path = Path(results) / FACTS
    merged = {**(read_facts(results) or {}), **facts}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({name: asdict(f) for name, f in sorted(merged.items())}, indent=1) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def read_facts(results: str | Path) -> dict[str, MethodFacts] | None:
    """The directory's facts by method, or None when it has no file. ValueError naming the file if malformed."""
    path = Path(results) / FACTS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: MethodFacts(**f) for name, f in data.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a facts file ({type(e).__name__}: {e})") from None


def facts_for(records: Iterable[Any], known: Mapping[str, MethodFacts] | None = None) -> dict[str, MethodFacts]:
    """Facts for every method in ``records``: ``known`` (a facts file's) where it has them, else what the
    registries declare for the record's algorithm and verifier."""
    out = dict(known or {})
    for r in records:
        if r.method not in out:
            out[r.method] = declared(r.algorithm, r.verifier)
    return out


def method_for(facts: Mapping[str, MethodFacts], algorithm: str, order: Sequence[str] = ()) -> str | None:
    """The study's method running ``algorithm`` with a real verifier (first in config order, else by name)."""
    names = [m for m, f in facts.items() if f.algorithm == algorithm and not f.reference]
    ranked = sorted(names, key=lambda m: (list(order).index(m) if m in order else len(order), m))
    return ranked[0] if ranked else None
