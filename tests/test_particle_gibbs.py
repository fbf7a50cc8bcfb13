"""Particle Gibbs against hand-computed outcomes, with a scripted policy and PRM."""
import pytest

from treesearch.algorithms import ParticleFiltering, ParticleGibbs, algorithm_class, make_algorithm
from treesearch.algorithms.particle_filtering import round_rng
from treesearch.runner import Runner
from treesearch.testing import ScriptedPRM, ScriptedPolicy, depth_script
from treesearch.tree import Tree


def tagged(answer_at):
    """depth_script's steps, each led by the iteration that drew it ('#2 Step 1 0'): the search expands the
    root once per iteration, so the i-th root expansion starts iteration i."""
    base, roots = depth_script(answer_at), [0]

    def script(question, steps, k, seed):
        if not steps and k == 0:
            roots[0] += 1
        return f"#{roots[0]} {base(question, steps, k, seed)}"
    return script


def _steps(policy, request):
    return policy._parse(request.prefix_ids)[1]


def _iterations(policy):
    """The policy's calls split where the root is expanded again (each iteration starts there)."""
    runs = []
    for call in policy.calls:
        if any(_steps(policy, r) == () for r in call):
            runs.append([])
        runs[-1].append(call)
    return runs


def _uneven():
    return ScriptedPRM(lambda q, steps: (sum(map(ord, "".join(steps))) % 10) / 10)  # uneven, deterministic


def test_reference_survives_every_resampling_keeps_its_steps_and_is_weighted_with_the_others():
    # N = 4 a run, 3 runs, every path 3 steps. Open steps score by the run that drew them: #1 0.5, #2 0.9,
    # #3 0.1; answers 0.9 on run 1's lineage "Step 1 0", else 0.3 (#1) or 0.1. At T = 0.05 a weight ratio
    # of e^-8 (0.5 against 0.9) means no copies: run 1 never concentrates (all 0.5), its best answer is the
    # reference; in run 2 it loses every resampling (0.5 against 0.9) yet keeps its slot, so it finishes
    # again, wins again (0.9 against 0.1) and is run 3's reference; there it beats the free particles (0.5
    # against 0.1), so all 3 free copies continue from its nodes, drawing new steps.
    def prm(q, steps):
        tag, last = steps[-1].split()[0], steps[-1]
        if "answer" in last:
            return 0.9 if steps[0] == "#1 Step 1 0\n" else 0.3 if tag == "#1" else 0.1
        return {"#1": 0.5, "#2": 0.9, "#3": 0.1}[tag]

    policy, scorer = ScriptedPolicy(tagged(3)), ScriptedPRM(prm)
    alg = ParticleGibbs(particles=12, iterations=3, temperature=0.05, resampling="systematic")
    [res] = Runner(policy, scorer, progress=False).run(["q"], alg)
    assert policy.widths() == [[4], [1, 1, 1, 1], [1, 1, 1, 1],  # run 1: a plain filter of 4
                               [3], [1, 1, 1], [1, 1, 1],        # runs 2, 3: N - 1 = 3 new steps a round
                               [3], [3], [3]]
    recorded = ["#1 Step 1 0\n", "#1 Step 2 0\n", "#1 The answer is 0\n"]
    r0, r1, r2 = Tree.path(next(n for n in res.tree.terminals() if Tree.steps(n) == recorded))
    run2, run3 = _iterations(policy)[1:]
    assert all(_steps(policy, r)[:1] in [(), ("#2 Step 1 0\n",), ("#2 Step 1 1\n",), ("#2 Step 1 2\n",)]
               for call in run2 for r in call)  # run 2's free particles never landed on the reference
    assert [[_steps(policy, r) for r in call] for call in run3[1:]] == [[("#1 Step 1 0\n",)],
                                                                       [("#1 Step 1 0\n", "#1 Step 2 0\n")]]
    # Its recorded steps stand; the free copies drew fresh ones (new seeds: the Runner's redraw).
    assert [c.text for c in r0.children] == ["#1 Step 2 0\n"] + [f"#3 Step 2 {k}\n" for k in range(3)]
    assert [c.text for c in r1.children] == ["#1 The answer is 0\n"] + [f"#3 The answer is {k}\n" for k in range(3)]
    assert run3[1][0].seed != policy.calls[1][0].seed and run3[2][0].seed != policy.calls[2][0].seed
    assert len({call[0].seed for call in (policy.calls[0], run2[0], run3[0])}) == 3  # each run's own first steps
    assert scorer.chains_scored == 3 * 4 + 2 * 3 * 3  # the reference's stored scores serve: no PRM call for it
    # Candidates: every finished particle once; the reference, finished in all 3 runs, is one of them.
    assert len(res.candidates) == 4 + 3 + 3 == len({c.node_id for c in res.candidates})
    assert [c.node_id for c in res.candidates].count(r2.id) == 1
    assert sorted((c.steps[0][:2], c.steps[-1][:2]) for c in res.candidates) == \
        [("#1", "#1")] * 4 + [("#1", "#3")] * 3 + [("#2", "#2")] * 3  # run 3's free particles went on from it


def test_the_reference_weight_takes_part_in_resampling_by_hand():
    # weighting="score": run 1's lineage "Step 1 0" scores 0.7, all else 0.1 (answers 0 off it), so it is
    # the reference. Run 2, round 0: weights [0.1, 0.1, 0.1, 0.7] (cumulative 0.1, 0.2, 0.3, 1.0) for 3 free
    # slots; run 2's own draw u = 0.00696 puts the systematic points (u + i) / 3 = 0.0023 | 0.336, 0.669:
    # one copy of the first free particle, two of the reference (run 1's draw, u = 0.774, would give
    # points 0.258 | 0.591, 0.925: the third free particle and the reference twice).
    def prm(q, steps):
        if steps[0] == "#1 Step 1 0\n":
            return 0.7
        return 0.0 if "answer" in steps[-1] else 0.1

    assert round_rng(0, "q", 0, 1).random() == pytest.approx(0.006959552263381186)
    policy = ScriptedPolicy(tagged(3))
    alg = ParticleGibbs(particles=8, iterations=2, weighting="score", resampling="systematic")
    [res] = Runner(policy, ScriptedPRM(prm), progress=False).run(["q"], alg)
    run2 = _iterations(policy)[1]
    assert [(_steps(policy, r), r.width) for r in run2[1]] == [(("#2 Step 1 0\n",), 1), (("#1 Step 1 0\n",), 2)]
    assert len(res.candidates) == 7


def test_without_resampling_each_free_particle_goes_on_once_and_the_reference_along_its_path():
    # ESS >= 1 > 0.2 x 4 particles: the weights never call for resampling.
    policy = ScriptedPolicy(depth_script(3))
    [res] = Runner(policy, _uneven(), progress=False).run(["q"], ParticleGibbs(particles=8, ess_threshold=0.2))
    assert policy.widths() == [[4], [1, 1, 1, 1], [1, 1, 1, 1], [3], [1, 1, 1], [1, 1, 1]]
    assert len(res.candidates) == 7


def test_a_reference_that_finishes_first_leaves_the_pool_and_the_others_keep_their_count():
    # Sample 0 answers at once; it scores 0.9, every other answer 0.1, so run 1's one-step answer is the
    # reference. Run 2: it finishes in round 0 with the fresh one-step answer, and the 2 open free
    # particles stay 2 (no slot held for a finished reference).
    prm = ScriptedPRM(lambda q, steps: (0.9 if len(steps) == 1 else 0.1) if "answer" in steps[-1] else 0.5)
    policy = ScriptedPolicy(depth_script(4, finished=lambda k: k == 0))
    alg = ParticleGibbs(particles=8, iterations=2, temperature=0.05, resampling="systematic")
    [res] = Runner(policy, prm, progress=False).run(["q"], alg)
    assert policy.widths() == [[4], [1, 1, 1], [1, 1, 1], [1, 1, 1], [3], [1, 1], [1, 1], [1, 1]]
    assert sorted(len(c.steps) for c in res.candidates) == [1, 1, 4, 4, 4, 4, 4]
    assert len(res.candidates) == 7 == len({c.node_id for c in res.candidates})


@pytest.mark.parametrize("particles,iterations", [(4, 2), (6, 3), (8, 2), (8, 4), (5, 1)])
@pytest.mark.parametrize("resampling,ess_threshold", [("multinomial", 1.0), ("systematic", 1.0),
                                                      ("multinomial", 0.5)])
def test_iterations_particles_and_candidates_count(particles, iterations, resampling, ess_threshold):
    n = particles // iterations
    policy = ScriptedPolicy(depth_script(4, finished=lambda k: k % 3 == 0))
    alg = ParticleGibbs(particles=particles, iterations=iterations, resampling=resampling,
                        ess_threshold=ess_threshold, temperature=0.2)
    [res] = Runner(policy, _uneven(), progress=False).run(["q"], alg)
    runs = _iterations(policy)
    assert len(runs) == iterations
    assert [[r.width for r in run[0]] for run in runs] == [[n]] + [[n - 1]] * (iterations - 1)
    assert all(sum(r.width for r in call) <= n for call in runs[0])
    assert all(sum(r.width for r in call) <= n - 1 for run in runs[1:] for call in run)
    assert len(res.tree.root.children) == n + (n - 1) * (iterations - 1)
    # Every finished particle once: N from run 1, N - 1 new from each later run (the reference is not new).
    assert len(res.candidates) == particles - (iterations - 1) == len({c.node_id for c in res.candidates})
    assert all(c.finish_reason == "answer" and len(c.step_scores) == len(c.steps) for c in res.candidates)


def test_its_first_iteration_is_particle_filtering():
    def tree(alg):
        [res] = Runner(ScriptedPolicy(depth_script(4)), _uneven(), progress=False).run(["q"], alg)
        return [(n.parent.id if n.parent else None, n.text) for n in res.tree.nodes], res

    pf, pf_res = tree(ParticleFiltering(particles=4, temperature=0.3))
    pg, pg_res = tree(ParticleGibbs(particles=8, iterations=2, temperature=0.3))
    assert pg[:len(pf)] == pf and len(pg) > len(pf)
    one, one_res = tree(ParticleGibbs(particles=4, iterations=1, temperature=0.3))
    assert one == pf and [c.node_id for c in one_res.candidates] == [c.node_id for c in pf_res.candidates]


def test_reruns_grow_the_same_tree_and_batching_does_not_change_it():
    alg = ParticleGibbs(particles=9, iterations=3, temperature=0.3)

    def tree(questions):
        res = Runner(ScriptedPolicy(depth_script(4)), _uneven(), progress=False).run(questions, alg)
        return [(n.parent.id if n.parent else None, n.text) for n in res[0].tree.nodes]

    alone = tree(["a"])
    assert tree(["a"]) == alone and tree(["a", "b"]) == alone


def test_registry_attributes():
    assert algorithm_class("particle_gibbs") is ParticleGibbs
    assert make_algorithm("particle_gibbs", particles=8, iterations=4) == ParticleGibbs(particles=8, iterations=4)
    assert ParticleGibbs.budget_param == "particles" and ParticleGibbs.needs_prm
    assert ParticleGibbs.independent_samples is False and ParticleGibbs().name == "particle_gibbs"


@pytest.mark.parametrize("params,message", [
    ({"iterations": 0}, "ParticleGibbs.iterations must be >= 1"),
    ({"particles": 6, "iterations": 4}, r"ParticleGibbs.particles \(6\) must be a multiple of iterations \(4\)"),
    ({"particles": 3, "iterations": 3}, r"ParticleGibbs.particles \(3\) must be >= 2 x iterations \(3\)"),
    ({"particles": 0, "iterations": 1}, "ParticleGibbs.particles must be >= 1"),
    ({"temperature": 0.0}, "ParticleGibbs.temperature must"),
    ({"resampling": "stratified"}, "ParticleGibbs.resampling must"),
])
def test_bad_parameters_name_the_field(params, message):
    with pytest.raises(ValueError, match=message):
        ParticleGibbs(**params)
