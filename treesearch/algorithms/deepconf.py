"""DeepConf (Fu et al. 2025, "Deep Think with Confidence"): filter and stop traces by the policy's own confidence.

Every trace is sampled with the top-``logprobs`` log-probabilities of its tokens (``Expand.logprobs``),
so its confidence needs no verifier (``treesearch.confidence``: token confidence, the mean over
sliding ``window``-token groups, and the trace's ``measure``, by default its lowest group).

* ``offline``: ``n`` complete traces; the top ``eta`` % most confident are the candidates (those at or
  above the (100 - eta)-th percentile of the n confidences, ties kept; eta 100 keeps all).
* ``online``: ``warmup`` complete traces set the threshold s = the (100 - eta)-th percentile of
  their confidences, and those at or above s are candidates (a warm-up trace below it would have
  been stopped; the paper's code votes the same way). The other ``n - warmup`` traces grow a step
  at a time, all at once or ``batch`` per round, and a trace stops as soon as a full window
  ending in its new step has a mean confidence below s: it is no candidate (its last step is marked
  ``finish_reason = "stopped"``), and the tokens it spent stay in the ledger. With ``consensus``, no
  further round starts once the leading answer holds that share of the candidates' summed
  confidence (the paper's adaptive sampling). At a budget n <= warmup every trace is a warm-up
  trace, which is the offline search.

Choices, against the paper: a trace is checked once per step, not per token, so a stopped trace
has spent the rest of the step in which its confidence fell (the stop decision is the paper's:
some window ending in that step fell below s); as in the paper's code, no trace stops before it
has a full window, and one shorter than the window has the mean of all its tokens as confidence.
Candidates carry their confidence (``Node.confidence`` -> ``Candidate.confidence``): the records
then hold the confidence-weighted vote ("confidence", ``treesearch.voting.confidence_vote``)
beside the usual rules, which still read a verifier's step scores where the study has one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generator, Sequence

from ..confidence import MEASURES, falls_below, path_confidences, percentile, trace_confidence
from ..tree import STOPPED, Node, Tree
from ..voting import Equal, answer_classes, class_confidence, memoized, normalized_equal
from ..work import Search, Work, complete, expand

MODES = ("offline", "online")


@dataclass(frozen=True)
class DeepConf:
    """``n`` traces, ``offline`` (keep the top ``eta`` % by confidence) or ``online`` (stop traces below the
    threshold ``warmup`` traces set); confidence over ``window``-token groups of top-``logprobs`` tokens."""

    n: int = 16
    mode: str = "offline"
    eta: float = 10.0  # keep the top eta % (the paper's DeepConf-low; 90: DeepConf-high)
    window: int = 32  # tokens per group (the paper: 2048 for long reasoning traces)
    measure: str = "lowest"  # trace confidence: "lowest", "bottom10" or "tail" (online: "lowest")
    logprobs: int = 20  # k of the token confidence (vllm serve answers up to its --max-logprobs)
    warmup: int = 16  # online: traces that set the threshold
    batch: int | None = None  # online: traces per round after the warm-up (None: all at once)
    consensus: float | None = None  # online: stop starting rounds once the leader has this confidence share
    budget_param: ClassVar[str | None] = "n"
    needs_prm: ClassVar[bool] = False  # the policy's own confidence; weighted / best-of-N voting may use a PRM
    independent_samples: ClassVar[bool] = False  # which traces are kept depends on all of them
    name: str = "deepconf"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"DeepConf.mode must be one of {MODES}, got {self.mode!r}")
        if self.measure not in MEASURES:
            raise ValueError(f"DeepConf.measure must be one of {MEASURES}, got {self.measure!r}")
        if self.n < 1 or self.window < 1 or self.logprobs < 1 or self.warmup < 1:
            raise ValueError(f"DeepConf needs n, window, logprobs and warmup >= 1, got {self.n}, {self.window}, "
                             f"{self.logprobs}, {self.warmup}")
        if not 0 < self.eta <= 100:
            raise ValueError(f"DeepConf.eta must be in (0, 100], got {self.eta}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"DeepConf.batch must be >= 1, got {self.batch}")
        if self.consensus is not None and not 0.5 < self.consensus <= 1:
            raise ValueError(f"DeepConf.consensus must be in (0.5, 1], got {self.consensus}")
        if self.mode == "offline" and (self.batch is not None or self.consensus is not None):
            raise ValueError("DeepConf: batch and consensus are settings of mode 'online'")
        if self.mode == "online" and self.measure != "lowest":
            raise ValueError("DeepConf: mode 'online' stops a trace at its lowest window, so its measure is 'lowest'")

    def __call__(self, tree: Tree) -> Search:
        warm = self.n if self.mode == "offline" else min(self.warmup, self.n)
        (first,) = yield from expand([tree.root], warm, logprobs=self.logprobs)
        traces = yield from complete(first, logprobs=self.logprobs)
        for t in traces:
            self._rate(t)
        threshold = percentile([t.confidence for t in traces], 100 - self.eta)  # type: ignore[misc]
        kept = [t for t in traces if t.confidence >= threshold]  # type: ignore[operator]
        left = self.n - warm
        equal = memoized(normalized_equal)
        while left > 0 and not self._agreed(kept, equal):
            size = min(self.batch or left, left)
            # Each round draws its own first steps (redraw: the root's seed counts the children it has).
            (first,) = yield from expand([tree.root], size, redraw=True, logprobs=self.logprobs)
            kept.extend((yield from self._stop_below(first, threshold)))
            left -= size
        return kept

    def _rate(self, node: Node) -> None:
        node.confidence = trace_confidence(path_confidences(node), self.window, self.measure)

    def _stop_below(self, nodes: Sequence[Node], threshold: float) -> Generator[Work, object, list[Node]]:
        """Grow each trace a step at a time; drop it once a window ending in its new step falls below
        ``threshold``. Returns the traces that finish."""
        done: list[Node] = []
        while nodes:
            open_ = []
            for node in nodes:
                if falls_below(path_confidences(node), self.window, threshold, len(node.token_confidence or ())):
                    node.finish_reason = STOPPED  # its tokens are spent (the ledger has them); no candidate
                    continue
                if node.terminal:
                    self._rate(node)
                    done.append(node)
                else:
                    open_.append(node)
            children = yield from expand(open_, 1, logprobs=self.logprobs)
            nodes = [kid for (kid,) in children]
        return done

    def _agreed(self, kept: Sequence[Node], equal: Equal) -> bool:
        """Whether the leading answer holds ``consensus`` of the candidates' summed confidence."""
        if self.consensus is None:
            return False
        weights = [class_confidence(c) for c in answer_classes(kept, equal)]
        return bool(weights) and max(weights) >= self.consensus * sum(weights)
