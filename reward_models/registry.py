"""Name -> PRM factory, so configs can say ``{"type": "value_head", "path": ...}``.

A new PRM needs no library edit: decorate its factory with ``@register_prm("mine")`` in
your own module, or name it by import path (``{"type": "my_pkg.prm:MyPRM", ...}``).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from treesearch.imports import import_path
from treesearch.protocols import ProcessRewardModel

Factory = Callable[..., ProcessRewardModel]
_REGISTRY: dict[str, Factory] = {}
_BUILTINS = ("step_tag", "llemma", "classification", "value_head", "outcome", "callable", "self_score", "oracle",
             "likelihood", "vllm_features")


def register_prm(name: str, *, overwrite: bool = False) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(**kwargs) -> ProcessRewardModel`` under ``name``."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory and not overwrite:
            raise ValueError(f"a PRM named {name!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtins() -> None:
    for mod in _BUILTINS:
        importlib.import_module(f"{__package__}.{mod}")


def available_prms() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def load_prm(spec: str | Mapping[str, Any], **kwargs: Any) -> ProcessRewardModel:
    """Build a PRM from a registered name, an import path ``"pkg.mod:attr"``, or a config dict.

    ``load_prm("value_head", path="runs/prm")`` ==
    ``load_prm({"type": "value_head", "path": "runs/prm"})``; keyword arguments override
    the dict's entries.
    """
    if isinstance(spec, Mapping):
        cfg = dict(spec)
        if "type" not in cfg:
            raise ValueError(f"PRM config needs a 'type' key (one of {available_prms()}), got keys {sorted(cfg)}")
        name = cfg.pop("type")
        kwargs = {**cfg, **kwargs}
    else:
        name = spec
    prm = _factory(name)(**kwargs)
    if not isinstance(prm, ProcessRewardModel):
        raise TypeError(f"PRM factory {name!r} returned {type(prm).__name__}, which has no "
                        f"score(chains) and num_parameters")
    return prm


def check_prm(spec: Mapping[str, Any]) -> None:
    """Raise ValueError saying what is wrong with a PRM config, without loading any model: an unknown
    type, or what the factory's own ``check(**options)`` finds (``treesearch check`` calls this)."""
    cfg = dict(spec)
    factory = _factory(cfg.pop("type"))
    check = getattr(factory, "check", None)
    if callable(check):
        check(**cfg)


def _factory(name: str) -> Factory:
    _load_builtins()
    factory = _REGISTRY.get(name)
    if factory is None and ":" in name:
        factory = import_path(name)
    if factory is None:
        raise ValueError(f"unknown PRM type {name!r}; registered: {sorted(_REGISTRY)} "
                         f"(or give an import path 'package.module:factory')")
    return factory
