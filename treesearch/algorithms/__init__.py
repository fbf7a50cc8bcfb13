"""Search algorithms, each a generator per problem (see ``treesearch.work``), chosen by name in configs.

An algorithm class says what the harness needs to know about it:

* ``budget_param``: the parameter a config's budget sets (``"n"``, ``"width"``, ...; None when
  a budget means nothing, as for greedy);
* ``needs_prm``: whether it asks the PRM for scores while searching (voting may still use one);
* ``independent_samples`` (optional, default False): its candidates are independent draws, so
  the first b of a run at budget n are the run at budget b (a sweep may derive small budgets
  from a large run) and their hit rate estimates pass@1.

Configs name an algorithm by its registry name (``available_algorithms()``) or by import path
(``"my_pkg.search:MySearch"``), so a new algorithm needs no library edit.
"""
from __future__ import annotations

import inspect
from typing import Any

from ..registry import Registry
from .adaptive import AdaptiveSampling
from .beam import BeamSearch
from .budget_forcing import BudgetForcing
from .deepconf import DeepConf
from .dvts import DVTS
from .lookahead import Lookahead
from .mcts import MCTS
from .particle_filtering import ParticleFiltering, ParticleGibbs
from .rebase import Rebase, allocate_widths
from .revisions import Revisions
from .sampling import Greedy, Sampling

REQUIRED = ("budget_param", "needs_prm")


def _declared(cls: Any) -> type:
    """``cls`` if it is a class declaring the facts the harness reads, else ValueError saying which are missing."""
    if not isinstance(cls, type):
        raise ValueError("is not a class")
    missing = [a for a in REQUIRED if not hasattr(cls, a)]
    if missing:
        raise ValueError(f"does not declare {' and '.join(missing)} (class attributes: the parameter "
                         f"a budget sets, or None; whether it scores with a PRM while searching)")
    return cls


_REGISTRY: Registry[type] = Registry("search algorithm", wrap=_declared)
for _name, _cls in (("greedy", Greedy), ("sampling", Sampling), ("beam", BeamSearch), ("rebase", Rebase),
                    ("mcts", MCTS), ("lookahead", Lookahead), ("dvts", DVTS), ("budget_forcing", BudgetForcing),
                    ("particle_filtering", ParticleFiltering), ("particle_gibbs", ParticleGibbs),
                    ("adaptive_sampling", AdaptiveSampling), ("revisions", Revisions), ("deepconf", DeepConf)):
    _REGISTRY.add(_name, _cls)


def register_algorithm(name: str, *, overwrite: bool = False):
    """Class decorator: configs name the algorithm ``name`` (from a plug-in module: ``plugins:`` in the
    config, or ``--plugin``). The class declares ``budget_param`` and ``needs_prm`` like the built-ins."""
    def add(cls: type) -> type:
        try:
            _declared(cls)
        except ValueError as e:
            raise TypeError(f"algorithm {name!r} {e}") from None
        _REGISTRY.add(name, cls, overwrite=overwrite)
        return cls

    return add


def available_algorithms() -> list[str]:
    return _REGISTRY.names()


def algorithm_class(name: str) -> type:
    """The class a config names: a registry name or an import path ``pkg.module:Class``."""
    return _REGISTRY.get(name)


def parameters(cls: type) -> list[str]:
    """The parameters a config may set (the constructor's, less the display ``name``)."""
    return [p for p in inspect.signature(cls).parameters if p != "name"]


def independent_samples(cls: type) -> bool:
    return bool(getattr(cls, "independent_samples", False))


def make_algorithm(name: str, **params: Any):
    """Build an algorithm from its registry name or import path and parameters, with a clear error on a typo."""
    cls = algorithm_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for {name!r}: {e}") from None


__all__ = ["AdaptiveSampling", "BeamSearch", "BudgetForcing", "DVTS", "DeepConf", "Greedy", "Lookahead", "MCTS",
           "ParticleFiltering", "ParticleGibbs", "Rebase", "Revisions", "Sampling", "algorithm_class",
           "allocate_widths", "available_algorithms", "independent_samples", "make_algorithm", "parameters",
           "register_algorithm"]
