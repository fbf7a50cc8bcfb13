"""PRM adapters: any process reward model behind one protocol, scored in batches with a prefix cache.

A PRM maps a batch of ``Chain(question, steps)`` to one ``ChainScores`` per chain: one
float per step and the tokens it put through its model (0 on a cache hit). Load one by
name (``load_prm("value_head", path=...)``) or config dict, or wrap any function with
``CallablePRM``.
"""
from treesearch.protocols import Chain, ChainScores, ProcessRewardModel

from .base import CheckpointPRM, Encoding, ModelPRM, PieceTokenizer, PRMSpec, encode_chain, non_embedding_parameters
from .batching import BatchScorer, ContextLimitError, PrefixCache, ScorerStats
from .callable import CallablePRM
from .classification import ClassificationPRM
from .llemma import LlemmaPRM
from .outcome import OutcomeRM
from .registry import available_prms, load_prm, register_prm
from .self_score import SelfScorePRM
from .likelihood import LikelihoodHead, LikelihoodPRM
from .oracle import CheckerPRM
from . import baselines  # registers the trivial verifiers: constant, random, position
from .step_tag import StepTagPRM, TaggedLMPRM
from .value_head import ValueHeadFormat, ValueHeadModel, ValueHeadPRM
from .training import (LabelledChain, MonteCarloRollouts, TrainConfig, fit_likelihood_head, monte_carlo_labels,
                       train_value_head)
from .evaluation import (SampledSolution, SiblingGroup, roc_auc, score_solutions, selection_accuracy, sibling_pairs,
                         sibling_scores, step_auc)

__all__ = [
    "baselines",
    "Chain", "ChainScores", "ProcessRewardModel",
    "CheckpointPRM", "Encoding", "ModelPRM", "PieceTokenizer", "PRMSpec", "encode_chain", "non_embedding_parameters",
    "BatchScorer", "ContextLimitError", "PrefixCache", "ScorerStats",
    "CallablePRM", "CheckerPRM", "ClassificationPRM", "LikelihoodHead", "LikelihoodPRM", "LlemmaPRM", "OutcomeRM",
    "SelfScorePRM",
    "StepTagPRM", "TaggedLMPRM", "ValueHeadFormat", "ValueHeadModel", "ValueHeadPRM",
    "available_prms", "load_prm", "register_prm",
    "LabelledChain", "MonteCarloRollouts", "TrainConfig", "fit_likelihood_head", "monte_carlo_labels",
    "train_value_head",
    "SampledSolution", "SiblingGroup", "roc_auc", "score_solutions", "selection_accuracy", "sibling_pairs",
    "sibling_scores", "step_auc",
]
