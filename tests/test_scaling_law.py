"""The repeated-sampling scaling law under an imperfect verifier: the formula, its fit and the
measurement of records (experiments.builtin.scaling_law); no model runs."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from experiments.builtin import scaling_law as sl
from experiments.config import validate
from experiments.records import CandidateRecord, Record, Vote
from experiments.uncertainty import wilson

R = np.array(sl.BUDGETS, float)


def test_law_at_one_trial_and_with_a_perfect_verifier():
    assert sl.law([1], 0.3, 0.2, 0.5)[0] == pytest.approx(0.3 * 0.8)  # f(1) = 1 whatever beta
    assert sl.law(R, 0.3, 0.0, 1.0) == pytest.approx(1 - 0.7 ** R)  # eps = 0, beta = 1: pass@R
    assert sl.law([16], 0.3, 0.0, 0.5)[0] == pytest.approx(1 - 0.7 ** 4)  # f(16) = 16^0.5


@pytest.mark.parametrize("I, eps, beta", [(0.3, 0.05, 0.6), (0.1, 0.2, 0.35), (0.6, 0.0, 1.0), (0.25, 0.3, 0.9)])
def test_fit_recovers_the_parameters_of_synthetic_data(I, eps, beta):
    acc = sl.law(R, I, eps, beta)
    free = sl.fit(R, acc, I)
    assert (free.eps, free.beta) == (pytest.approx(eps, abs=1e-9), pytest.approx(beta, abs=1e-9))
    assert free.rmse < 1e-9 and not free.eps_fixed
    fixed = sl.fit(R, acc, I, eps=eps)
    assert (fixed.eps, fixed.beta, fixed.eps_fixed) == (eps, pytest.approx(beta, abs=1e-9), True)


def test_fit_recovers_off_grid_parameters_to_the_grid_step_and_tolerates_noise():
    acc = sl.law(R, 0.27, 0.0734, 0.4321)
    f = sl.fit(R, acc, 0.27)
    assert abs(f.eps - 0.0734) <= 0.001 and abs(f.beta - 0.4321) <= 0.005
    noisy = np.clip(acc + np.random.default_rng(0).normal(0, 0.005, acc.size), 0, 1)
    g = sl.fit(R, noisy, 0.27)
    assert abs(g.eps - 0.0734) < 0.02 and abs(g.beta - 0.4321) < 0.05
    assert g.predict(R) == pytest.approx(sl.law(R, 0.27, g.eps, g.beta))


def test_a_wrong_eps_fits_worse_than_the_true_one():
    acc = sl.law(R, 0.3, 0.1, 0.5)
    assert sl.fit(R, acc, 0.3, eps=0.3).rmse > 0.01 > sl.fit(R, acc, 0.3, eps=0.1).rmse


def test_sublinear_f_with_eps_makes_accuracy_peak_then_fall():
    I, eps, beta = 0.3, 0.05, 0.5
    peak = sl.peak_budget(I, eps, beta)
    grid = np.geomspace(1, 10_000, 20_001)
    acc = sl.law(grid, I, eps, beta)
    k = int(np.argmax(acc))
    assert 1 < peak < 10_000 and grid[k] == pytest.approx(peak, rel=1e-3)
    assert np.all(np.diff(acc[:k]) > 0) and np.all(np.diff(acc[k + 1:]) < 0)
    assert acc[-1] < acc[k] - 0.1  # more trials hurt, and by a lot
    # The peak sits at the same f whatever beta: a smaller beta only pushes it to a larger R.
    assert sl.peak_budget(I, eps, 0.25) == pytest.approx(peak ** 2)
    # A perfect verifier never peaks: accuracy rises to 1.
    assert sl.peak_budget(I, 0.0, beta) == math.inf
    assert np.all(np.diff(sl.law(grid, I, 0.0, beta)) >= 0)


@pytest.mark.parametrize("budgets, acc, I, eps, message", [
    ([1, 2, 4], [0.3, 0.4], 0.3, None, "one length"),
    ([1], [0.3], 0.3, None, "at least 2 budgets"),
    ([0, 2], [0.3, 0.4], 0.3, None, "budgets must be finite and >= 1"),
    ([1, math.nan], [0.3, 0.4], 0.3, None, "budgets must be finite"),
    ([1, 2], [0.3, 1.4], 0.3, None, r"accuracies must lie in \[0, 1\]"),
    ([1, 2], [0.3, math.nan], 0.3, None, r"accuracies must lie in \[0, 1\]"),
    ([1, 2], [0.3, 0.4], 0.0, None, r"I \(pass@1\) must lie in \(0, 1\)"),
    ([1, 2], [0.3, 0.4], 1.0, None, r"I \(pass@1\) must lie in \(0, 1\)"),
    ([1, 2], [0.3, 0.4], 0.3, 1.0, r"eps must lie in \[0, 1\)"),
    ([1, 2], [0.3, 0.4], 0.3, -0.1, r"eps must lie in \[0, 1\)"),
])
def test_fit_rejects_bad_input_clearly(budgets, acc, I, eps, message):
    with pytest.raises(ValueError, match=message):
        sl.fit(budgets, acc, I, eps)


def test_study_is_one_policy_sampling_once_per_verifier():
    cfg = sl.study(problems=7, output="x")
    validate(cfg)
    assert [p.name for p in cfg.policies] == ["builtin-small"] and cfg.dataset.limit == 7
    assert all(m.algorithm == "sampling" and m.subsample and m.budgets == [1, 2, 4, 8, 16, 32, 64]
               for m in cfg.methods)
    specs = [m.prm.to_plain() for m in cfg.methods]
    assert {"type": "builtin_oracle"} in specs
    assert {"type": "noisy_oracle", "flip_rate": 0.3, "flip": "right"} in specs
    assert [sl.Verifier.of(s) for s in specs] == list(sl.VERIFIERS)


# ---- measuring records ---------------------------------------------------------------------------
def _record(problem: str, budget: int, spec: dict, picks: tuple[bool, bool], cands: list[tuple[bool, float]]) -> Record:
    """A sampling record: its candidates (correct?, last step score) and the votes' verdicts."""
    candidates = tuple(CandidateRecord(answer="1" if ok else "2", correct=ok, step_scores=(0.5, score),
                                       num_tokens=5, finish_reason="answer", sample=i)
                       for i, (ok, score) in enumerate(cands))
    return Record(problem, "builtin-small", "m", budget, 0, candidates=candidates, verifier=spec,
                  votes={"best_of_n/last": Vote("1" if picks[0] else "2", picks[0]),
                         "weighted/last": Vote("1" if picks[1] else "2", picks[1])})


def test_measure_reads_accuracy_intervals_pass_at_1_and_the_abstaining_pick():
    spec = {"type": "noisy_oracle", "flip_rate": 0.3, "flip": "right"}
    records = [
        # p1: the right candidate was rejected (0.1): best-of-N still picks it (first on the tie), abstaining does not.
        _record("p1", 1, spec, (True, True), [(True, 0.1)]),
        _record("p1", 2, spec, (True, True), [(True, 0.1), (False, 0.1)]),
        _record("p2", 1, spec, (False, False), [(False, 0.1)]),
        _record("p2", 2, spec, (True, False), [(False, 0.1), (True, 0.9)]),
        _record("p3", 1, {"type": "likelihood", "path": "x"}, (True, True), [(True, 0.9)]),  # not a reference verifier
    ]
    curves = {c.rule: c for c in sl.measure(records)}
    assert set(curves) == set(sl.RULES)
    bon, weighted, abstain = curves["best_of_n/last"], curves["weighted/last"], curves[sl.ABSTAIN]
    assert bon.verifier == sl.Verifier(0.3, "right") and bon.budgets == (1, 2) and bon.n == 2
    assert bon.I == 0.5  # candidates of the largest budget: 2 right of 4
    assert list(bon.accuracy) == [0.5, 1.0] and list(weighted.accuracy) == [0.5, 0.5]
    assert list(abstain.accuracy) == [0.0, 0.5]
    assert bon.intervals == [wilson(1, 2), wilson(2, 2)]


def test_judge_table_and_figure(tmp_path):
    """On records drawn from the law itself: the fit lands inside every interval, the table says
    so, and the figure draws without a matplotlib warning."""
    rng = np.random.default_rng(1)
    I, eps, beta, n = 0.3, 0.1, 0.5, 400
    spec = {"type": "noisy_oracle", "flip_rate": eps}
    records = []
    for b, p in zip(sl.BUDGETS, sl.law(R, I, eps, beta)):
        right = rng.random(n) < p
        records += [_record(f"p{i}", b, spec, (bool(ok), bool(ok)), [(j < round(I * 10), 0.9) for j in range(10)])
                    for i, ok in enumerate(right)]
    verdicts = [sl.judge(c) for c in sl.measure(records, rules=["best_of_n/last"])]
    [v] = verdicts
    assert v.curve.I == pytest.approx(I)
    assert not v.misses(v.free).any()
    assert v.misses(sl.Fit(I, 0.5, beta, 0.0, True)).min() > 0  # a far-off law misses every interval
    assert abs(v.free.eps - eps) < 0.05 and abs(v.fixed.beta - beta) < 0.1
    text = sl.table(verdicts)
    assert "| best-of-N | both-0.1 | 30.0 |" in text and "| 7/7 | 0.0 |" in text and "| best-of-N | both-0.1 | 0.100 |" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sl.figure(verdicts, tmp_path / "law.png")
    assert (tmp_path / "law.png").stat().st_size > 10_000
