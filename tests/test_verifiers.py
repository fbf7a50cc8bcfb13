"""Verifier quality: reference oracles, sibling pairs, benchmark readers, the likelihood PRM and eval-prm."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from experiments.builtin.models import CHECKPOINTS
from experiments.builtin.siblings import verifier_rows
from experiments.cli import main as cli
from reward_models import CallablePRM, Chain, LabelledChain, load_prm
from reward_models.evaluation import SiblingGroup, sibling_pairs
from reward_models.likelihood import LikelihoodHead, LikelihoodPRM, chain_scores
from reward_models.oracle import flip_draw
from reward_models.prm_benchmarks import BenchmarkFormatError, evaluate_benchmark, read_benchmark
from reward_models.training import fit_likelihood_head
from treesearch.builtin import task

DATA = Path(__file__).parent / "data"
PROBLEMS = task.test_split(200)


def off_by(step: str, delta: int) -> str:
    head, _, value = step.rstrip("\n").rpartition("= ")
    return f"{head}= {int(value) + delta}\n"


# ---- reference oracles -----------------------------------------------------------------------
def test_builtin_oracle_scores_exactly_the_checker_verdicts():
    prm = load_prm("builtin_oracle")
    chains = []
    for p in PROBLEMS[:40]:
        chains.append(Chain(p.question, tuple(p.solution_steps)))
        k = min(1, len(p.solution_steps) - 2)  # corrupt the first or second arithmetic step
        bad = list(p.solution_steps)
        bad[k] = off_by(bad[k], 1)
        chains.append(Chain(p.question, tuple(bad)))
    for c, r in zip(chains, prm.score(chains)):
        assert r.scores == [0.9 if v else 0.1 for v in task.on_gold_path(c.question, c.steps)]
    assert prm.num_parameters == 0
    assert any(0.1 in r.scores for r in prm.score(chains))


def test_noisy_oracle_flips_at_its_rate_and_is_deterministic_per_chain():
    chains = [Chain(p.question, tuple(p.solution_steps[:k + 1])) for p in PROBLEMS for k in range(len(p.solution_steps))]
    assert len(chains) > 700
    clean = [r.scores[-1] for r in load_prm("builtin_oracle").score(chains)]
    assert set(clean) == {0.9}  # every gold prefix is right
    noisy = load_prm({"type": "noisy_oracle", "flip_rate": 0.2})
    flipped = [r.scores[-1] == 0.1 for r in noisy.score(chains)]
    rate = sum(flipped) / len(flipped)
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(chains))
    again = load_prm({"type": "noisy_oracle", "flip_rate": 0.2})  # a new instance: same flips
    assert [r.scores[-1] == 0.1 for r in again.score(chains[::-1])][::-1] == flipped
    other = load_prm({"type": "noisy_oracle", "flip_rate": 0.2, "seed": 1})
    assert [r.scores[-1] == 0.1 for r in other.score(chains)] != flipped
    # A step's score does not depend on what follows it (prefix-consistent, as the PRM cache assumes).
    long = chains[5]
    assert noisy.score([Chain(long.question, long.steps[:1])])[0].scores == noisy.score([long])[0].scores[:1]


def test_oracle_rejects_a_flip_rate_outside_0_1():
    with pytest.raises(ValueError, match="flip_rate"):
        load_prm({"type": "noisy_oracle", "flip_rate": 1.5})


def _right_and_wrong_prefixes() -> list[Chain]:
    """Every prefix of each gold chain (all steps right) and of a copy with one step off by one
    (its steps from the corrupted one on are wrong)."""
    chains = []
    for p in PROBLEMS:
        bad = list(p.solution_steps)
        bad[0] = off_by(bad[0], 1)
        for steps in (p.solution_steps, bad):
            chains += [Chain(p.question, tuple(steps[:k + 1])) for k in range(len(steps))]
    return chains


def test_noisy_oracle_flip_right_rejects_right_steps_at_its_rate_and_never_accepts_wrong_ones():
    chains = _right_and_wrong_prefixes()
    truth = [task.on_gold_path(c.question, c.steps)[-1] for c in chains]
    n_right, n_wrong = sum(truth), len(truth) - sum(truth)
    assert n_right > 700 and n_wrong > 700
    rate = 0.3
    right_only = [r.scores[-1] for r in load_prm({"type": "noisy_oracle", "flip_rate": rate, "flip": "right"}).score(chains)]
    both = [r.scores[-1] for r in load_prm({"type": "noisy_oracle", "flip_rate": rate}).score(chains)]
    assert all(s == 0.1 for s, t in zip(right_only, truth) if not t)  # a wrong step is never scored right
    rejected = sum(s == 0.1 for s, t in zip(right_only, truth) if t) / n_right
    assert abs(rejected - rate) < 4 * math.sqrt(rate * (1 - rate) / n_right)
    # The same draws as flip="both": on right steps the two agree exactly; "both" also accepts wrong ones.
    assert [s for s, t in zip(right_only, truth) if t] == [s for s, t in zip(both, truth) if t]
    accepted = sum(s == 0.9 for s, t in zip(both, truth) if not t) / n_wrong
    assert abs(accepted - rate) < 4 * math.sqrt(rate * (1 - rate) / n_wrong)


def test_noisy_oracle_default_flips_both_ways_as_before():
    """Existing records stay reproducible: the default is flip="both", each verdict inverted where
    its prefix's draw falls under the rate."""
    chains = _right_and_wrong_prefixes()[:300]
    default = load_prm({"type": "noisy_oracle", "flip_rate": 0.2})
    assert default.flip == "both"
    assert default.score(chains) == load_prm({"type": "noisy_oracle", "flip_rate": 0.2, "flip": "both"}).score(chains)
    for c in chains:
        truth = task.on_gold_path(c.question, c.steps)
        expected = [v != (flip_draw(0, c.question, c.steps[:k + 1]) < 0.2) for k, v in enumerate(truth)]
        assert default.verdicts(c.question, c.steps) == expected


@pytest.mark.parametrize("flip", ["wrong", "", "Right", None])
def test_oracle_rejects_an_unknown_flip(flip):
    with pytest.raises(ValueError, match=r"flip must be one of \('both', 'right'\)"):
        load_prm({"type": "noisy_oracle", "flip_rate": 0.1, "flip": flip})


# ---- sibling pairs, by hand --------------------------------------------------------------------
SCORES = {"a": 0.8, "b": 0.3, "c": 0.8, "d": 0.7, "e": 0.2, "f": 0.5, "g": 0.4, "h": 0.6}
GROUPS = [SiblingGroup("q", (), ("a", "b", "c"), (True, False, False)),
          SiblingGroup("q", (), ("d", "e"), (True, True)),
          SiblingGroup("q", ("x",), ("f", "g", "h"), (False, True, True))]
LOOKUP = CallablePRM(lambda q, steps: [SCORES.get(s, 0.0) for s in steps])


def test_sibling_pairs_by_hand():
    stats = sibling_pairs(GROUPS, [[SCORES[c] for c in g.children] for g in GROUPS])
    assert (stats.pairs, stats.wins) == (4, 2.5)  # a>b win, a=c tie; g<f loss, h>f win
    assert stats.accuracy == 0.625


def test_verifier_rows_by_hand():
    rows = {r.depth: r for r in verifier_rows(LOOKUP, {"p": GROUPS})}
    assert (rows[0].groups, rows[0].pairs, rows[0].pairwise, rows[0].steps) == (2, 4, 0.625, 8)
    assert rows[0].auc == pytest.approx(7.5 / 15)  # 5 right x 3 wrong children, counted by hand
    assert (rows[1].pairs, rows[1].pairwise) == (2, 0.75)
    assert (rows[2].pairs, rows[2].pairwise) == (2, 0.5)


# ---- ProcessBench / PRMBench -------------------------------------------------------------------
def _fooled(q, steps):
    """Right arithmetic 0.9, wrong 0.1, and every answer line 0.4 (so it flags right answers)."""
    return [0.9 if task.arithmetic_ok(s) else 0.4 if task.parse_answer(s) is not None else 0.1 for s in steps]


def test_processbench_metrics_by_hand():
    chains = read_benchmark(DATA / "processbench_tiny.jsonl", "processbench").chains
    assert [c.first_error for c in chains] == [-1, 0, 1, -1]
    assert chains[1].right == (False, None, None) and chains[2].right == (True, False, None)
    res = evaluate_benchmark(CallablePRM(_fooled), chains)
    assert (res.chains, res.judged_steps) == (4, 9)
    assert res.error_accuracy == 1.0 and res.correct_accuracy == 0.0 and res.f1 == 0.0
    assert res.step_auc == 1.0
    assert res.prm_score == pytest.approx((10 / 12 + 4 / 6) / 2)  # TP 5, FN 2, TN 2, FP 0


def test_prmbench_metrics_by_hand():
    chains = read_benchmark(DATA / "prmbench_tiny.jsonl", "prmbench").chains
    assert [c.right for c in chains] == [(True, False), (False, True)]
    res = evaluate_benchmark(CallablePRM(_fooled), chains, fmt="prmbench")
    assert res.error_accuracy == 1.0 and math.isnan(res.correct_accuracy) and math.isnan(res.f1)
    assert res.step_auc == 1.0 and res.prm_score == 1.0
    assert res.summary(0.5).startswith("2 chains, 4 judged steps: PRMScore 1.000; step AUC 1.000")
    assert "F1" not in res.summary(0.5) and not res.notes  # only PRMBench's metric, nothing undefined


@pytest.mark.parametrize("fmt, line, message", [
    ("processbench", '{"problem": "q", "steps": ["a"]}', "field 'label' is missing"),
    ("processbench", '{"problem": "q", "steps": ["a"], "label": 3}', "field 'label' is 3"),
    ("processbench", '{"problem": "q", "steps": "a", "label": -1}', "field 'steps' must be list"),
    ("processbench", '{"problem": "q", "steps": ["a", 7], "label": -1}', r"field 'steps'\[1\] must be str"),
    ("processbench", '{"problem": "q", "steps": ["a"], "label": true}', "field 'label' must be int"),
    ("processbench", '{"problem": "q", "steps": [', "invalid JSON"),
    ("prmbench", '{"modified_question": "q", "modified_process": ["a"], "error_steps": ["1"]}', "1-based"),
    ("prmbench", '{"modified_question": "q", "modified_process": ["a"]}', "field 'error_steps' is missing"),
])
def test_benchmark_readers_name_file_line_and_field(tmp_path, fmt, line, message):
    path = tmp_path / "bad.jsonl"
    good = (DATA / f"{fmt}_tiny.jsonl").read_text().splitlines()[0]
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(BenchmarkFormatError, match=f"{path}: 1 bad record.*{path}:2: .*{message}"):
        read_benchmark(path, fmt)


# ---- the likelihood PRM --------------------------------------------------------------------------
def test_chain_rules():
    assert chain_scores([0.5, 0.8, 0.5], "prod") == [0.5, 0.4, 0.2]
    assert chain_scores([0.5, 0.8, 0.4], "min") == [0.5, 0.5, 0.4]
    assert chain_scores([0.5, 0.8], "none") == [0.5, 0.8]
    with pytest.raises(ValueError, match="chain"):
        LikelihoodHead(chain="max")


def test_likelihood_features_are_the_mean_and_min_token_logprob(model, tokenizer, one_thread):
    prm = LikelihoodPRM(model=model, tokenizer=tokenizer, head=LikelihoodHead(chain="none"), device="cpu")
    chain = Chain("Left to right: 5 + 3", ("Step 1: 5 + 3 = 8\n", "The answer is 8\n"))
    [feats] = prm.scorer.step_values([chain])
    ids = [tokenizer.bos_token_id] + tokenizer.encode("Left to right: 5 + 3\n" + "".join(chain.steps),
                                                       add_special_tokens=False)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    token_logp = logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    n_prompt = len(tokenizer.encode("Left to right: 5 + 3\n", add_special_tokens=False)) + 1
    first = token_logp[n_prompt - 1:n_prompt - 1 + len(chain.steps[0])]
    assert feats[0, 0].item() == pytest.approx(first.mean().item(), abs=1e-5)
    assert feats[0, 1].item() == pytest.approx(first.min().item(), abs=1e-5)
    w, b = prm.likelihood_head.weight, prm.likelihood_head.bias
    [scores] = prm.score([chain])
    expect = 1 / (1 + math.exp(-(w[0] * feats[0, 0].item() + w[1] * feats[0, 1].item() + b)))
    assert scores.scores[0] == pytest.approx(expect, abs=1e-5)


def test_fitted_likelihood_head_verifies_and_round_trips(tmp_path, one_thread):
    """On the committed xl LM, a head fitted on 60 gold and 60 corrupted chains orders held-out siblings."""
    lm = str(CHECKPOINTS / "lm-xl")
    prm = LikelihoodPRM(lm, head=LikelihoodHead(), device="cpu")
    train, held_out = PROBLEMS[:60], [p for p in PROBLEMS[100:] if len(p.solution_steps) >= 3][:40]
    labelled = []
    for i, p in enumerate(train):
        k = i % (len(p.solution_steps) - 1)
        bad = tuple(p.solution_steps[:k]) + (off_by(p.solution_steps[k], 1 + i % 7),)
        labelled += [LabelledChain(p.question, tuple(p.solution_steps), [1.0] * len(p.solution_steps)),
                     LabelledChain(p.question, bad, [1.0] * k + [0.0])]
    head = fit_likelihood_head(prm, labelled, chain="prod")
    assert head.training["chains"] == 120 and head.training["bce"] < 0.2
    fitted = LikelihoodPRM(lm, head=head, device="cpu")
    right = [Chain(p.question, tuple(p.solution_steps[:2])) for p in held_out]
    wrong = [Chain(p.question, (p.solution_steps[0], off_by(p.solution_steps[1], 10))) for p in held_out]
    r, w = fitted.score(right), fitted.score(wrong)
    assert sum(a.scores[-1] > b.scores[-1] for a, b in zip(r, w)) >= 0.9 * len(held_out)
    assert all(a.scores[0] == pytest.approx(b.scores[0]) for a, b in zip(r, w))  # same first step, same score
    fitted.save(str(tmp_path / "prm"))
    again = load_prm("likelihood", path=str(tmp_path / "prm"), device="cpu")
    assert [s for x in again.score(right[:5]) for s in x.scores] == pytest.approx([s for x in r[:5] for s in x.scores])


# ---- the eval-prm command ---------------------------------------------------------------------
def test_eval_prm_on_a_benchmark_file(capsys, tmp_path):
    out = tmp_path / "m.json"
    assert cli(["eval-prm", "--prm", "builtin_oracle", "--policies", "none",
                "--jsonl", f"processbench:{DATA / 'processbench_tiny.jsonl'}", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 chains, 9 judged steps: erroneous 1.000, correct 1.000, F1 1.000; step AUC 1.000" in text
    assert "PRMScore" not in text and out.exists()


def test_eval_prm_reads_every_file_it_can(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "q"}\n')
    code = cli(["eval-prm", "--prm", "position", "--policies", "none",
                "--jsonl", f"processbench:{bad}", "--jsonl", f"processbench:{DATA / 'processbench_gsm8k_excerpt.json'}",
                "--jsonl", f"prmbench:{DATA / 'prmbench_circular_excerpt.jsonl'}"])
    out, err = capsys.readouterr()
    assert code == 2 and f"{bad}: 1 bad record(s)" in err and "1 of 3 --jsonl file(s) could not be read" in err
    assert "processbench_gsm8k_excerpt.json: 4 chains" in out and "prmbench_circular_excerpt.jsonl: 4 chains" in out
    assert "1 error_steps entries in 1 record(s) point past their chain: dropped" in out


def test_eval_prm_on_builtin_siblings_with_the_oracle(capsys):
    assert cli(["eval-prm", "--prm", "builtin_oracle", "--policies", "small", "--problems", "8"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("small")]
    overall = lines[0].split()
    assert overall[1] == "all" and int(overall[3]) > 0 and overall[4] == "1.000"  # the checker orders every pair


@pytest.mark.parametrize("args, message", [
    (["--jsonl", "nosuchformat:x.jsonl"], "expected FORMAT:PATH"),
    (["--jsonl", "processbench:/no/such/file.jsonl"], "cannot read"),
    (["--prm", "no_such_prm"], "unknown PRM type"),
])
def test_eval_prm_user_errors_are_one_line_with_status_2(capsys, args, message):
    base = ["eval-prm", "--policies", "none"]
    if "--prm" not in args:
        base += ["--prm", "builtin_oracle"]
    assert cli(base + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# ---- the benchmark files as published ------------------------------------------------------------
def test_processbench_as_published_is_a_json_array_and_reads_like_json_lines(tmp_path):
    published = read_benchmark(DATA / "processbench_gsm8k_excerpt.json", "processbench")
    assert [c.first_error for c in published.chains] == [1, 1, 1, -1]
    assert published.chains[0].source.endswith("processbench_gsm8k_excerpt.json: item 1")
    lines = tmp_path / "gsm8k.jsonl"
    lines.write_text("".join(json.dumps(o) + "\n" for o in json.loads(published.path.read_text())))
    as_lines = read_benchmark(lines, "processbench")
    assert [(c.question, c.steps, c.right) for c in as_lines.chains] == [
        (c.question, c.steps, c.right) for c in published.chains]


def test_prmbench_entries_past_the_chain_are_dropped_as_its_evaluator_does(capsys):
    path = DATA / "prmbench_circular_excerpt.jsonl"
    bench = read_benchmark(path, "prmbench")
    assert (len(bench.chains), bench.dropped_entries, bench.records_with_dropped) == (4, 1, 1)
    third = bench.chains[2]  # error_steps [16, 34] on 33 steps: step 16 is wrong, 34 is ignored
    assert len(third.steps) == 33 and [i for i, r in enumerate(third.right) if not r] == [15]
    with pytest.raises(BenchmarkFormatError, match=f"{path}:3: field 'error_steps' holds 34; .*1..33"):
        read_benchmark(path, "prmbench", strict=True)


def test_every_bad_record_of_a_file_is_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = (DATA / "processbench_tiny.jsonl").read_text().splitlines()[0]
    path.write_text("\n".join([good] + ['{"problem": "q", "steps": ["a"]}'] * 7 + ["{"]) + "\n")
    with pytest.raises(BenchmarkFormatError) as e:
        read_benchmark(path, "processbench")
    message = str(e.value)
    assert message.startswith(f"{path}: 8 bad record(s) as processbench: {path}:2: field 'label' is missing")
    assert message.endswith("(and 3 more)") and f"{path}:6:" in message and f"{path}:7:" not in message
    path.write_text("problem,steps\n")
    with pytest.raises(BenchmarkFormatError, match="expected a JSON array of objects .* or JSON Lines"):
        read_benchmark(path, "processbench")


def test_an_absent_class_gives_nan_with_a_note(tmp_path):
    path = tmp_path / "all_right.jsonl"
    path.write_text(json.dumps({"modified_question": "q", "modified_process": ["a", "b"], "error_steps": []}) + "\n")
    res = evaluate_benchmark(CallablePRM(lambda q, steps: [0.9] * len(steps)),
                             read_benchmark(path, "prmbench").chains, fmt="prmbench")
    assert math.isnan(res.prm_score) and "no wrong steps: PRMScore" in res.summary(0.5)
    assert "PRMScore NaN" in res.summary(0.5)


def test_chains_past_the_prms_context_are_left_out_and_counted():
    class Short(CallablePRM):
        context_limit = 2

        def chain_length(self, chain):
            return len(chain.steps)

    chains = read_benchmark(DATA / "processbench_tiny.jsonl", "processbench").chains
    res = evaluate_benchmark(Short(_fooled), chains)
    longer = sum(len(c.steps) > 2 for c in chains)
    assert longer > 0 and (res.chains, res.too_long) == (len(chains) - longer, longer)
    assert f"{longer} chain(s) longer than the PRM's context left out" in res.summary(0.5)


def test_trivial_verifiers():
    chain = Chain("q", ("a", "b", "c"))
    assert load_prm("constant").score([chain])[0].scores == [1.0, 1.0, 1.0]
    assert load_prm("constant", score=0.0).score([chain])[0].scores == [0.0, 0.0, 0.0]
    assert load_prm("position", decay=0.5).score([chain])[0].scores == [1.0, 0.5, 0.25]
    r = load_prm("random", seed=3).score([chain, chain])
    assert r[0].scores == r[1].scores and len(set(r[0].scores)) == 3 and all(0 <= x < 1 for x in r[0].scores)
    assert load_prm("random", seed=4).score([chain])[0].scores != r[0].scores
    with pytest.raises(ValueError, match="decay"):
        load_prm("position", decay=0.0)
