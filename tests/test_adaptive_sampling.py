"""Adaptive sampling against hand-computed outcomes, with a scripted policy."""
import math

import pytest

from treesearch.algorithms import AdaptiveSampling, algorithm_class, independent_samples, make_algorithm, parameters
from treesearch.algorithms.adaptive import beta_leader_probability, decisive, vote_counts
from treesearch.runner import Runner, SearchLimits
from treesearch.testing import ScriptedPolicy


def _script(answer_of):
    """Step 1 is 'Step 1 i' (i: the sample's place among all first steps drawn, round after round);
    step 2 answers ``answer_of(i)``."""
    drawn = [0]

    def script(question, steps, k, seed):
        if not steps:
            drawn[0] += 1
            return f"Step 1 {drawn[0] - 1}"
        return f"The answer is {answer_of(int(steps[0].split()[-1]))}"
    return script


def _run(alg, answer_of, limits=SearchLimits()):
    policy = ScriptedPolicy(_script(answer_of))
    [res] = Runner(policy, None, limits=limits, progress=False).run(["q"], alg)
    return policy, res


# ---- the Beta posterior ----------------------------------------------------------------------
@pytest.mark.parametrize("leader,runner_up,expected", [
    (0, 0, 1 / 2),      # Beta(1, 1): uniform
    (3, 0, 15 / 16),    # Beta(4, 1), density 4x^3: 1 - (1/2)^4
    (4, 0, 31 / 32),    # Beta(5, 1): 1 - (1/2)^5
    (1, 1, 1 / 2),      # Beta(2, 2): symmetric
    (2, 1, 11 / 16),    # Beta(3, 2), density 12x^2(1-x): [4x^3 - 3x^4] from 1/2 to 1 = 1 - 5/16
    (5, 1, 15 / 16),    # Beta(6, 2): P(Bin(7, 1/2) >= 2) = 1 - 8/128
    (6, 1, 247 / 256),  # Beta(7, 2): P(Bin(8, 1/2) >= 2) = 1 - 9/256
    (6, 3, 848 / 1024),  # Beta(7, 4): P(Bin(10, 1/2) >= 4) = 1 - (1 + 10 + 45 + 120)/1024
    (0, 3, 1 / 16),     # Beta(1, 4): the mirror of (3, 0)
])
def test_beta_leader_probability_by_hand(leader, runner_up, expected):
    assert beta_leader_probability(leader, runner_up) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("leader,runner_up", [(0, 0), (3, 0), (2, 1), (6, 3), (1, 4), (10, 7), (12, 2)])
def test_beta_leader_probability_matches_a_numerical_integral(leader, runner_up):
    """A midpoint sum of the Beta(a, b) density over (1/2, 1): checks the binomial identity itself."""
    a, b = 1 + leader, 1 + runner_up
    norm = math.factorial(a + b - 1) / (math.factorial(a - 1) * math.factorial(b - 1))  # 1 / B(a, b)
    m = 10_000
    h = 0.5 / m
    xs = (0.5 + (i + 0.5) * h for i in range(m))
    integral = sum(norm * x ** (a - 1) * (1 - x) ** (b - 1) for x in xs) * h
    assert beta_leader_probability(leader, runner_up) == pytest.approx(integral, abs=1e-7)


def test_beta_leader_probability_rejects_negative_votes():
    with pytest.raises(ValueError, match="runner_up_votes"):
        beta_leader_probability(2, -1)
    with pytest.raises(ValueError, match="leader_votes"):
        beta_leader_probability(-1, 0)


# ---- the stopping rules -----------------------------------------------------------------------
def test_vote_counts_normalize_and_skip_unanswered():
    assert vote_counts(["42", " 42.", "X", None, "x", "42"]) == [3, 2]  # "x" is "X"; None votes for nothing
    assert vote_counts([None, None]) == []


@pytest.mark.parametrize("answers,kwargs,expected", [
    (["A", "A", "A", "B"], {}, True),              # 3/4 = 0.75: at least the threshold
    (["A", "A", "B", "B"], {}, False),             # 2/4
    (["A", "A", "A", "B", "B"], {}, False),        # 3/5 = 0.6
    (["A", "A", "A"], {}, False),                  # unanimous but 3 < min_samples = 4
    (["A", "A", "A"], {"min_samples": 3}, True),
    (["A", "A", "A", None], {}, True),             # None is drawn (4 samples) but not answered: 3/3
    (["A", "A", None, None], {}, True),            # 2/2 answered (2/4 drawn would not be enough)
    (["A", "A", None, None, "B"], {}, False),      # 2/3 answered
    ([None] * 6, {}, False),                       # nothing answered: nothing to stop on
    (["7", " 7.", "7", "8"], {}, True),            # normalized string equality: 3/4
    (["A", "A", "A", "B"], {"threshold": 0.8}, False),
    (["A"] * 4, {"threshold": 1.0}, True),
    (["A"] * 4 + ["B"], {"threshold": 1.0}, False),
])
def test_supermajority_rule_by_hand(answers, kwargs, expected):
    assert decisive(answers, "supermajority", **kwargs) is expected


@pytest.mark.parametrize("answers,kwargs,expected", [
    (["A"] * 4, {}, True),                         # Beta(5, 1): 31/32 = 0.969 >= 0.95
    (["A"] * 3, {}, False),                        # Beta(4, 1): 15/16 = 0.9375
    (["A"] * 3 + [None] * 5, {}, False),           # unanswered samples add no evidence
    (["A"] * 5 + ["B"], {}, False),                # Beta(6, 2): 15/16
    (["A"] * 6 + ["B"], {}, True),                 # Beta(7, 2): 247/256 = 0.965
    (["A"] * 6 + ["B"] + ["C"] * 3, {}, False),    # the runner-up is C: Beta(7, 4) = 0.828
    (["A"] * 6 + ["B", "C", "D"], {}, True),       # spread dissent: runner-up has 1, Beta(7, 2)
    (["A"] * 3, {"confidence": 0.9}, True),        # 0.9375 >= 0.9
    (["A", "B"] * 5, {"confidence": 0.51}, False),  # a tie is P = 1/2 whatever the count
    ([None] * 4, {}, False),
])
def test_beta_rule_by_hand(answers, kwargs, expected):
    assert decisive(answers, "beta", **kwargs) is expected


def test_beta_rule_ignores_min_samples_and_supermajority_ignores_confidence():
    assert decisive(["A"] * 4, "beta", min_samples=100)
    assert not decisive(["A"] * 4, "supermajority", min_samples=100)
    assert decisive(["A"] * 4, "supermajority", confidence=0.999)


def test_decisive_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="rule must be one of"):
        decisive(["A"], "majority")


# ---- the search --------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["supermajority", "beta"])
def test_unanimous_answers_stop_after_the_first_round(rule):
    policy, res = _run(AdaptiveSampling(n=16, batch=4, rule=rule), lambda k: "42")
    assert len(res.candidates) == 4 and [c.answer for c in res.candidates] == ["42"] * 4
    # One round: 4 first steps from the root, then their 4 answers at depth 2; nothing more is drawn.
    assert policy.widths() == [[4], [1, 1, 1, 1]]
    assert sorted(c.steps[0] for c in res.candidates) == [f"Step 1 {k}\n" for k in range(4)]


@pytest.mark.parametrize("rule", ["supermajority", "beta"])
@pytest.mark.parametrize("n,batch,rounds", [(16, 4, [4, 4, 4, 4]), (10, 4, [4, 4, 2]), (3, 4, [3]), (5, 1, [1] * 5)])
def test_alternating_answers_run_to_the_cap_and_the_last_round_is_cut_to_fit(rule, n, batch, rounds):
    policy, res = _run(AdaptiveSampling(n=n, batch=batch, rule=rule), lambda k: "AB"[k % 2])
    assert len(res.candidates) == n
    assert policy.widths() == [w for r in rounds for w in ([r], [1] * r)]
    assert len({c.node_id for c in res.candidates}) == n


def test_the_search_stops_at_the_first_decisive_round():
    # Answers by first-step index: round 1 (0-3) A A B B: not decisive; round 2 (4-7) A A A A:
    # 6/8 = 0.75 after two rounds. The cap of 16 is never reached.
    answers = "AABBAAAA" + "B" * 8
    policy, res = _run(AdaptiveSampling(n=16, batch=4), lambda k: answers[k])
    assert len(res.candidates) == 8 and policy.widths() == [[4], [1] * 4, [4], [1] * 4]
    assert sorted(c.answer for c in res.candidates) == ["A"] * 6 + ["B"] * 2
    # The beta rule wants more: after round 2 it is Beta(7, 3) = P(Bin(9) >= 3) = 0.910 < 0.95;
    # round 3 adds 4 B: Beta(7, 7) = 1/2; round 4 adds 4 B: the runner-up leads, and the cap ends it.
    policy, res = _run(AdaptiveSampling(n=16, batch=4, rule="beta"), lambda k: answers[k])
    assert len(res.candidates) == 16


def test_unanswered_samples_are_drawn_but_do_not_vote():
    # Sample k answers at depth 2 when k % 4 < 2; samples 2, 3, 6, 7, ... never answer and hit the depth cap.
    def script(question, steps, k, seed):
        if not steps:
            return f"Step 1 {k}"
        first = int(steps[0].split()[-1])
        return "Step on" if first % 4 >= 2 else "The answer is 5"

    policy = ScriptedPolicy(script)
    limits = SearchLimits(max_depth=3)
    [res] = Runner(policy, None, limits=limits, progress=False).run(["q"], AdaptiveSampling(n=12, batch=4))
    # Round 1: 2 answers "5" and 2 capped: 2/2 answered (not 2/4: no vote is no dissent), 4 drawn: stop.
    assert len(res.candidates) == 4
    assert sorted(str(c.answer) for c in res.candidates) == ["5", "5", "None", "None"]
    capped = [c for c in res.candidates if c.answer is None]
    assert all(c.finish_reason == "depth_cap" and len(c.steps) == 3 for c in capped)
    # With min_samples = 5 the first round is not enough; round 2 brings 2 more "5": 4/4 answered.
    policy = ScriptedPolicy(script)
    [res] = Runner(policy, None, limits=limits, progress=False).run(
        ["q"], AdaptiveSampling(n=12, batch=4, min_samples=5))
    assert len(res.candidates) == 8


def test_each_round_draws_new_first_steps():
    """Every round expands the root again with ``redraw``: its seed differs from the earlier rounds',
    so no (seed, k) repeats. Without it the Runner would seed every root expansion alike and the
    rounds would vote with copies of the first round's samples."""
    policy, res = _run(AdaptiveSampling(n=12, batch=4), lambda k: "AB"[k % 2])
    root = [r for call in policy.calls for r in call if policy._parse(r.prefix_ids)[1] == ()]
    assert [r.width for r in root] == [4, 4, 4] and len({r.seed for r in root}) == 3
    assert len({c.steps[0] for c in res.candidates}) == 12


def test_a_solution_that_answers_in_its_first_step_needs_no_completion():
    policy = ScriptedPolicy(lambda q, steps, k, seed: "The answer is 3")
    [res] = Runner(policy, None, progress=False).run(["q"], AdaptiveSampling(n=8, batch=4))
    assert len(res.candidates) == 4 and policy.widths() == [[4]]


def test_through_the_runner_by_registry_name():
    alg = make_algorithm("adaptive_sampling", n=8)
    assert alg == AdaptiveSampling(n=8) and algorithm_class("adaptive_sampling") is AdaptiveSampling
    assert alg.budget_param == "n" and not alg.needs_prm and not independent_samples(AdaptiveSampling)
    assert parameters(AdaptiveSampling) == ["n", "batch", "rule", "threshold", "confidence", "min_samples"]
    policy = ScriptedPolicy(_script(lambda k: "7"))
    res = Runner(policy, None, progress=False).run(["a", "b"], alg)
    assert [len(r.candidates) for r in res] == [4, 4]
    assert [len(call) for call in policy.calls] == [2, 8]  # the two problems share each batch
    # The ledger counts what was generated: one round, 4 first steps of 9 tokens ("Step 1 i\n") and 4
    # answers of 16 ("The answer is 7\n") per problem.
    assert [r.ledger.generated_tokens for r in res] == [4 * 9 + 4 * 16] * 2
    with pytest.raises(ValueError, match="bad parameters for 'adaptive_sampling'"):
        make_algorithm("adaptive_sampling", batchsize=2)


@pytest.mark.parametrize("params,field", [
    ({"n": 0}, "AdaptiveSampling.n must be >= 1"),
    ({"batch": 0}, "AdaptiveSampling.batch must be >= 1"),
    ({"rule": "majority"}, "AdaptiveSampling.rule must be one of"),
    ({"threshold": 0.5}, r"AdaptiveSampling.threshold must be in \(0.5, 1\]"),
    ({"threshold": 1.01}, r"AdaptiveSampling.threshold must be in \(0.5, 1\]"),
    ({"confidence": 0.5}, r"AdaptiveSampling.confidence must be in \(0.5, 1\)"),
    ({"confidence": 1.0}, r"AdaptiveSampling.confidence must be in \(0.5, 1\)"),
    ({"min_samples": 0}, "AdaptiveSampling.min_samples must be >= 1"),
])
def test_invalid_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        AdaptiveSampling(**params)
    with pytest.raises(ValueError, match=field):
        make_algorithm("adaptive_sampling", **params)


def test_boundary_parameters_are_accepted():
    AdaptiveSampling(n=1, batch=1, threshold=1.0, confidence=0.51, min_samples=1)
