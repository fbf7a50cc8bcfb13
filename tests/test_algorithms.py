"""Every algorithm against hand-computed outcomes, with a scripted policy and PRM."""
import pytest

from treesearch.algorithms import (DVTS, MCTS, BeamSearch, BudgetForcing, Greedy, Lookahead, Rebase, Sampling,
                                   allocate_widths,
                                   make_algorithm)
from treesearch.runner import Runner, SearchLimits
from treesearch.testing import ScriptedPRM, ScriptedPolicy, depth_script


# ---- REBASE allocation ------------------------------------------------------------------
@pytest.mark.parametrize("scores,budget,temp,expected", [
    ([0.9, 0.5, 0.1], 8, 0.2, [7, 1, 0]),        # 8*1/1.1536 -> 7; 1*0.1353/0.1536 -> 1; budget gone
    ([0.5, 0.5, 0.5, 0.5], 6, 0.1, [2, 2, 1, 1]),  # ties: ceil(1.5), ceil(4/3), 1, 1
    ([0.3], 5, 0.1, [5]),                          # one node takes the whole budget
    ([0.1, 0.9, 0.5], 2, 1.0, [0, 1, 1]),          # budget below node count: the lowest is pruned
    ([0.2, 0.8], 0, 0.1, [0, 0]),
])
def test_allocate_widths(scores, budget, temp, expected):
    widths = allocate_widths(scores, budget, temp)
    assert widths == expected and sum(widths) == budget


def test_allocate_widths_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        allocate_widths([0.1], 3, 0.0)
    with pytest.raises(ValueError, match="budget"):
        allocate_widths([0.1], -1, 0.1)


def test_rebase_budget_is_decremented_by_completed_solutions():
    policy = ScriptedPolicy(depth_script(3, finished=lambda k: k in (1, 3)))
    prm = ScriptedPRM(lambda q, steps: 0.5)
    [res] = Runner(policy, prm, progress=False).run(["q"], Rebase(width=4, temperature=0.1))
    widths = [[r.width for r in call] for call in policy.calls]
    # 4 first steps, 2 of them answer: B = 2 split over the 2 open nodes; each child is at depth 2,
    # then depth 3 answers: 4 candidates in all, 2 from depth 1 and 2 from depth 3.
    assert widths == [[4], [1, 1], [1, 1]]
    assert len(res.candidates) == 4
    assert sorted(len(c.steps) for c in res.candidates) == [1, 1, 3, 3]


def test_rebase_all_terminal_stops_after_one_round():
    policy = ScriptedPolicy(depth_script(1))
    [res] = Runner(policy, ScriptedPRM(lambda q, s: 1.0), progress=False).run(["q"], Rebase(width=5))
    assert len(policy.calls) == 1 and len(res.candidates) == 5


def test_rebase_follows_the_reward():
    """Children of the high-reward node get the budget (T small)."""
    policy = ScriptedPolicy(depth_script(3))
    prm = ScriptedPRM(lambda q, steps: 0.9 if steps[0].startswith("Step 1 0") else 0.1)
    [res] = Runner(policy, prm, progress=False).run(["q"], Rebase(width=4, temperature=0.1))
    second = policy.calls[1]
    assert [r.width for r in second] == [4]  # node k=0 takes ceil(4*1/(1+3e^-8)) = 4
    assert len(res.candidates) == 4


@pytest.mark.parametrize("alg", [Rebase(width=4), Sampling(n=4), BeamSearch(n=4, beam_width=2)])
def test_depth_cap_ends_paths_without_losing_budget(alg):
    policy = ScriptedPolicy(depth_script(100))
    prm = ScriptedPRM(lambda q, s: 0.5)
    [res] = Runner(policy, prm, limits=SearchLimits(max_depth=3), progress=False).run(["q"], alg)
    assert len(res.candidates) == 4
    assert all(c.answer is None and c.finish_reason == "depth_cap" and len(c.steps) == 3 for c in res.candidates)


def test_token_cap_truncates_the_last_step():
    policy = ScriptedPolicy(lambda q, steps, k, seed: "Step xxxx")  # 10 tokens with the newline
    limits = SearchLimits(max_solution_tokens=25, max_step_tokens=256)
    [res] = Runner(policy, None, limits=limits, progress=False).run(["q"], Sampling(n=2))
    assert [r.max_new_tokens for r in policy.calls[2]] == [5, 5]
    for c in res.candidates:
        assert c.num_tokens == 25 and c.finish_reason == "token_cap" and c.steps[-1] == "Step "


def test_sampling_and_greedy():
    policy = ScriptedPolicy(depth_script(3))
    res = Runner(policy, None, progress=False).run(["a", "b", "c"], Sampling(n=6))
    assert [len(r.candidates) for r in res] == [6, 6, 6]
    assert [len(c) for c in policy.calls] == [3, 18, 18]  # the three problems share every batch
    assert sorted(c.answer for c in res[0].candidates) == ["0"] * 6  # width-1 continuations: k = 0
    policy.calls.clear()
    [g] = Runner(policy, None, progress=False).run(["a"], Greedy())
    assert len(g.candidates) == 1 and all(r.greedy for call in policy.calls for r in call)


def test_wall_time_includes_the_final_scoring(monkeypatch):
    """Sampling's candidates are scored after the search ends; that time is part of the record's."""
    from treesearch import runner as runner_module

    clock = [0.0]
    monkeypatch.setattr(runner_module.time, "perf_counter", lambda: clock[0])

    class SlowPRM(ScriptedPRM):
        def score(self, chains):  # every scored chain costs 1 s of the fake clock
            clock[0] += len(chains)
            return super().score(chains)

    policy = ScriptedPolicy(depth_script(2))
    res = Runner(policy, SlowPRM(lambda q, steps: 0.5), progress=False).run(["a", "b"], Sampling(n=3))
    # No time passes while sampling; the final scoring of 2 x 3 chains takes 6 s, 3 s per problem.
    assert [r.wall_time for r in res] == [pytest.approx(3.0), pytest.approx(3.0)]


def test_beam_search_keeps_top_n_over_m():
    scores = {"Step 1 0": 0.1, "Step 1 1": 0.9, "Step 1 2": 0.5, "Step 1 3": 0.7}
    policy = ScriptedPolicy(depth_script(3))
    prm = ScriptedPRM(lambda q, steps: scores.get(steps[0].strip(), 0.5) if len(steps) == 1 else 0.5)
    Runner(policy, prm, progress=False).run(["q"], BeamSearch(n=4, beam_width=2))
    second = policy.calls[1]
    kept = [policy._parse(r.prefix_ids)[1][0].strip() for r in second]
    assert kept == ["Step 1 1", "Step 1 3"] and [r.width for r in second] == [2, 2]


def test_mcts_selection_and_backup_by_hand():
    values = {"a": 0.8, "b": 0.4, "a0": 0.2, "a1": 0.6, "b0": 0.5, "b1": 0.5}
    names = {0: "a", 1: "b"}

    def script(q, steps, k, seed):
        return steps[-1].strip() + str(k) if steps else names[k]

    policy = ScriptedPolicy(script)
    prm = ScriptedPRM(lambda q, steps: values[steps[-1].strip()])
    [res] = Runner(policy, prm, progress=False, score_candidates=False).run(
        ["q"], MCTS(expansions=3, root_width=2, width=2, c=1.0))
    expanded = [policy._parse(call[0].prefix_ids)[1] for call in policy.calls]
    assert expanded == [(), ("a\n",), ("b\n",)]  # UCT: a (1.633 vs 1.233), then b (1.577 vs 1.213)
    root = res.tree.root
    a, b = root.children
    assert a.visits == 3 and a.value == pytest.approx((0.8 + 0.2 + 0.6) / 3)
    assert b.visits == 3 and b.value == pytest.approx((0.4 + 0.5 + 0.5) / 3)
    assert root.visits == 6 and root.value == pytest.approx((0.8 + 0.4 + 0.2 + 0.6 + 0.5 + 0.5) / 6)
    assert res.candidates == []  # no finished solution: MCTS spends its budget on partial paths


def test_mcts_rollouts_add_candidates_but_are_not_selected():
    policy = ScriptedPolicy(depth_script(3))
    prm = ScriptedPRM(lambda q, steps: 0.5)
    [res] = Runner(policy, prm, progress=False).run(["q"], MCTS(expansions=2, root_width=2, rollout=True))
    # root -> 2 kids, each rolled out to depth 3; second expansion picks a kid (not a rollout node)
    assert len(res.candidates) == 4
    assert len(res.tree.root.children) == 2 and sum(len(k.children) for k in res.tree.root.children) == 4


def test_make_algorithm_registry():
    assert make_algorithm("rebase", width=8, temperature=0.2) == Rebase(width=8, temperature=0.2)
    with pytest.raises(ValueError, match="unknown search algorithm 'rebas'"):
        make_algorithm("rebas")
    with pytest.raises(ValueError, match="bad parameters for 'mcts'"):
        make_algorithm("mcts", widht=2)
    with pytest.raises(ValueError, match="width must be >= 1"):
        Rebase(width=0)


# ---- fidelity fixes ----------------------------------------------------------------------
def test_beam_returns_n_when_the_remainder_is_not_a_multiple_of_the_width():
    policy = ScriptedPolicy(depth_script(3, finished=lambda k: k == 0))
    [res] = Runner(policy, ScriptedPRM(lambda q, s: 0.5), progress=False).run(["q"], BeamSearch(n=6, beam_width=4))
    # 6 first steps, one answers: 5 missing -> ceil(5/4) = 2 beams with 4 + 1 children (was 1 beam x 4).
    assert [r.width for r in policy.calls[1]] == [4, 1]
    assert len(res.candidates) == 6


def test_split_budget_by_hand():
    from treesearch.algorithms.beam import split_budget
    from treesearch.tree import Tree

    t = Tree("q", ())
    nodes = [t.add_child(t.root, f"s{i}") for i in range(15)]
    beams, widths = split_budget(nodes, [i / 10 for i in range(15)], 15, 4)
    assert [b.text for b in beams] == ["s14", "s13", "s12", "s11"] and widths == [4, 4, 4, 3]
    beams, widths = split_budget(nodes[:2], [0.5, 0.9], 5, 2)  # fewer open nodes than beams wanted
    assert [b.text for b in beams] == ["s1", "s0"] and widths == [3, 2]
    assert split_budget(nodes, [0.0] * 15, 0, 4) == ([], [])


def test_mcts_spends_every_expansion_past_a_favourite_terminal_child():
    """The root's best child is a finished answer; selection must not keep revisiting it."""
    def script(q, steps, k, seed):
        if not steps:
            return "The answer is 1" if k == 0 else "Step 1 b"
        return f"Step {len(steps) + 1} {k}"

    policy = ScriptedPolicy(script)
    prm = ScriptedPRM(lambda q, steps: 0.9 if steps[-1].startswith("The answer") else 0.1)
    [res] = Runner(policy, prm, progress=False).run(["q"], MCTS(expansions=5, root_width=2, width=2))
    assert len(policy.calls) == 5  # the old loop re-selected the answer and stopped after 1 expansion
    answer, b = res.tree.root.children
    assert answer.terminal and answer.visits == 1 and not answer.children
    assert b.visits == 1 + 2 * 4  # its own value plus two children per expansion below it


def test_mcts_stops_when_every_leaf_is_finished():
    policy = ScriptedPolicy(depth_script(1))
    [res] = Runner(policy, ScriptedPRM(lambda q, s: 0.5), progress=False).run(["q"], MCTS(expansions=8, root_width=3))
    assert len(policy.calls) == 1 and len(res.candidates) == 3


# ---- lookahead and DVTS --------------------------------------------------------------------
def test_lookahead_values_a_step_by_its_greedy_rollout():
    own = {"Step 1 0": 0.9, "Step 1 1": 0.8, "Step 1 2": 0.1, "Step 1 3": 0.2}  # the steps themselves
    ahead = {"Step 1 0": 0.1, "Step 1 1": 0.2, "Step 1 2": 0.9, "Step 1 3": 0.8}  # where they lead

    def prm_fn(q, steps):
        if len(steps) == 1:
            return own[steps[0].strip()]
        return ahead.get(steps[0].strip(), 0.5) if len(steps) == 2 else 0.5

    policy = ScriptedPolicy(depth_script(3))
    [res] = Runner(policy, ScriptedPRM(prm_fn), progress=False, score_candidates=False).run(
        ["q"], Lookahead(n=4, beam_width=2, k=1))
    calls = policy.calls
    assert [r.width for r in calls[0]] == [4]
    assert all(r.greedy and r.width == 1 for r in calls[1]) and len(calls[1]) == 4  # one rollout step each
    kept = [policy._parse(r.prefix_ids)[1][0].strip() for r in calls[2]]
    assert kept == ["Step 1 2", "Step 1 3"] and [r.width for r in calls[2]] == [2, 2]  # by rollout, not own score
    assert len(res.candidates) == 4 and all(len(c.steps) == 3 for c in res.candidates)
    # 4 first steps + 4 rollouts, 4 beam children + 4 rollouts, 4 answers: rollouts stay in the tree
    # (paid for) but no candidate's path runs through one (every candidate grew from the beams).
    assert len(res.tree.nodes) - 1 == 20
    # (round 2 ties at 0.5 keep the earlier beams: both children of "Step 1 2")
    assert {res.tree.path(res.tree.nodes[c.node_id])[0].text.strip() for c in res.candidates} == {"Step 1 2"}
    assert res.ledger.generated_tokens == sum(len(n.token_ids) for n in res.tree.nodes[1:])


def test_lookahead_with_k_0_is_beam_search():
    scores = {"Step 1 0": 0.1, "Step 1 1": 0.9, "Step 1 2": 0.5, "Step 1 3": 0.7}
    prm = ScriptedPRM(lambda q, steps: scores.get(steps[0].strip(), 0.5) if len(steps) == 1 else 0.5)
    trees = []
    for alg in (Lookahead(n=4, beam_width=2, k=0), BeamSearch(n=4, beam_width=2)):
        policy = ScriptedPolicy(depth_script(3))
        [res] = Runner(policy, prm, progress=False).run(["q"], alg)
        trees.append([(r.prefix_ids, r.width) for call in policy.calls for r in call])
    assert trees[0] == trees[1]


def test_dvts_deals_first_steps_to_subtrees_and_returns_only_finished():
    def script(q, steps, k, seed):
        if not steps:
            return f"Step 1 {k}" if k % 2 == 0 else f"The answer is {k}"
        return f"The answer is {k}"

    policy = ScriptedPolicy(script)
    [res] = Runner(policy, ScriptedPRM(lambda q, s: 0.5), progress=False).run(["q"], DVTS(n=4, beam_width=2))
    assert [[r.width for r in call] for call in policy.calls] == [[4], [2, 2]]
    continued = [policy._parse(r.prefix_ids)[1][0].strip() for r in policy.calls[1]]
    assert continued == ["Step 1 0", "Step 1 2"]  # each subtree goes on from its own unfinished step
    assert len(res.candidates) == 6 and all(c.answer is not None for c in res.candidates)


def test_dvts_subtree_follows_its_best_step():
    prm = ScriptedPRM(lambda q, steps: 0.9 if steps[0].startswith("Step 1 2") else 0.1)
    policy = ScriptedPolicy(depth_script(3))
    [res] = Runner(policy, prm, progress=False).run(["q"], DVTS(n=4, beam_width=4))
    second = [policy._parse(r.prefix_ids)[1] for r in policy.calls[1]]
    assert second == [("Step 1 2\n",)] and policy.calls[1][0].width == 4
    assert len(res.candidates) == 4


def test_new_algorithms_are_registered():
    assert make_algorithm("lookahead", n=8, beam_width=2, k=2) == Lookahead(n=8, beam_width=2, k=2)
    assert make_algorithm("dvts", n=8) == DVTS(n=8)
    with pytest.raises(ValueError, match="k >= 0"):
        Lookahead(k=-1)


# ---- budget forcing ------------------------------------------------------------------------
class _SeesLeads(ScriptedPolicy):
    """A scripted policy whose script also sees the unfinished text after the last step (a lead)."""

    def _parse(self, prefix_ids):
        question, steps = super()._parse(prefix_ids)
        tail = "".join(map(chr, prefix_ids)).rsplit(self.step_format.delimiter, 1)[-1]
        return question, steps + ((tail,) if tail else ())


def test_budget_forcing_waits_below_the_minimum():
    def script(q, steps, k, seed):
        if steps and steps[-1] == "Wait,":
            return " let me recheck"
        return "The answer is 7" if steps else "Step 1"

    policy = _SeesLeads(script)
    [res] = Runner(policy, None, progress=False).run(["q"], BudgetForcing(min_steps=2))
    [c] = res.candidates
    assert c.steps == ("Step 1\n", "Wait, let me recheck\n", "The answer is 7\n") and c.answer == "7"
    assert len(policy.calls) == 4  # first step, early answer, "Wait" continuation, accepted answer
    early = res.tree.root.children[0].children[0]
    assert early.text == "The answer is 7\n" and early.terminal  # set aside, kept in the tree (it was paid for)
    assert res.ledger.generated_tokens == sum(len(n.token_ids) for n in res.tree.nodes[1:]) - len("Wait,")


def test_budget_forcing_forces_the_answer_at_the_maximum():
    def script(q, steps, k, seed):
        return " 42" if steps and steps[-1] == "The answer is" else f"Step {len(steps) + 1}"

    policy = _SeesLeads(script)
    [res] = Runner(policy, None, progress=False).run(["q"], BudgetForcing(max_steps=2))
    [c] = res.candidates
    assert c.steps == ("Step 1\n", "Step 2\n", "The answer is 42\n") and c.answer == "42"


def test_budget_forcing_gives_up_waiting_after_max_waits_with_fresh_draws():
    policy = ScriptedPolicy(lambda q, steps, k, seed: f"The answer is {seed % 1000}")
    [res] = Runner(policy, None, progress=False).run(["q"], BudgetForcing(n=3, min_steps=5, max_waits=2))
    assert [[r.width for r in call] for call in policy.calls] == [[3], [3], [3]]  # retries of one step: one request
    assert len({call[0].seed for call in policy.calls}) == 3  # each retry is a new draw
    assert len(res.candidates) == 3 and all(c.steps[0].startswith("Wait,") for c in res.candidates)


def test_budget_forcing_checks_its_budgets():
    with pytest.raises(ValueError, match="max_steps"):
        BudgetForcing(min_steps=3, max_steps=2)
    assert make_algorithm("budget_forcing", n=4, min_tokens=50) == BudgetForcing(n=4, min_tokens=50)
