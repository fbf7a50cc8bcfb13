"""Name -> PRM factory, so configs can say ``{"type": "value_head", "path": ...}``.

A new PRM needs no library edit: decorate its factory with ``@register_prm("mine")`` in
your own module, or name it by import path (``{"type": "my_pkg.prm:MyPRM", ...}``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from treesearch.protocols import ProcessRewardModel
from treesearch.registry import Registry

Factory = Callable[..., ProcessRewardModel]
_BUILTINS = ("step_tag", "llemma", "classification", "value_head", "outcome", "callable", "self_score", "oracle",
             "likelihood", "vllm_features", "served")
_REGISTRY: Registry[Factory] = Registry("PRM type", tuple(f"{__package__}.{m}" for m in _BUILTINS))


def register_prm(name: str, *, overwrite: bool = False) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(**kwargs) -> ProcessRewardModel`` under ``name``."""

    def deco(factory: Factory) -> Factory:
        _REGISTRY.add(name, factory, overwrite=overwrite)
        return factory

    return deco


def available_prms() -> list[str]:
    return _REGISTRY.names()


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
    prm = _REGISTRY.get(name)(**kwargs)
    if not isinstance(prm, ProcessRewardModel):
        raise TypeError(f"PRM factory {name!r} returned {type(prm).__name__}, which has no "
                        f"score(chains) and num_parameters")
    return prm


def check_prm(spec: Mapping[str, Any]) -> None:
    """Raise ValueError saying what is wrong with a PRM config, without loading any model: an unknown
    type, or what the factory's own ``check(**options)`` finds (``treesearch check`` calls this)."""
    cfg = dict(spec)
    factory = _REGISTRY.get(cfg.pop("type"))
    check = getattr(factory, "check", None)
    if callable(check):
        check(**cfg)
