"""Particle filtering against hand-computed outcomes, with a scripted policy and PRM."""
import math
import random

import pytest

from treesearch.algorithms import ParticleFiltering, algorithm_class, make_algorithm
from treesearch.algorithms.particle_filtering import (effective_sample_size, multinomial_resample, particle_weights,
                                                      round_rng, systematic_resample)
from treesearch.runner import Runner, SearchLimits
from treesearch.testing import ScriptedPRM, ScriptedPolicy, depth_script


class FixedU:
    """A stand-in RNG whose one draw is ``u`` (systematic resampling draws once)."""

    def __init__(self, u):
        self.u = u

    def random(self):
        return self.u


def _by_first_step(best, high=0.9, low=0.1):
    """A PRM that scores every step of the lineage starting with ``best`` high, every other low."""
    return ScriptedPRM(lambda q, steps: high if steps[0].strip() == best else low)


def _first_steps(res):
    return [c.steps[0].strip() for c in res.candidates]


# ---- the pure helpers ------------------------------------------------------------------------
def test_effective_sample_size_by_hand():
    assert effective_sample_size([0.5, 0.25, 0.25]) == pytest.approx(8 / 3)  # 1 / (0.25 + 0.0625 + 0.0625)
    assert effective_sample_size([0.25] * 4) == pytest.approx(4.0)
    assert effective_sample_size([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert effective_sample_size([2.0, 1.0, 1.0]) == pytest.approx(8 / 3)  # normalized first


def test_particle_weights_by_hand():
    w = particle_weights([0.9, 0.1], 0.2, "softmax")  # e^0 : e^-4
    assert w == pytest.approx([1 / (1 + math.exp(-4)), math.exp(-4) / (1 + math.exp(-4))])
    assert particle_weights([0.5, 0.5, 0.5], 0.1, "softmax") == pytest.approx([1 / 3] * 3)
    assert particle_weights([0.6, 0.2, 0.2], 0.1, "score") == pytest.approx([0.6, 0.2, 0.2])  # T unused
    assert particle_weights([0.3, 0.1], 1.0, "score") == pytest.approx([0.75, 0.25])
    assert particle_weights([0.0, 0.0], 1.0, "score") == pytest.approx([0.5, 0.5])  # no preference: uniform
    assert particle_weights([1000.0, 0.0], 0.01, "softmax") == pytest.approx([1.0, 0.0])  # no overflow
    with pytest.raises(ValueError, match="scores >= 0"):
        particle_weights([0.5, -0.1], 1.0, "score")


@pytest.mark.parametrize("weights,n,u,expected", [
    # points (u + i) / n against the cumulative weights (0.5, 0.75, 1.0)
    ([0.5, 0.25, 0.25], 4, 0.1, [2, 1, 1]),  # 0.025, 0.275 | 0.525 | 0.775
    ([0.5, 0.25, 0.25], 2, 0.1, [1, 1, 0]),  # 0.05 | 0.55: the last particle is dropped
    ([0.5, 0.25, 0.25], 2, 0.6, [1, 0, 1]),  # 0.3 | 0.8
    ([0.7, 0.2, 0.1], 4, 0.5, [3, 1, 0]),    # 0.125, 0.375, 0.625 | 0.875 (cum 0.7, 0.9, 1.0)
    ([1, 1, 1], 3, 0.999, [1, 1, 1]),        # unnormalized; the last point 0.9997 stays in range
])
def test_systematic_resample_with_a_fixed_u(weights, n, u, expected):
    assert systematic_resample(weights, n, FixedU(u)) == expected


def test_multinomial_resample_is_reproducible_and_sums_to_n():
    weights = [0.1, 0.0, 0.6, 0.3]
    a = multinomial_resample(weights, 50, random.Random(7))
    assert a == multinomial_resample(weights, 50, random.Random(7))
    assert sum(a) == 50 and len(a) == 4 and a[1] == 0  # a zero weight is never drawn
    assert a[2] > a[0]  # 50 draws: 0.6 beats 0.1 (fixed seed, so not flaky)


def test_round_rng_is_a_stable_hash_of_seed_question_and_round():
    # Pinned: Python's hash() of a str changes between runs, blake2b does not.
    assert round_rng(0, "q", 0).random() == pytest.approx(0.7742640579244796)
    assert round_rng(0, "q", 1).random() != round_rng(0, "q", 0).random()
    assert round_rng(1, "q", 0).random() != round_rng(0, "q", 0).random()
    assert round_rng(0, "r", 0).random() != round_rng(0, "q", 0).random()


# ---- the search ------------------------------------------------------------------------------
def test_no_resampling_while_ess_stays_above_the_threshold():
    # weights softmax([0.9, 0.1, 0.1, 0.1] / 0.5) = [0.623, 0.126 x 3]: ESS 2.30, above 0.3 * 4 = 1.2
    def run(ess_threshold):
        policy = ScriptedPolicy(depth_script(3))
        alg = ParticleFiltering(particles=4, temperature=0.5, resampling="systematic", ess_threshold=ess_threshold)
        [res] = Runner(policy, _by_first_step("Step 1 0"), progress=False).run(["q"], alg)
        return policy, res

    policy, res = run(0.3)
    assert policy.widths() == [[4], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert sorted(_first_steps(res)) == ["Step 1 0", "Step 1 1", "Step 1 2", "Step 1 3"]  # lineages stay distinct
    policy, res = run(1.0)  # resampling every round: particle 0 (weight 0.623) gets >= 2 of the 4 points
    assert policy.widths()[1][0] >= 2 and len(set(_first_steps(res))) < 4


@pytest.mark.parametrize("resampling", ["multinomial", "systematic"])
def test_resampling_concentrates_on_the_particle_the_prm_prefers(resampling):
    policy = ScriptedPolicy(depth_script(3))
    alg = ParticleFiltering(particles=4, temperature=0.1, resampling=resampling)  # weights [1, e^-8 x 3] (about)
    [res] = Runner(policy, _by_first_step("Step 1 2"), progress=False).run(["q"], alg)
    second = policy.calls[1]
    assert [policy._parse(r.prefix_ids)[1] for r in second] == [("Step 1 2\n",)]
    assert [r.width for r in second] == [4]  # its 4 copies are 4 independent next steps
    assert [len(kids) for kids in (n.children for n in res.tree.root.children)] == [0, 0, 4, 0]
    assert _first_steps(res) == ["Step 1 2"] * 4 and len({c.node_id for c in res.candidates}) == 4


def test_finished_particles_are_kept_and_not_resampled_away():
    # Particle 1 answers at depth 1 with a score of 0; the open ones score 0.9. Were it in the
    # resampling pool its weight e^-9 would lose it; it is set aside and comes back.
    policy = ScriptedPolicy(depth_script(3, finished=lambda k: k == 1))
    prm = ScriptedPRM(lambda q, steps: 0.0 if steps[-1].startswith("The answer") and len(steps) == 1 else 0.9)
    alg = ParticleFiltering(particles=4, temperature=0.1, resampling="systematic")
    [res] = Runner(policy, prm, progress=False).run(["q"], alg)
    assert policy.widths() == [[4], [1, 1, 1], [1, 1, 1]]  # 3 open particles stay 3
    assert sorted(len(c.steps) for c in res.candidates) == [1, 3, 3, 3]
    assert ("The answer is 1\n",) in [c.steps for c in res.candidates]


@pytest.mark.parametrize("particles", [1, 5, 8])
@pytest.mark.parametrize("resampling,ess_threshold", [("multinomial", 1.0), ("systematic", 1.0),
                                                      ("multinomial", 0.5)])
def test_as_many_finished_candidates_as_particles(particles, resampling, ess_threshold):
    policy = ScriptedPolicy(depth_script(4, finished=lambda k: k % 3 == 0))
    prm = ScriptedPRM(lambda q, steps: (sum(map(ord, "".join(steps))) % 10) / 10)  # uneven, deterministic
    alg = ParticleFiltering(particles=particles, resampling=resampling, ess_threshold=ess_threshold, temperature=0.2)
    [res] = Runner(policy, prm, progress=False).run(["q"], alg)
    assert len(res.candidates) == particles
    assert all(c.finish_reason == "answer" and c.answer is not None for c in res.candidates)
    assert len({c.node_id for c in res.candidates}) == particles


def test_depth_cap_ends_the_particles_without_losing_any():
    policy = ScriptedPolicy(depth_script(100))
    alg = ParticleFiltering(particles=4)
    [res] = Runner(policy, ScriptedPRM(lambda q, s: 0.5), limits=SearchLimits(max_depth=3),
                   progress=False).run(["q"], alg)
    assert len(res.candidates) == 4
    assert all(c.answer is None and c.finish_reason == "depth_cap" and len(c.steps) == 3 for c in res.candidates)


def test_reruns_grow_the_same_tree_and_batching_does_not_change_it():
    prm = ScriptedPRM(lambda q, steps: (sum(map(ord, "".join(steps))) % 7) / 7)
    alg = ParticleFiltering(particles=6, temperature=0.3)

    def tree(questions):
        policy = ScriptedPolicy(depth_script(4))
        res = Runner(policy, prm, progress=False).run(questions, alg)
        return [(n.parent.id if n.parent else None, n.text) for n in res[0].tree.nodes]

    alone = tree(["a"])
    assert tree(["a"]) == alone and tree(["a", "b"]) == alone


def test_registry_attributes_and_validation():
    assert algorithm_class("particle_filtering") is ParticleFiltering
    assert make_algorithm("particle_filtering", particles=4) == ParticleFiltering(particles=4)
    assert ParticleFiltering.budget_param == "particles" and ParticleFiltering.needs_prm
    assert ParticleFiltering.independent_samples is False
    policy = ScriptedPolicy(depth_script(3))
    [res] = Runner(policy, ScriptedPRM(lambda q, s: 0.5), progress=False).run(
        ["q"], make_algorithm("particle_filtering", particles=4))
    assert len(res.candidates) == 4 and all(len(c.step_scores) == 3 for c in res.candidates)


@pytest.mark.parametrize("params,field", [
    ({"particles": 0}, "particles"),
    ({"temperature": 0.0}, "temperature"),
    ({"weighting": "logit"}, "weighting"),
    ({"resampling": "stratified"}, "resampling"),
    ({"ess_threshold": 0.0}, "ess_threshold"),
    ({"ess_threshold": 1.5}, "ess_threshold"),
])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=f"ParticleFiltering.{field} must"):
        ParticleFiltering(**params)


def test_needs_a_prm():
    with pytest.raises(RuntimeError, match="needs a process reward model"):
        Runner(ScriptedPolicy(depth_script(3)), None, progress=False).run(["q"], ParticleFiltering(particles=2))
