"""The study schema: what a YAML config may say, as typed dataclasses, checked strictly.

YAML is mapped onto these dataclasses by ``treesearch.config_mapping`` (unknown keys and wrong
types fail naming the file and the dotted key), ``validate`` checks what types cannot (names,
ranges, what each algorithm takes), and the resolved config is written back as resolved.yaml.
The same dataclasses are built directly from Python (the built-in demo does), and ``validate``
runs on both paths. Building what a config describes (policies, PRMs, algorithms, problems,
graders) is ``experiments.builders``' job.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from treesearch.algorithms import algorithm_class, independent_samples, make_algorithm, parameters
from treesearch.backends import DEFAULT_BACKEND
from treesearch.config_mapping import ConfigError, describe, error, from_plain, to_plain
from treesearch.prompts import PromptFormat
from treesearch.runner import SearchLimits
from treesearch.step_format import PRESETS
from treesearch.voting import AGGREGATIONS, RULES

from .grading.policy import GradingPolicy


DTYPES = ("float32", "float16", "bfloat16", "auto")
AUTO = "auto"


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------
@dataclass
class PolicyConfig:
    """One policy model. ``backend`` names a ``treesearch.backends`` entry ("transformers", the
    default; "vllm"; "openai" for served models) or a factory's import path ``pkg.mod:factory``
    (Python-built configs may pass the function itself), called as ``factory(PolicySpec)``;
    ``options`` are the backend's own settings (its options dataclass checks them)."""

    name: str
    path: str | None = None
    backend: str = DEFAULT_BACKEND
    dtype: str = "float32"
    device: str = "cpu"  # "auto"/"cuda"/"cuda:+k": this process's (k-th) GPU, see builders.resolve_device
    num_parameters: float | None = None  # overrides the count read from the model
    parameter_count: str = "non_embedding"  # N read from the model: "non_embedding" (Kaplan) or "total" (the paper)
    step_format: str = "paper"
    prompt_template: str = "{question}\n"
    chat_template: bool = False
    system_prompt: str | None = None
    revision_prompt: str = PromptFormat.revision  # the request after each earlier attempt (revisions)
    temperature: float = 1.0
    top_p: float = 1.0
    max_batch_rows: int = 64  # kept for older configs: an option of the backends that take it (config_keys)
    reuse_kv: bool = True  # ditto
    trust_remote_code: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # the backend's options (treesearch.backends)

    @property
    def parameter_convention(self) -> str:
        """What N in this policy's FLOPs is: the convention read from the model, or "configured"."""
        return "configured" if self.num_parameters is not None else self.parameter_count


@dataclass
class FieldMap:
    """Field names of a custom JSONL dataset."""

    question: str = "question"
    answer: str = "answer"
    id: str | None = None
    level: str | None = None


@dataclass
class DatasetConfig:
    """Problems: a named set (``experiments.datasets.available_datasets()``: "gsm8k", "math500", "builtin";
    an import path ``pkg.mod:loader`` names a plug-in's loader)
    or a JSONL path.

    ``grader`` decides correctness and answer equivalence in voting: "math" (the safe
    symbolic grader), "exact" (normalized string equality), "auto" (the grader the named
    dataset registers: exact for the built-in task; math for the others and for paths),
    "math_verify" (the optional Math-Verify, for cross-checks) or an import path ``pkg.mod:fn``.
    ``grading`` (a mapping: ``decimal_comma``, ``ordered_lists``; docs/grading.md) sets the math
    grader's policy for answers whose spelling leaves the meaning open.
    """

    name: str = "math500"
    fields: FieldMap | None = None  # only for a path; omitted = guess MATH500/GSM8K format
    start: int = 0
    limit: int | None = None
    shuffle_seed: int | None = None
    grader: str = AUTO
    options: dict[str, Any] = field(default_factory=dict)  # built-in task: n (default 500), levels
    grading: GradingPolicy | None = None  # the math grader's policy (decimal_comma, ordered_lists); None: the default


@dataclass
class MethodConfig:
    """One search method: a label, an algorithm, fixed params and the budgets to sweep.

    ``algorithm`` is a registry name (``treesearch.algorithms.available_algorithms()``) or the import path
    of a class (``my_pkg.search:MySearch``) that declares ``budget_param`` and ``needs_prm``.
    ``budget_param`` is the parameter a budget sets ("auto": the one the algorithm declares,
    e.g. n for sampling and beam, width for REBASE, expansions for MCTS, none for greedy).
    ``subsample`` (algorithms with independent samples: sampling) runs the largest budget once
    and derives the smaller ones from its first b samples.
    """

    name: str
    algorithm: str
    params: dict[str, Any] = field(default_factory=dict)
    budget_param: str | None = AUTO
    budgets: list[int] = field(default_factory=lambda: [1])
    subsample: bool = False
    budget_params: dict[int, dict[str, Any]] = field(default_factory=dict)  # per-budget overrides (MCTS root width)
    model_budgets: dict[str, list[int]] = field(default_factory=dict)  # per-policy budgets replacing ``budgets``
    models: list[str] | None = None  # run for these policies only (default: every policy)
    prm: PRMConfig | None = None  # this method's verifier (search and voting), replacing the study's

    def __post_init__(self) -> None:
        self.prm = prm_config(self.prm, "prm")

    def budgets_for(self, model: str) -> list[int]:
        if self.models is not None and model not in self.models:
            return []
        return list(self.model_budgets.get(model, self.budgets))

    @property
    def budget_key(self) -> str | None:
        """The parameter a budget sets (resolving "auto" through the algorithm class)."""
        return algorithm_class(self.algorithm).budget_param if self.budget_param == AUTO else self.budget_param

    def params_for(self, budget: int) -> dict[str, Any]:
        params = {**self.params, **self.budget_params.get(budget, {})}
        key = self.budget_key
        return {**params, key: budget} if key else params


@dataclass
class PRMConfig:
    """The verifier: a PRM type (a ``reward_models`` registry name or ``pkg.mod:factory``) and its options.

    ``path`` and ``device`` are the harness's too (``check`` looks for the path; "auto"/"cuda:+k"
    devices follow the shard); every other key is the PRM's own option, given to its factory, whose
    entry checks it. In YAML all keys sit side by side: ``prm: {type: noisy_oracle, flip_rate: 0.3}``.
    """

    type: str
    path: str | None = None
    device: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_plain(cls, value: Any, key: str = "prm", source: str = "<config>") -> PRMConfig:
        """The flat YAML form (``{type, path, device, **options}``), each known key typed."""
        if not isinstance(value, Mapping):
            raise error(source, key, f"expected a mapping with a 'type' key, got {describe(value)}")
        if "type" not in value:
            raise error(source, f"{key}.type", "required (a reward_models registry name or 'pkg.mod:factory')")
        known = {k: from_plain(tp, value.get(k), f"{key}.{k}", source)
                 for k, tp in (("type", str), ("path", str | None), ("device", str | None))}
        return cls(**known, options={k: v for k, v in value.items() if k not in known})

    def to_plain(self) -> dict[str, Any]:
        """The flat form: what ``reward_models.load_prm`` takes and a record's ``verifier`` keeps."""
        return {"type": self.type, **({"path": self.path} if self.path is not None else {}),
                **({"device": self.device} if self.device is not None else {}), **self.options}


def prm_config(value: PRMConfig | Mapping[str, Any] | None, key: str = "prm") -> PRMConfig | None:
    """A Python-built config may give a PRM as its flat mapping."""
    return PRMConfig.from_plain(value, key, "<config>") if isinstance(value, Mapping) else value


@dataclass
class VotingConfig:
    """Rules and step-score aggregations recorded for every record (majority ignores the aggregation)."""

    rules: list[str] = field(default_factory=lambda: list(RULES))
    aggregations: list[str] = field(default_factory=lambda: ["last"])

    def keys(self) -> list[tuple[str, str, str]]:
        """(record key, rule, aggregation) for every combination, e.g. ("weighted/last", "weighted", "last")."""
        out = []
        for rule in self.rules:
            if rule == "majority":
                out.append(("majority", rule, self.aggregations[0]))
            else:
                out.extend((f"{rule}/{agg}", rule, agg) for agg in self.aggregations)
        return out


@dataclass
class StudyConfig:
    """A whole sweep: policies x methods x budgets x seeds over one dataset; one PRM unless a method names its own."""

    policies: list[PolicyConfig]
    methods: list[MethodConfig]
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    prm: PRMConfig | None = None  # the verifier of every method that names none; "auto" devices follow the shard
    seeds: list[int] = field(default_factory=lambda: [0])
    limits: SearchLimits = field(default_factory=SearchLimits)
    voting: VotingConfig = field(default_factory=VotingConfig)
    output: str = "runs/study"
    problems_per_chunk: int = 32
    gpus_per_process: int = 1  # GPUs each process owns; devices "cuda:+k" pick the k-th of them
    store_steps: bool = False  # keep every candidate's step text in the records (large files)
    store_trees: bool | list[str | int] = False  # keep search trees in trees*.jsonl: all (true), none, or these problem ids
    fsync: bool = False  # os.fsync after each chunk (survives power loss, not only process kill)
    description: str = ""
    setup: str = ""  # the command that creates the local files the study points at, shown when they are missing
    plugins: list[str] = field(default_factory=list)  # modules or .py files (relative to the config) to import first

    def __post_init__(self) -> None:
        self.prm = prm_config(self.prm, "prm")

    def verifier(self, method: MethodConfig) -> PRMConfig | None:
        """The PRM that scores ``method``: its own, or the study's."""
        return method.prm if method.prm is not None else self.prm


# ---------------------------------------------------------------------------------------------
# YAML <-> dataclasses
# ---------------------------------------------------------------------------------------------
def load_config(path: str | Path) -> StudyConfig:
    """Read, map and validate a YAML study config."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    return config_from_dict(data, source=str(path), base=path.parent)


def config_from_dict(data: Any, source: str = "<config>", base: str | Path = ".") -> StudyConfig:
    """Map and validate; the config's plug-ins are imported first, so the names they register validate."""
    from treesearch.imports import load_plugins

    cfg = from_plain(StudyConfig, data, "", source)
    try:
        load_plugins(cfg.plugins, base)
    except ValueError as e:
        raise ConfigError(f"{source}: plugins: {e}") from None
    cfg.plugins = [str((Path(base) / p).resolve()) if p.endswith(".py") else p for p in cfg.plugins]
    validate(cfg, source)
    return cfg


def config_to_dict(cfg: StudyConfig) -> dict[str, Any]:
    """Plain YAML-safe data; Python objects (callables) become their import path."""
    return to_plain(cfg)


def dump_config(cfg: StudyConfig, path: str | Path) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)  # never a half-written resolved.yaml


# ---------------------------------------------------------------------------------------------
# Meaning checks (YAML and Python-built configs alike)
# ---------------------------------------------------------------------------------------------
def validate(cfg: StudyConfig, source: str = "<config>") -> None:
    """Check what types cannot: names, ranges, registry names, parameters each budget builds."""
    def fail(key: str, msg: str) -> None:
        raise error(source, key, msg)

    if not cfg.policies:
        fail("policies", "needs at least one policy")
    _unique([p.name for p in cfg.policies], "policies", "name", fail)
    for i, p in enumerate(cfg.policies):
        k = f"policies[{i}]"
        if p.step_format not in PRESETS:
            fail(f"{k}.step_format", f"unknown preset {p.step_format!r}; choose one of {sorted(PRESETS)}")
        if p.dtype not in DTYPES:
            fail(f"{k}.dtype", f"unknown dtype {p.dtype!r}; choose one of {list(DTYPES)}")
        if p.temperature < 0:
            fail(f"{k}.temperature", f"must be >= 0, got {p.temperature}")
        if not 0 < p.top_p <= 1:
            fail(f"{k}.top_p", f"must be in (0, 1], got {p.top_p}")
        if p.parameter_count not in ("non_embedding", "total"):
            fail(f"{k}.parameter_count", f"unknown convention {p.parameter_count!r}; choose non_embedding or total")
        if p.num_parameters is not None and p.num_parameters <= 0:
            fail(f"{k}.num_parameters", f"must be > 0, got {p.num_parameters}")
        if p.max_batch_rows < 1:
            fail(f"{k}.max_batch_rows", f"must be >= 1, got {p.max_batch_rows}")
    if not cfg.methods:
        fail("methods", "needs at least one method")
    _unique([m.name for m in cfg.methods], "methods", "name", fail)
    names = {p.name for p in cfg.policies}
    for i, m in enumerate(cfg.methods):
        _validate_method(m, f"methods[{i}]", fail, source)
        for model, budgets in m.model_budgets.items():
            if model not in names:
                fail(f"methods[{i}].model_budgets.{model}", f"no policy named {model!r}; policies: {sorted(names)}")
            _validate_method(dataclasses.replace(m, budgets=budgets, model_budgets={}),
                             f"methods[{i}].model_budgets.{model}", fail, source)
        if algorithm_class(m.algorithm).needs_prm and cfg.prm is None and m.prm is None:
            fail("prm", f"method {m.name!r} ({m.algorithm}) searches with a PRM; give one "
                        f"(prm: {{type: NAME, path: DIR}}, or the method's own prm)")
        for model in m.models or []:
            if model not in names:
                fail(f"methods[{i}].models", f"no policy named {model!r}; policies: {sorted(names)}")
    for r in cfg.voting.rules:
        if r not in RULES:
            fail("voting.rules", f"unknown rule {r!r}; choose from {list(RULES)}")
    if not cfg.voting.rules:
        fail("voting.rules", "needs at least one rule")
    for a in cfg.voting.aggregations:
        if a not in AGGREGATIONS:
            fail("voting.aggregations", f"unknown aggregation {a!r}; choose from {list(AGGREGATIONS)}")
    if not cfg.voting.aggregations:
        fail("voting.aggregations", "needs at least one aggregation")
    if not cfg.seeds:
        fail("seeds", "needs at least one seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        fail("seeds", f"repeated seeds in {cfg.seeds}")
    if cfg.problems_per_chunk < 1:
        fail("problems_per_chunk", f"must be >= 1, got {cfg.problems_per_chunk}")
    if cfg.gpus_per_process < 1:
        fail("gpus_per_process", f"must be >= 1, got {cfg.gpus_per_process}")
    devices = [(f"policies[{i}].device", p.device) for i, p in enumerate(cfg.policies)]
    devices += [("prm.device", cfg.prm.device)] if cfg.prm and cfg.prm.device else []
    devices += [(f"methods[{i}].prm.device", m.prm.device) for i, m in enumerate(cfg.methods) if m.prm and m.prm.device]
    for key, dev in devices:
        if dev.startswith("cuda:+") and not (dev[6:].isdigit() and int(dev[6:]) < cfg.gpus_per_process):
            fail(key, f"{dev!r}: 'cuda:+k' needs 0 <= k < gpus_per_process ({cfg.gpus_per_process})")
    d = cfg.dataset
    if d.start < 0 or (d.limit is not None and d.limit < 0):
        fail("dataset.limit" if d.start >= 0 else "dataset.start", "must be >= 0")
    if not callable(d.grader) and d.grader != AUTO:
        from .graders import grader_entry

        try:  # a registered name or an import path (building it, with its imports, is preflight's)
            grader_entry(d.grader)
        except ValueError as e:
            fail("dataset.grader", f"{e}; or auto: the dataset's own")


def _validate_method(m: MethodConfig, k: str, fail: Callable[[str, str], None], source: str) -> None:
    try:
        cls = algorithm_class(m.algorithm)
    except ValueError as e:
        fail(f"{k}.algorithm", str(e))
    key = m.budget_key
    known = parameters(cls)
    if key is not None and key not in known:
        fail(f"{k}.budget_param", f"{m.algorithm} has no parameter {key!r}; it has {sorted(known)}")
    if key is not None and key in m.params:
        fail(f"{k}.params.{key}", f"set by the budget ({k}.budgets); remove it from params")
    for b, extra in m.budget_params.items():
        if not isinstance(b, int) or b < 1:
            fail(f"{k}.budget_params", f"keys are budgets (integers >= 1), got {b!r}")
        if not isinstance(extra, Mapping):
            fail(f"{k}.budget_params.{b}", f"expected a mapping of parameters, got {describe(extra)}")
        if key is not None and key in extra:
            fail(f"{k}.budget_params.{b}.{key}", "set by the budget itself; remove it")
    if not m.budgets:
        fail(f"{k}.budgets", "needs at least one budget")
    if len(set(m.budgets)) != len(m.budgets) or any(b < 1 for b in m.budgets):
        fail(f"{k}.budgets", f"budgets must be distinct integers >= 1, got {m.budgets}")
    if key is None and m.budgets != [1]:
        fail(f"{k}.budgets", f"{m.algorithm} has no budget parameter; use budgets: [1]")
    if m.subsample and not (independent_samples(cls) and key == cls.budget_param):
        fail(f"{k}.subsample", "only an algorithm with independent samples (sampling), its budget setting the "
                               "number of samples, can derive small budgets from a large run")
    for b in m.budgets:
        params = m.params_for(b)
        if dataclasses.is_dataclass(cls):  # its fields type its options: a wrong type or a typo fails by name
            from_plain(cls, params, f"{k}.params", source)
        try:
            make_algorithm(m.algorithm, **params)
        except ValueError as e:
            fail(f"{k}.params", str(e))


def _unique(names: list[str], key: str, what: str, fail: Callable[[str, str], None]) -> None:
    seen = set()
    for i, n in enumerate(names):
        if not n:
            fail(f"{key}[{i}].{what}", "must be a non-empty string")
        if n in seen:
            fail(f"{key}[{i}].{what}", f"duplicate {what} {n!r}")
        seen.add(n)


# ---------------------------------------------------------------------------------------------
# Resume safety: which settings change what a record means
# ---------------------------------------------------------------------------------------------
#: Keys that may change between runs into the same directory without changing existing records.
_RUNTIME_KEYS = {"output", "problems_per_chunk", "store_steps", "store_trees", "fsync", "description", "setup", "plugins", "seeds",
                 "dataset.start", "dataset.limit", "dataset.shuffle_seed", "prm.device", "gpus_per_process",
                 "policies[].device", "policies[].max_batch_rows", "methods[].budgets", "methods[].subsample",
                 "methods[].model_budgets", "methods[].models", "methods[].prm.device"}


def incompatible_keys(old: Mapping[str, Any], new: Mapping[str, Any], runtime: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose change would mix records of different meaning in one directory.

    Lists are matched by ``name`` (policies, methods), so adding a model or a method is fine.
    ``runtime``: more generic keys that may change, e.g. ``policies[].options.timeout`` (a backend's
    speed options, which ``builders.runtime_keys`` reads off the backends' registrations).
    """
    out: list[str] = []
    allowed = _RUNTIME_KEYS | set(runtime)

    def walk(a: Any, b: Any, key: str, generic: str) -> None:
        if generic in allowed:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{key}.{k}" if key else k, f"{generic}.{k}" if generic else k)
        elif (isinstance(a, list) and isinstance(b, list) and a and b
              and all(isinstance(x, Mapping) and "name" in x for x in a + b)):
            olds = {x["name"]: x for x in a}
            for x in b:
                if x["name"] in olds:
                    walk(olds[x["name"]], x, f"{key}[{x['name']}]", f"{generic}[]")
        elif a != b:
            out.append(key)

    walk(dict(old), dict(new), "", "")
    return out
