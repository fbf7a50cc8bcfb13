"""Name -> PRM type, so configs can say ``{"type": "value_head", "path": ...}``.

A new PRM needs no library edit: decorate its factory with ``@register_prm("mine")`` in
your own module, or name it by import path (``{"type": "my_pkg.prm:MyPRM", ...}``; the
factory's ``check`` and ``reference`` attributes, if any, play the parts below).

An entry declares what the harness needs to know without building the PRM: ``check(**options)``,
run by ``treesearch check`` before any model loads, and ``reference(**options)``, for a reference
verifier (the built-in task's exact checker and its noisy versions), its error rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from treesearch.protocols import ProcessRewardModel
from treesearch.registry import Registry

Factory = Callable[..., ProcessRewardModel]


@dataclass(frozen=True)
class Reference:
    """A reference verifier's error: each step verdict flipped with probability ``error_rate``; ``flip``
    says which verdicts ("both"; "right": only right steps called wrong, a judge that never accepts an error)."""

    error_rate: float
    flip: str = "both"


@dataclass(frozen=True)
class PRMType:
    """A registered PRM: its factory and the facts read without building it."""

    factory: Factory
    check: Callable[..., None] | None = None  # check(**options): ValueError on what it can tell before loading
    reference: Callable[..., Reference] | None = None  # reference(**options): set for reference verifiers only


def _imported(obj: Any) -> PRMType:
    return obj if isinstance(obj, PRMType) else PRMType(obj, getattr(obj, "check", None),
                                                          getattr(obj, "reference", None))


_BUILTINS = ("step_tag", "llemma", "classification", "value_head", "outcome", "callable", "self_score", "oracle",
             "likelihood", "vllm_features", "served", "baselines")
_REGISTRY: Registry[PRMType] = Registry("PRM type", tuple(f"{__package__}.{m}" for m in _BUILTINS), _imported)


def register_prm(name: str, *, check: Callable[..., None] | None = None,
                 reference: Callable[..., Reference] | None = None,
                 overwrite: bool = False) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(**options) -> ProcessRewardModel`` under ``name``, with its facts
    (see :class:`PRMType`)."""

    def deco(factory: Factory) -> Factory:
        _REGISTRY.add(name, PRMType(factory, check, reference), overwrite=overwrite)
        return factory

    return deco


def available_prms() -> list[str]:
    return _REGISTRY.names()


def _split(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, Mapping):
        cfg = dict(spec)
        if "type" not in cfg:
            raise ValueError(f"PRM config needs a 'type' key (one of {available_prms()}), got keys {sorted(cfg)}")
        return cfg.pop("type"), cfg
    return spec, {}


def prm_type(name: str) -> PRMType:
    """The entry registered as ``name``, or the factory an import path names; ValueError for an unknown name."""
    return _REGISTRY.get(name)


def load_prm(spec: str | Mapping[str, Any], **kwargs: Any) -> ProcessRewardModel:
    """Build a PRM from a registered name, an import path ``"pkg.mod:attr"``, or a config dict.

    ``load_prm("value_head", path="runs/prm")`` ==
    ``load_prm({"type": "value_head", "path": "runs/prm"})``; keyword arguments override
    the dict's entries.
    """
    name, options = _split(spec)
    prm = prm_type(name).factory(**{**options, **kwargs})
    if not isinstance(prm, ProcessRewardModel):
        raise TypeError(f"PRM factory {name!r} returned {type(prm).__name__}, which has no "
                        f"score(chains) and num_parameters")
    return prm


def check_prm(spec: Mapping[str, Any]) -> None:
    """Raise ValueError saying what is wrong with a PRM config, without loading any model: an unknown
    type, or what the entry's own ``check(**options)`` finds (``treesearch check`` calls this)."""
    name, options = _split(spec)
    entry = prm_type(name)
    if entry.check is not None:
        entry.check(**options)


def reference_of(spec: Mapping[str, Any] | None) -> Reference | None:
    """The error a reference verifier makes, as its entry declares; None for any other PRM (and for none)."""
    if not spec:
        return None
    name, options = _split(spec)
    entry = prm_type(name)
    return entry.reference(**options) if entry.reference is not None else None
