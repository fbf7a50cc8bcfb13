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
from typing import Any

from .builders import grader_of, import_path, policy_spec
from .config import ConfigError, PolicyConfig, StudyConfig


def preflight(cfg: StudyConfig, source: str = "<config>") -> None:
    """Raise ``ConfigError`` for the first thing ``run_study`` could not load."""
    try:
        for i, p in enumerate(cfg.policies):
            check_policy(p, f"{source}: policies[{i}]")
        specs = [("prm", cfg.prm)] + [(f"methods[{i}].prm", m.prm) for i, m in enumerate(cfg.methods)]
        for key, spec in specs:
            if spec is not None:
                check_prm(spec, f"{source}: {key}")
    except ConfigError as e:
        if cfg.setup and "no such directory" in str(e):  # the study says how its local files are made
            raise ConfigError(f"{e}; this study's setup creates it: {cfg.setup}") from None
        raise
    try:
        grader_of(cfg.dataset)
    except ConfigError as e:
        raise ConfigError(f"{source}: dataset.grader: {e}") from None
    if os.path.exists(cfg.output) and not os.path.isdir(cfg.output):
        raise ConfigError(f"{source}: output: {cfg.output} is a file; the results go in a directory (give another "
                          "path, or --out DIR)")


def check_policy(p: PolicyConfig, where: str) -> None:
    from treesearch.backends import available_policies, backend
    from treesearch.backends import check_policy as backend_check

    if not callable(p.backend) and p.backend not in available_policies():
        if ":" not in p.backend:
            raise ConfigError(f"{where}.backend: unknown policy backend {p.backend!r}; registered: "
                              f"{available_policies()} (or an import path 'package.module:factory')")
        try:
            import_path(p.backend)
        except ConfigError as e:
            raise ConfigError(f"{where}.backend: {e}") from None
    try:  # a plug-in named by import path is checked as a registered one is
        backend_check(p.backend, policy_spec(p, device="cpu"))
    except ImportError as e:
        raise ConfigError(f"{where}.backend: {e}") from None
    except ValueError as e:  # "key: why" names a policy key ("path", "num_parameters") or an option's
        key, _, rest = str(e).partition(": ")
        if not (rest and key.isidentifier()):
            raise ConfigError(f"{where}.options: {e}") from None
        policy_key = key in {f.name for f in dataclasses.fields(PolicyConfig)}
        raise ConfigError(f"{where}.{'' if policy_key else 'options.'}{key}: {rest}") from None
    if p.path or backend(p.backend).needs_path:
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


def check_prm(spec: dict[str, Any], where: str) -> None:
    from reward_models import available_prms
    from reward_models.registry import check_prm as factory_check

    kind = spec.get("type")
    if not isinstance(kind, str):
        raise ConfigError(f"{where}.type: required (one of {available_prms()} or 'pkg.mod:factory')")
    if kind not in available_prms():
        if ":" not in kind:
            raise ConfigError(f"{where}.type: unknown PRM type {kind!r}; registered: {available_prms()} "
                              f"(or an import path 'package.module:factory')")
        try:
            import_path(kind)
        except ConfigError as e:
            raise ConfigError(f"{where}.type: {e}") from None
    if kind == "callable" and isinstance(spec.get("fn"), str):
        try:
            import_path(spec["fn"])
        except ConfigError as e:
            raise ConfigError(f"{where}.fn: {e}") from None
    from treesearch.serving import ServerError

    try:  # what the factory itself can tell without loading (vllm: the adapter, the package; a server's answer)
        factory_check(spec)
    except (ValueError, ImportError, ServerError) as e:
        raise ConfigError(f"{where}: {e}") from None
    path = spec.get("path")
    if isinstance(path, str) and not os.path.exists(path):
        raise ConfigError(f"{where}.path: no such file or directory {path!r}")
