"""Every algorithm against hand-computed outcomes, with a scripted policy and PRM."""
import pytest

from treesearch.algorithms import MCTS, BeamSearch, Greedy, Rebase, Sampling, allocate_widths, make_algorithm
from treesearch.runner import Runner, SearchLimits
from treesearch.testing import ScriptedPolicy, ScriptedPRM


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


def _depth_script(answer_at: int, finished=lambda k: False):
    """Steps 'Step d k'; at depth ``answer_at`` (or when ``finished(k)`` at depth 1) the step answers."""
    def script(question, steps, k, seed):
        d = len(steps) + 1
        if d >= answer_at or (d == 1 and finished(k)):
            return f"The answer is {k}"
        return f"Step {d} {k}"
    return script


def test_rebase_budget_is_decremented_by_completed_solutions():
    policy = ScriptedPolicy(_depth_script(3, finished=lambda k: k in (1, 3)))
    prm = ScriptedPRM(lambda q, steps: 0.5)
    [res] = Runner(policy, prm, progress=False).run(["q"], Rebase(width=4, temperature=0.1))
    widths = [[r.width for r in call] for call in policy.calls]
    # 4 first steps, 2 of them answer: B = 2 split over the 2 open nodes; each child is at depth 2,
    # then depth 3 answers: 4 candidates in all, 2 from depth 1 and 2 from depth 3.
    assert widths == [[4], [1, 1], [1, 1]]
    assert len(res.candidates) == 4
    assert sorted(len(c.steps) for c in res.candidates) == [1, 1, 3, 3]


def test_rebase_all_terminal_stops_after_one_round():
    policy = ScriptedPolicy(_depth_script(1))
    [res] = Runner(policy, ScriptedPRM(lambda q, s: 1.0), progress=False).run(["q"], Rebase(width=5))
    assert len(policy.calls) == 1 and len(res.candidates) == 5


def test_rebase_follows_the_reward():
    """Children of the high-reward node get the budget (T small)."""
    policy = ScriptedPolicy(_depth_script(3))
    prm = ScriptedPRM(lambda q, steps: 0.9 if steps[0].startswith("Step 1 0") else 0.1)
    [res] = Runner(policy, prm, progress=False).run(["q"], Rebase(width=4, temperature=0.1))
    second = policy.calls[1]
    assert [r.width for r in second] == [4]  # node k=0 takes ceil(4*1/(1+3e^-8)) = 4
    assert len(res.candidates) == 4


@pytest.mark.parametrize("alg", [Rebase(width=4), Sampling(n=4), BeamSearch(n=4, beam_width=2)])
def test_depth_cap_ends_paths_without_losing_budget(alg):
    policy = ScriptedPolicy(_depth_script(100))
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
    policy = ScriptedPolicy(_depth_script(3))
    res = Runner(policy, None, progress=False).run(["a", "b", "c"], Sampling(n=6))
    assert [len(r.candidates) for r in res] == [6, 6, 6]
    assert [len(c) for c in policy.calls] == [3, 18, 18]  # the three problems share every batch
    assert sorted(c.answer for c in res[0].candidates) == ["0"] * 6  # width-1 continuations: k = 0
    policy.calls.clear()
    [g] = Runner(policy, None, progress=False).run(["a"], Greedy())
    assert len(g.candidates) == 1 and all(r.greedy for call in policy.calls for r in call)


def test_beam_search_keeps_top_n_over_m():
    scores = {"Step 1 0": 0.1, "Step 1 1": 0.9, "Step 1 2": 0.5, "Step 1 3": 0.7}
    policy = ScriptedPolicy(_depth_script(3))
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
    policy = ScriptedPolicy(_depth_script(3))
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
