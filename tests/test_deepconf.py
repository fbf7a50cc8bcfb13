"""DeepConf and the policy's token confidence, hand-computed with the scripted policy's log-probabilities."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from experiments.config import VotingConfig
from experiments.judging import judge
from experiments.records import CandidateRecord
from treesearch.algorithms import DeepConf, Sampling, algorithm_class, make_algorithm
from treesearch.confidence import (falls_below, group_confidences, path_confidences, percentile, token_confidence,
                                   trace_confidence)
from treesearch.runner import Runner
from treesearch.testing import ScriptedPolicy
from treesearch.voting import confidence_vote, vote

STEP, ANSWER = 4, 17  # tokens of a scripted step ("1rk\n") and of its two-digit answer ("The answer is ab\n")
TRACE = 3 * STEP + ANSWER


def traces(conf: Callable[[int, int], list[float]], answer: Callable[[int, int], str] = lambda r, k: f"{r}{k}"):
    """A scripted policy whose trace (r, k) is sample k of the r-th expansion of the root: three steps
    ``f"{d}{r}{k}\\n"`` then ``The answer is {answer(r, k)}``; every token of its step d has confidence
    ``conf(r, k)[d - 1]`` (top-2 log-probabilities -c + 0.5 and -c - 0.5). Counts log-probability calls."""
    rounds: dict[int, int] = {}
    calls = []

    def name(steps: tuple[str, ...], k: int, seed: int) -> tuple[int, int]:
        if not steps:  # a root expansion: rounds in the order their seeds first come
            return rounds.setdefault(seed, len(rounds)), k
        return int(steps[0][1]), int(steps[0][2])

    def script(q: str, steps: tuple[str, ...], k: int, seed: int) -> str:
        r, i = name(steps, k, seed)
        return f"The answer is {answer(r, i)}" if len(steps) == 3 else f"{len(steps) + 1}{r}{i}"

    def logprobs(q: str, steps: tuple[str, ...], k: int, seed: int) -> list[list[float]]:
        calls.append(1)
        c = conf(*name(steps, k, seed))[len(steps)]
        return [[-c + 0.5, -c - 0.5]] * ANSWER

    policy = ScriptedPolicy(script, logprobs=logprobs)
    policy.logprob_calls = calls  # type: ignore[attr-defined]
    return policy


def run(policy, algo):
    return Runner(policy, None, progress=False).run(["Q"], algo)[0]


def by_name(res) -> dict[str, object]:
    """Each candidate by its trace's name ("rk")."""
    return {c.steps[0][1:3]: c for c in res.candidates}


# ---- the measures, on given numbers ------------------------------------------------------------------
def test_token_group_and_trace_confidence_by_hand():
    assert token_confidence([-0.5, -1.0, -3.0]) == 1.5
    assert group_confidences([1, 2, 3, 4, 5], 2) == [1.5, 2.5, 3.5, 4.5]  # the window slides a token at a time
    assert group_confidences([1, 2, 3, 4, 5], 3) == [2, 3, 4]
    assert group_confidences([1, 2, 3, 4, 5], 6) == [3]  # shorter than the window: one group, all its tokens
    confs = [9] * 19 + [1, 3]
    assert trace_confidence([5, 1, 3, 4], 2) == 2  # lowest of 3, 2, 3.5
    assert trace_confidence(confs, 1, "lowest") == 1
    assert trace_confidence(confs, 1, "bottom10") == 2  # 21 groups: the lowest 2, mean of 1 and 3
    assert trace_confidence(confs, 2, "bottom10") == 3.5  # 20 groups: the lowest two, (1, 3) = 2 and (9, 1) = 5
    assert trace_confidence(confs, 3, "tail") == pytest.approx(13 / 3)
    with pytest.raises(ValueError):
        trace_confidence(confs, 2, "median")


def test_the_online_stop_looks_at_full_windows_ending_in_the_new_step():
    assert falls_below([4, 4, 4, 1, 1], 2, 3, new=2)  # windows (4, 1) and (1, 1)
    assert not falls_below([4, 4, 4, 4, 2], 2, 3, new=1)  # (4, 2) = 3 is not below
    assert not falls_below([1, 1, 4, 4, 4], 2, 3, new=2)  # the low window ended in an earlier step
    assert not falls_below([1, 1, 1], 4, 3, new=3)  # no full window yet: never stopped
    assert falls_below([1, 1, 1, 1], 4, 3, new=1)


def test_percentile_interpolates_as_the_papers_threshold():
    assert percentile([4, 1, 3, 2], 90) == pytest.approx(3.7)  # sorted 1 2 3 4, position 2.7
    assert (percentile([4, 1, 3, 2], 0), percentile([4, 1, 3, 2], 50), percentile([4, 1, 3, 2], 100)) == (1, 2.5, 4)
    assert percentile([7], 90) == 7


# ---- the runner's token confidences --------------------------------------------------------------------
def test_nodes_keep_a_confidence_per_sampled_token_only_when_asked():
    policy = traces(lambda r, k: [1.0 + k, 2.0, 3.0, 4.0])
    res = run(policy, DeepConf(n=2, eta=100, window=STEP, logprobs=2))
    steps = [n for n in res.tree.nodes if not n.is_root]
    assert all(len(n.token_confidence) == n.num_tokens for n in steps)
    first = res.tree.root.children
    assert [n.token_confidence for n in first] == [(1.0,) * STEP, (2.0,) * STEP]
    assert path_confidences(res.tree.nodes[-1]) == [2.0] * STEP + [2.0] * STEP + [3.0] * STEP + [4.0] * ANSWER
    calls = len(policy.logprob_calls)
    plain = run(policy, Sampling(n=2))
    assert all(n.token_confidence is None and n.confidence is None for n in plain.tree.nodes)
    assert len(policy.logprob_calls) == calls  # not asked: nothing computed
    assert [c.confidence for c in plain.candidates] == [None, None]


def test_a_policy_without_log_probabilities_fails_naming_itself():
    script = traces(lambda r, k: [1.0] * 4).script
    with pytest.raises(TypeError, match="ScriptedPolicy returns no log-probabilities"):
        run(ScriptedPolicy(script), DeepConf(n=2))
    short = ScriptedPolicy(script, logprobs=lambda q, steps, k, seed: [[-1.0]] * 2)
    with pytest.raises(RuntimeError, match="log-probabilities for 2 of a step's 4 tokens"):
        run(short, DeepConf(n=2))


# ---- offline: keep the top eta % --------------------------------------------------------------------------
def test_offline_keeps_the_top_eta_percent_and_votes_by_confidence():
    conf = [1, 1, 1, 1, 1, 1, 1, 2, 2, 9]
    policy = traces(lambda r, k: [conf[k]] * 4, lambda r, k: "66" if k == 9 else "55" if k >= 7 else "44")
    res = run(policy, DeepConf(n=10, eta=30, window=STEP))
    # the 70th percentile of the ten: position 6.3 between 1 and 2 -> 1.3; traces 7, 8 and 9 are above it
    assert {k: c.confidence for k, c in by_name(res).items()} == {"07": 2, "08": 2, "09": 9}
    assert res.ledger.generated_tokens == 10 * TRACE  # the dropped traces were generated all the same
    votes = judge(res.candidates, "66", VotingConfig(), lambda a, b: a == b)["votes"]
    assert votes["majority"].answer == "55" and votes["confidence"].answer == "66" and votes["confidence"].correct
    # ties at the cut are kept; eta 100 keeps every trace
    assert len(run(traces(lambda r, k: [3 if k else 1] * 4), DeepConf(n=4, eta=10, window=STEP)).candidates) == 3
    assert len(run(traces(lambda r, k: [k + 1] * 4), DeepConf(n=4, eta=100, window=STEP)).candidates) == 4


def test_offline_trace_confidence_is_the_lowest_window_by_default():
    # trace 0 dips to 1 for one step: its lowest 4-token window is 1; trace 1's steps are all 3
    policy = traces(lambda r, k: [5, 1, 5, 5] if k == 0 else [3, 3, 3, 3])
    res = run(policy, DeepConf(n=2, eta=50, window=STEP))
    assert [(c.steps[0], c.confidence) for c in res.candidates] == [("101\n", 3)]
    # a window longer than the trace: the mean of all its tokens (trace 0: (20 + 4 + 20 + 85) / 29)
    wide = run(traces(lambda r, k: [5, 1, 5, 5] if k == 0 else [3, 3, 3, 3]), DeepConf(n=2, eta=100, window=64))
    assert by_name(wide)["00"].confidence == pytest.approx((5 * 4 + 1 * 4 + 5 * 4 + 5 * 17) / TRACE)


# ---- online: threshold from the warm-up, stop below it ------------------------------------------------------
ONLINE = {(0, 0): [2] * 4, (0, 1): [4] * 4, (0, 2): [6] * 4, (0, 3): [8] * 4,
          (1, 0): [9, 6, 2, 9], (1, 1): [9, 9, 9, 9]}


def test_online_stops_a_trace_at_the_step_its_window_falls_below_the_warmup_threshold():
    res = run(traces(lambda r, k: ONLINE[(r, k)]), DeepConf(n=6, mode="online", warmup=4, eta=50, window=STEP))
    # threshold: the 50th percentile of the warm-up's 2, 4, 6, 8 = 5; warm-ups 6 and 8 stay candidates
    assert {k: c.confidence for k, c in by_name(res).items()} == {"02": 6, "03": 8, "11": 9}
    nodes = {n.text: n for n in res.tree.nodes}
    assert nodes["210\n"].children  # confidence 6 >= 5: it went on
    assert not nodes["310\n"].children and nodes["310\n"].finish_reason == "stopped"  # 2 < 5: stopped right there
    assert "The answer is 10\n" not in nodes
    # the stopped trace's 3 steps are spent: 4 warm-ups + 1 finished + 12 tokens of the stopped one
    assert res.ledger.generated_tokens == 5 * TRACE + 3 * STEP == sum(n.num_tokens for n in res.tree.nodes[1:])
    assert sum(c.num_tokens for c in res.candidates) == 3 * TRACE


def test_online_with_no_more_budget_than_warmup_is_offline():
    conf = lambda r, k: [k + 1.0] * 4  # noqa: E731
    online = run(traces(conf), DeepConf(n=4, mode="online", warmup=16, eta=50, window=STEP))
    offline = run(traces(conf), DeepConf(n=4, eta=50, window=STEP))
    assert [(c.steps, c.confidence) for c in online.candidates] == [(c.steps, c.confidence) for c in offline.candidates]


def test_online_stops_sampling_once_the_leader_holds_the_consensus_share():
    # warm-up: "77" at 8 and "33" at 2 (share 0.8); each later round one "77" at 8: 16/18 = 0.89, then 24/26 = 0.92
    conf = lambda r, k: [8] * 4 if (r, k) != (0, 1) else [2] * 4  # noqa: E731
    answer = lambda r, k: "33" if (r, k) == (0, 1) else "77"  # noqa: E731
    algo = DeepConf(n=10, mode="online", warmup=2, eta=100, window=STEP, batch=1, consensus=0.9)
    res = run(traces(conf, answer), algo)
    assert len(res.tree.root.children) == 4 and len(res.candidates) == 4
    unbounded = run(traces(conf, answer), DeepConf(n=10, mode="online", warmup=2, eta=100, window=STEP, batch=1))
    assert len(unbounded.tree.root.children) == 10


# ---- voting and records ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class C:
    answer: str | None
    confidence: float
    step_scores: tuple[float, ...] = ()


def test_confidence_weighted_vote_by_hand():
    cands = [C("A", 1.0), C("A", 1.0), C("B", 2.5), C(None, 9.0)]
    assert confidence_vote(cands) == "B" and vote(cands, "majority") == "A"  # 2.5 > 2; no answer votes for nothing
    assert confidence_vote(cands + [C("a ", 0.6)]) == "A"  # 2.6: answers compared as voting compares them
    assert confidence_vote([C("A", 1.0), C("B", 1.0)]) == "A"  # ties: the first seen
    assert confidence_vote([C(None, 1.0)]) is None


def test_records_carry_the_confidence_and_its_vote_only_for_deepconf():
    res = run(traces(lambda r, k: [k + 1.0] * 4), DeepConf(n=2, eta=100, window=STEP))
    assert "confidence" in judge(res.candidates, "01", VotingConfig(), lambda a, b: a == b)["votes"]
    plain = run(traces(lambda r, k: [1.0] * 4), Sampling(n=2))
    assert set(judge(plain.candidates, "01", VotingConfig(), lambda a, b: a == b)["votes"]) == {
        "majority", "best_of_n/last", "weighted/last"}
    rec = CandidateRecord("1", True, (), 16, "answer", sample=1, confidence=2.5)
    assert CandidateRecord.from_json(rec.to_json()) == rec
    assert "confidence" not in CandidateRecord("1", True, (), 16, "answer", sample=1).to_json()


def test_options():
    assert algorithm_class("deepconf") is DeepConf
    assert make_algorithm("deepconf", n=8, mode="online", warmup=4).warmup == 4
    for bad in ({"mode": "both"}, {"eta": 0}, {"window": 0}, {"measure": "median"}, {"logprobs": 0},
                {"consensus": 0.9}, {"batch": 2}, {"mode": "online", "measure": "tail"},
                {"mode": "online", "consensus": 0.5}):
        with pytest.raises(ValueError):
            DeepConf(**bad)
