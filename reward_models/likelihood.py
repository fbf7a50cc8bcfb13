"""Likelihood PRMs: a language model's per-token log-probabilities of a step, through a small trained head.

Why: a verifier that can compute a step better than the policy that wrote it assigns the
wrong digits of a wrong step a low probability. A value head reading one hidden state at
the step's end has to learn that comparison from labels (on the built-in task it did not,
see docs/builtin_study.md); the log-probabilities carry it directly. So the step's token
log-probabilities under the verifier LM are reduced to a few features (mean, minimum) and
a logistic head, fitted on labelled steps (exact labels or Math-Shepherd's Monte-Carlo
ones, :func:`reward_models.training.fit_likelihood_head`), gives P(step right).

``chain`` turns local step verdicts into a prefix score, as PRM labels mean "the solution
is right so far": "prod" (default) multiplies them along the chain, "min" takes the
running minimum, "none" keeps each step's own. A step that continues correctly from a
wrong value is locally fine, and only the chain rule tells search that its prefix is not.

On disk: the LM (``save_pretrained``, loads with ``AutoModelForCausalLM``), its tokenizer
and ``likelihood_head.json`` (features, weights, chain rule, prompt layout).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from .base import read_format_file, write_format_file
from .batching import segment_mean
from .registry import register_prm
from .self_score import SelfScorePRM

HEAD_FILE = "likelihood_head.json"
FORMAT_NAME = "treesearch.likelihood_head"
FEATURES = ("mean_logp", "min_logp")
CHAINS = ("prod", "min", "none")


@dataclass(frozen=True)
class LikelihoodHead:
    """logit = weight · [mean log-prob, min log-prob] + bias; the chain rule; the prompt layout."""

    weight: tuple[float, ...] = (1.0, 1.0)
    bias: float = 0.0
    chain: str = "prod"
    prompt_template: str = "{question}\n"
    step_suffix: str = "\n"
    features: tuple[str, ...] = field(default=FEATURES)
    training: dict = field(default_factory=dict, compare=False)  # how it was fitted (for the card)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", tuple(float(w) for w in self.weight))
        object.__setattr__(self, "features", tuple(self.features))
        if self.features != FEATURES:
            raise ValueError(f"likelihood head features must be {FEATURES}, got {self.features}")
        if len(self.weight) != len(self.features):
            raise ValueError(f"{len(self.weight)} weights for {len(self.features)} features")
        if self.chain not in CHAINS:
            raise ValueError(f"chain must be one of {CHAINS}, got {self.chain!r}")
        if not all(math.isfinite(w) for w in (*self.weight, self.bias)):
            raise ValueError("likelihood head weights must be finite")

    def save(self, directory: str) -> None:
        write_format_file(directory, HEAD_FILE, FORMAT_NAME, asdict(self))

    @classmethod
    def load(cls, directory: str) -> LikelihoodHead:
        return cls(**read_format_file(directory, HEAD_FILE, FORMAT_NAME, "likelihood PRM", list(cls.__dataclass_fields__)))


def chain_scores(local: list[float], rule: str) -> list[float]:
    """Prefix scores from local step probabilities: running product, running minimum, or as is."""
    if rule == "none":
        return list(local)
    out, acc = [], 1.0
    for p in local:
        acc = acc * p if rule == "prod" else min(acc, p)
        out.append(acc)
    return out


class LikelihoodPRM(SelfScorePRM):
    """sigmoid(head(mean, min token log-prob of the step)) under a causal LM, chained along the steps."""

    def __init__(self, path: str | None = None, *, head: LikelihoodHead | None = None, **kwargs):
        if head is None:
            if path is None:
                raise ValueError("give a likelihood PRM directory, or a LikelihoodHead with a model and tokenizer")
            head = LikelihoodHead.load(str(path))
        self.likelihood_head = head
        kwargs.setdefault("prompt_template", head.prompt_template)
        kwargs.setdefault("step_suffix", head.step_suffix)
        super().__init__(path, **kwargs)
        self._w = torch.tensor(head.weight, dtype=torch.float32)

    def reduce(self, values: torch.Tensor, segments: torch.Tensor, n: int) -> torch.Tensor:
        """[n, 2]: mean and minimum log-probability of each step's tokens."""
        mins = torch.full((n,), math.inf, device=values.device).scatter_reduce(0, segments, values, "amin")
        return torch.stack([segment_mean(values, segments, n), mins], dim=-1)

    def finalize(self, step_values: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(step_values.float() @ self._w.to(step_values.device) + self.likelihood_head.bias)

    def combine(self, scores: list[float]) -> list[float]:
        return chain_scores(scores, self.likelihood_head.chain)

    def save(self, directory: str) -> None:
        """LM, tokenizer and head, loadable with ``load_prm("likelihood", path=directory)``."""
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tok.tokenizer.save_pretrained(directory)
        self.likelihood_head.save(directory)


@register_prm("likelihood", check=LikelihoodPRM.check_options)
def _likelihood(**kwargs) -> LikelihoodPRM:
    return LikelihoodPRM(**kwargs)
