"""The policy's confidence in its own tokens (DeepConf: Fu et al. 2025, "Deep Think with Confidence").

* token confidence ``C_i = -(1/k) sum_{j<=k} log P_i(j)`` over the k most likely tokens at position i
  (high when the distribution is peaked: the runners-up get little mass);
* group confidence: the mean of ``C`` over a sliding window of ``window`` consecutive tokens;
* trace confidence (``MEASURES``): the lowest group confidence (``"lowest"``), the mean of the lowest
  10 % of groups (``"bottom10"``) or the mean over the last ``window`` tokens (``"tail"``).

As in the paper's code, a trace shorter than the window has one group, all its tokens; the online
stopping rule (``falls_below``) looks only at full windows, so no trace stops before it has one.
Backends return top-k log-probabilities (``StepSample.top_logprobs``), the Runner turns them into
token confidences here (``Node.token_confidence``), and everything else reads those.
"""
from __future__ import annotations

import math
from typing import Sequence

from .tree import Node, Tree

MEASURES = ("lowest", "bottom10", "tail")


def token_confidence(top_logprobs: Sequence[float]) -> float:
    """``-mean`` of one position's top-k log-probabilities."""
    if not top_logprobs:
        raise ValueError("a token confidence needs at least one log-probability")
    return -_mean(top_logprobs)


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """The mean of every ``window`` consecutive token confidences (sliding by one token); a trace
    shorter than the window: the mean of all its tokens."""
    _check(confidences, window)
    if len(confidences) < window:
        return [_mean(confidences)]
    return [_mean(confidences[i:i + window]) for i in range(len(confidences) - window + 1)]


def trace_confidence(confidences: Sequence[float], window: int, measure: str = "lowest") -> float:
    """One trace's confidence from its token confidences, by ``measure`` (``MEASURES``)."""
    if measure == "tail":
        _check(confidences, window)
        return _mean(confidences[-window:])
    groups = group_confidences(confidences, window)
    if measure == "lowest":
        return min(groups)
    if measure == "bottom10":
        return _mean(sorted(groups)[: max(1, len(groups) // 10)])
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")


def falls_below(confidences: Sequence[float], window: int, threshold: float, new: int) -> bool:
    """Whether a full window ending in the last ``new`` tokens has a mean below ``threshold``: the
    online stop, checked as each step arrives (windows ending earlier were checked with their step)."""
    first = max(0, len(confidences) - new - window + 1)  # the first window that ends in the new tokens
    return any(_mean(confidences[i:i + window]) < threshold for i in range(first, len(confidences) - window + 1))


def path_confidences(node: Node) -> list[float]:
    """The token confidences of ``node``'s whole solution (``Tree.path``), first step first."""
    out: list[float] = []
    for n in Tree.path(node):
        if n.token_confidence is None:
            raise ValueError(f"node {n.id} has no token confidences: expand with logprobs=k to get them")
        out.extend(n.token_confidence)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linearly interpolated between order statistics (numpy's
    default, the paper's threshold)."""
    if not values or not 0 <= q <= 100:
        raise ValueError(f"percentile needs values and 0 <= q <= 100, got {len(values)} values, q={q}")
    v = sorted(values)
    pos = q / 100 * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _check(confidences: Sequence[float], window: int) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not confidences:
        raise ValueError("a trace without tokens has no confidence")
