"""treesearch: reward-guided tree search over LLM reasoning steps.

Algorithms (``treesearch.algorithms``) are generators that yield work; the ``Runner``
batches that work across problems for a ``Policy`` and a ``ProcessRewardModel``.
"""
from .ledger import ComputeLedger
from .protocols import Chain, ChainScores, ExpandOutput, ExpandRequest, Policy, ProcessRewardModel, StepSample
from .runner import Candidate, Runner, SearchLimits, SearchResult
from .step_format import StepFormat
from .tree import Node, Tree
from .voting import aggregate, vote


def __getattr__(name: str):
    if name == "TransformersPolicy":  # imports transformers: only when asked for
        from .policy_hf import TransformersPolicy
        return TransformersPolicy
    raise AttributeError(f"module 'treesearch' has no attribute {name!r}")


__all__ = ["Candidate", "Chain", "ChainScores", "ComputeLedger", "ExpandOutput", "ExpandRequest", "Node", "Policy",
           "ProcessRewardModel", "Runner", "SearchLimits", "SearchResult", "StepFormat", "StepSample",
           "TransformersPolicy", "Tree", "aggregate", "vote"]
