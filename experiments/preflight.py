"""Everything a run would fail on, checked before any work starts.

``validate`` (config.py) checks what the config says; this checks what it points at: that
every policy directory exists and holds a loadable config and tokenizer, that every
backend, PRM type and grader named by import path imports, and that every PRM path exists.
A sweep that dies after its first policy's records, or with a hub error about a "repo id"
when a local directory was misspelt, is what this prevents. Each failure is one
``ConfigError`` naming the source and the key.
"""
from __future__ import annotations

import dataclasses
import os

from .builders import grader_of, policy_spec
from .config import ConfigError, DatasetConfig, PolicyConfig, PRMConfig, StudyConfig


def preflight(cfg: StudyConfig, source: str = "<config>") -> None:
    """Raise ``ConfigError`` for the first thing ``run_study`` could not load."""
    try:
        for i, p in enumerate(cfg.policies):
            check_policy(p, f"{source}: policies[{i}]")
        prms = [("prm", cfg.prm)] + [(f"methods[{i}].prm", m.prm) for i, m in enumerate(cfg.methods)]
        for key, prm in prms:
            if prm is not None:
                check_prm(prm, f"{source}: {key}")
    except ConfigError as e:
        if cfg.setup and "no such directory" in str(e):  # the study says how its local files are made
            raise ConfigError(f"{e}; this study's setup creates it: {cfg.setup}") from None
        raise
    check_dataset(cfg.dataset, f"{source}: dataset.name")
    try:
        grader_of(cfg.dataset)
    except ConfigError as e:
        raise ConfigError(f"{source}: dataset.grader: {e}") from None
    if os.path.exists(cfg.output) and not os.path.isdir(cfg.output):
        raise ConfigError(f"{source}: output: {cfg.output} is a file; the results go in a directory (give another "
                          "path, or --out DIR)")


def check_dataset(d: DatasetConfig, where: str) -> None:
    """A registered dataset, a loader's import path that imports, or a file (its lines are read by loading)."""
    from .datasets import DatasetError, available_datasets, named

    try:
        entry = named(d.name) if d.fields is None else None
    except DatasetError as e:
        raise ConfigError(f"{where}: {e}") from None
    if entry is None and not os.path.isfile(d.name):
        raise ConfigError(f"{where}: {d.name!r} is neither a registered dataset ({', '.join(available_datasets())}), "
                          "an import path 'pkg.mod:loader' nor a file")


def check_policy(p: PolicyConfig, where: str) -> None:
    from treesearch.backends import backend
    from treesearch.backends import check_policy as backend_check

    try:  # the registry's answer for an unknown name or an import path that fails
        entry = backend(p.backend)
    except ValueError as e:
        raise ConfigError(f"{where}.backend: {e}") from None
    try:  # the entry checks the rest, a plug-in's as a built-in's
        backend_check(p.backend, policy_spec(p, device="cpu"))
    except ImportError as e:
        raise ConfigError(f"{where}.backend: {e}") from None
    except ValueError as e:  # "key: why" names a policy key ("path", "num_parameters") or an option's
        key, _, rest = str(e).removeprefix("options: ").partition(": ")  # an options error reads "options[.k]: ..."
        key = key.removeprefix("options.")
        if not (rest and key.isidentifier()):
            raise ConfigError(f"{where}.options: {e}") from None
        policy_key = key in {f.name for f in dataclasses.fields(PolicyConfig)}
        raise ConfigError(f"{where}.{'' if policy_key else 'options.'}{key}: {rest}") from None
    if p.path or entry.needs_path:
        _check_model_dir(p.path, f"{where}.path", p.trust_remote_code)


def _check_model_dir(path: str | None, where: str, trust_remote_code: bool = False) -> None:
    """A local directory with a transformers config and tokenizer (hub ids are not fetched here)."""
    if not path or not os.path.isdir(path):
        raise ConfigError(f"{where}: no such directory {path!r} (models load from local directories; "
                          f"download a hub model first and give its directory)")
    from transformers import AutoConfig, AutoTokenizer

    for what, load in (("model config", AutoConfig), ("tokenizer", AutoTokenizer)):
        try:
            load.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
        except Exception as e:  # transformers raises many kinds; the user needs the first line of any
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{where}: {path!r} holds no loadable {what}: {first}") from None


def check_prm(prm: PRMConfig, where: str) -> None:
    from reward_models.registry import check_prm as entry_check
    from reward_models.registry import prm_type
    from treesearch.serving import ServerError

    try:  # the registry's answer for an unknown type or an import path that fails
        prm_type(prm.type)
    except ValueError as e:
        raise ConfigError(f"{where}.type: {e}") from None
    try:  # what the entry itself can tell without loading (vllm: the adapter, the package; a server's answer)
        entry_check(prm.to_plain())
    except (ValueError, ImportError, ServerError) as e:  # "key: why" names one of the PRM's options
        key, _, rest = str(e).partition(": ")
        raise ConfigError(f"{where}.{key}: {rest}" if rest and key.isidentifier() else f"{where}: {e}") from None
    if prm.path is not None and not os.path.exists(prm.path):
        raise ConfigError(f"{where}.path: no such file or directory {prm.path!r}")
