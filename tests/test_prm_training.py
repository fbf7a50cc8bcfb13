"""Value-head PRM training, Monte-Carlo labels through the Runner, and PRM evaluation metrics."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

import reward_models as rm
from reward_models import Chain
from reward_models.evaluation import SampledSolution, roc_auc, score_solutions, selection_accuracy, step_auc
from reward_models.testing import build_tokenizer, tiny_config
from reward_models.training import LabelledChain, MonteCarloRollouts, monte_carlo_labels, train_value_head



pytestmark = pytest.mark.usefixtures("one_thread")


def addition_chains(n: int, seed: int) -> list[LabelledChain]:
    """Chains of 1-4 steps "a+b=c"; a step is good (1) iff it and every earlier step is right."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        steps, labels, ok = [], [], True
        for _ in range(rng.randint(1, 4)):
            a, b = rng.randint(0, 4), rng.randint(0, 4)
            c = a + b if rng.random() < 0.6 else rng.choice([x for x in range(10) if x != a + b])
            ok = ok and c == a + b
            steps.append(f"{a}+{b}={c}")
            labels.append(float(ok))
        out.append(LabelledChain("add", tuple(steps), tuple(labels)))
    return out


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


# ---- training -------------------------------------------------------------------------------------

def test_trained_value_head_separates_good_from_bad_steps(tok, tmp_path):
    train, held_out = addition_chains(600, seed=0), addition_chains(200, seed=1)
    config = tiny_config("llama", tok, hidden=48, layers=2, heads=4, kv_heads=4)
    prm = train_value_head(config, train, tok, epochs=12, batch_size=32, lr=1e-2, warmup_steps=10,
                           progress=False, output_dir=str(tmp_path / "prm"))
    auc = step_auc(prm, held_out)
    assert auc > 0.7, auc
    # Saved as a value-head directory that loads by name and scores the same.
    again = rm.load_prm("value_head", path=str(tmp_path / "prm"), dtype="float32")
    chains = [Chain(c.question, c.steps) for c in held_out[:8]]
    for a, b in zip(prm.score(chains), again.score(chains)):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_training_resumes_from_checkpoint_exactly(tok, tmp_path):
    data = addition_chains(40, seed=3)
    kw = dict(epochs=2, batch_size=8, lr=3e-3, progress=False, seed=7)

    def cfg():
        return tiny_config("qwen2", tok, hidden=16, layers=1, heads=2, kv_heads=1)

    straight = train_value_head(cfg(), data, tok, **kw)
    ck = str(tmp_path / "ck")
    train_value_head(cfg(), data, tok, checkpoint_dir=ck, checkpoint_every=3, max_steps=7, **kw)  # "interrupted"
    resumed = train_value_head(cfg(), data, tok, checkpoint_dir=ck, checkpoint_every=3, **kw)
    chains = [Chain(c.question, c.steps) for c in data[:10]]
    for a, b in zip(straight.score(chains), resumed.score(chains)):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    state = torch.load(f"{ck}/last/trainer_state.pt", weights_only=False)
    assert state["step"] == 10  # 2 epochs x ceil(40 / 8)


def test_labelled_chain_validates():
    with pytest.raises(ValueError, match="2 labels for 1 steps"):
        LabelledChain("q", ("a",), (1.0, 0.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LabelledChain("q", ("a",), (2.0,))


# ---- Monte-Carlo labels through the Runner ----------------------------------------------------------

def _script(question, steps, k, seed):
    """Step 1 "a{k}", step 2 "b{k}", then the answer: 1 (gold) iff step 2 was "b0"."""
    d = len(steps)
    if d == 0:
        return f"a{k}"
    if d == 1:
        return f"b{k}"
    return f"The answer is {1 if steps[1].strip() == 'b0' else 0}"


@pytest.mark.parametrize("hard,first_label", [(False, 1 / 3), (True, 1.0)])
def test_monte_carlo_labels_by_hand(hard, first_label):
    from treesearch.runner import SearchLimits
    from treesearch.testing import ScriptedPolicy

    policy = ScriptedPolicy(_script)
    problems = [("q1", "1"), ("q2", "1")]
    labelled = monte_carlo_labels(policy, problems, n_solutions=2, k_rollouts=3,
                                  is_correct=lambda a, g: a == g, hard=hard,
                                  limits=SearchLimits(max_depth=5), progress=False)
    assert len(labelled) == 4  # n solutions per problem
    for c in labelled:
        assert [s.strip() for s in c.steps][1:] == ["b0", "The answer is 1"]
        # from step 1: rollouts b0, b1, b2 -> answers 1, 0, 0; from step 2 (b0): all 1; last step: correct
        assert c.labels == pytest.approx((first_label, 1.0, 1.0))
    # Both problems' rollouts share the policy's batches (the Runner merges them).
    assert max(len({r.prefix_ids[:2] for r in call}) for call in policy.calls) == 2


def test_monte_carlo_rollouts_is_a_plain_search_algorithm():
    from treesearch.runner import Runner
    from treesearch.testing import ScriptedPolicy

    res = Runner(ScriptedPolicy(_script), progress=False).run(["q"], MonteCarloRollouts(2, 3))[0]
    assert len(res.candidates) == 2
    # 2 solutions x 3 steps + rollouts: 2 x (3 from step 1, each 2 steps deep + 3 from step 2)
    assert len(res.tree) - 1 == 2 * 3 + 2 * (3 * 2 + 3)
    with pytest.raises(ValueError):
        MonteCarloRollouts(0, 1)


# ---- evaluation -------------------------------------------------------------------------------------

def _pairwise_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 30)
        scores = [rng.choice([0.1, 0.2, 0.2, 0.5, 0.9]) for _ in range(n)]
        labels = [rng.random() < 0.5 for _ in range(n)]
        if len(set(labels)) < 2:
            continue
        assert roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels))
    assert roc_auc([0.1, 0.9], [0, 1]) == 1.0 and roc_auc([0.5, 0.5], [0, 1]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([0.1, 0.2], [1, 1])


def test_step_auc_and_selection_accuracy_with_a_callable_prm():
    prm = rm.CallablePRM(lambda q, steps: [0.9 if "ok" in s else 0.1 for s in steps])
    chains = [LabelledChain("q", ("ok", "bad"), (1, 0)), LabelledChain("q", ("ok",), (1,))]
    assert step_auc(prm, chains) == 1.0

    def sol(answer, correct, last):
        return SampledSolution("q", ("x", last), answer, correct)

    problems = [
        # majority picks the wrong "5"; the PRM prefers "7", which is right
        [sol("5", False, "bad"), sol("5", False, "bad"), sol("7", True, "ok")],
        # everyone agrees and is right
        [sol("3", True, "ok"), sol("3", True, "bad")],
        # nobody is right
        [sol("1", False, "ok"), sol(None, False, "ok")],
    ]
    scored = score_solutions(prm, problems)
    assert scored[0][2].step_scores == (0.1, 0.9)
    acc = selection_accuracy(scored)
    assert acc == pytest.approx({"majority": 1 / 3, "best_of_n": 2 / 3, "weighted": 2 / 3, "pass_at_n": 2 / 3})
    assert selection_accuracy(scored, n=1)["pass_at_n"] == pytest.approx(1 / 3)
