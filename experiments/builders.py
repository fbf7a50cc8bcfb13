"""Turning a checked config into objects: policies, PRMs, search algorithms, problems, graders.

The schema (``experiments.config``) says what a study is; this builds it, so the sweep, the
CLI and preflight share one way of making each thing. Heavy imports (torch, transformers,
reward models, the grader) happen only here, and only when something is built.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from treesearch.algorithms import make_algorithm

from .config import AUTO, ConfigError, DatasetConfig, MethodConfig, PolicyConfig, PRMConfig, StudyConfig
from .grading.policy import GradingPolicy

Grader = Callable[[str, str], bool]


def resolve_device(device: str, local_rank: int = 0, gpus_per_process: int = 1) -> str:
    """This process's device for a configured one (:func:`treesearch.devices.resolve_device`), as a string."""
    from treesearch.devices import resolve_device as resolve

    try:
        return str(resolve(device, local_rank, gpus_per_process))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def policy_spec(p: PolicyConfig, device: str | None = None):
    """What the backend builds (``treesearch.backends.PolicySpec``); ``device`` (from the shard)
    replaces "auto"/"cuda"."""
    from treesearch.backends import PolicySpec, backend
    from treesearch.prompts import PromptFormat
    from treesearch.step_format import StepFormat

    b = backend(p.backend)
    options = {**{k: getattr(p, k) for k in b.config_keys}, **p.options}
    return PolicySpec(
        path=p.path, step_format=StepFormat.preset(p.step_format),
        prompt=PromptFormat(p.prompt_template, p.chat_template, p.system_prompt, p.revision_prompt),
        temperature=p.temperature, top_p=p.top_p, dtype=p.dtype,
        device=device or (resolve_device(p.device) if b.local_device else p.device),
        trust_remote_code=p.trust_remote_code,
        num_parameters=int(p.num_parameters) if p.num_parameters is not None else None,
        parameter_count=p.parameter_count, options=options)


def policy_device(p: PolicyConfig, local_rank: int = 0, gpus_per_process: int = 1) -> str | None:
    """This process's device for a backend that runs here (its registration says ``local_device``), else None."""
    from treesearch.backends import backend

    return resolve_device(p.device, local_rank, gpus_per_process) if backend(p.backend).local_device else None


def runtime_keys(cfg: StudyConfig) -> set[str]:
    """Generic config keys of the policies' backend options that a resumed run may change (speed, servers)."""
    from treesearch.backends import runtime_options

    return {f"policies[].options.{k}" for p in cfg.policies for k in runtime_options(p.backend)}


def load_policy(p: PolicyConfig, device: str | None = None):
    """The policy a config describes, built through the backend registry (``treesearch.backends``;
    the step cap comes with each request, from the search limits)."""
    from treesearch.backends import load_policy as build

    try:
        return build(p.backend, policy_spec(p, device))
    except ValueError as e:  # unknown backend or option: name the policy
        raise ConfigError(f"policy {p.name!r}: {e}") from None


def load_prm_for(prm: PRMConfig, local_rank: int = 0, gpus_per_process: int = 1):
    """reward_models.load_prm, with "auto"/"cuda"/"cuda:+k" devices mapped to this process's GPUs."""
    from reward_models import load_prm

    device = resolve_device(prm.device, local_rank, gpus_per_process) if prm.device else None
    return load_prm(dataclasses.replace(prm, device=device).to_plain())


def algorithm_for(m: MethodConfig, budget: int):
    """The search algorithm of method ``m`` at ``budget`` (the budget set on its budget parameter)."""
    return make_algorithm(m.algorithm, **m.params_for(budget))


def load_problems(d: DatasetConfig) -> list:
    """The selected problems (``experiments.datasets.Problem``), in a fixed order."""
    from . import datasets as ds

    if d.fields is not None:
        f = d.fields
        every = ds.load_jsonl(d.name, f.question, f.answer, id_field=f.id, level_field=f.level)
        problems = ds.select(every, start=d.start, limit=d.limit, shuffle_seed=d.shuffle_seed)
    else:
        problems = ds.load_dataset(d.name, start=d.start, limit=d.limit, shuffle_seed=d.shuffle_seed,
                                   options=d.options)
    if not problems:  # a run of nothing would write a resolved.yaml that then blocks the corrected config
        raise ds.DatasetError(f"dataset {d.name}: no problems selected (start {d.start}, limit {d.limit}); "
                              "is the file empty, or start past its end?")
    return problems


def grader_of(d: DatasetConfig) -> Grader:
    """The answer equivalence a dataset config names ("auto": what its registered dataset says)."""
    from .datasets import default_grader
    from .graders import make_grader

    if callable(d.grader):
        grader = d.grader
    else:
        try:
            grader = make_grader(default_grader(d.name) if d.grader == AUTO else d.grader)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if d.grading is None or d.grading == GradingPolicy():
        return grader
    from .grading import grade
    if grader is not grade:
        raise ConfigError(f"dataset.grading: a grading policy applies to the math grader, not {d.grader!r}")
    return functools.partial(grade, policy=d.grading)
