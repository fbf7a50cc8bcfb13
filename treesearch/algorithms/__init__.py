"""Search algorithms, each a generator per problem (see ``treesearch.work``), chosen by name in configs."""
from __future__ import annotations

from typing import Any, Callable

from .beam import BeamSearch
from .budget_forcing import BudgetForcing
from .dvts import DVTS
from .lookahead import Lookahead
from .mcts import MCTS
from .rebase import Rebase, allocate_widths
from .sampling import Greedy, Sampling

ALGORITHMS: dict[str, Callable[..., Any]] = {
    "greedy": Greedy,
    "sampling": Sampling,
    "beam": BeamSearch,
    "rebase": Rebase,
    "mcts": MCTS,
    "lookahead": Lookahead,
    "dvts": DVTS,
    "budget_forcing": BudgetForcing,
}


def make_algorithm(name: str, **params: Any):
    """Build an algorithm from its registry name and parameters, with a clear error on a typo."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown search algorithm {name!r}; choose one of {sorted(ALGORITHMS)}") from None
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for {name!r}: {e}") from None


__all__ = ["ALGORITHMS", "BeamSearch", "BudgetForcing", "DVTS", "Greedy", "Lookahead", "MCTS", "Rebase", "Sampling", "allocate_widths",
           "make_algorithm"]
