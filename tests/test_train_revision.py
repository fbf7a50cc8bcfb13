"""The built-in revision model's training data, encoding and training script (experiments/builtin/train_revision.py)."""
from __future__ import annotations

import json
import random
from dataclasses import replace

from experiments.builtin import train_revision as tr
from experiments.builtin.models import REVISION_PROMPT, builtin_policy
from experiments.builtin.train_policy import bucketed
from treesearch.builtin.task import train_split
from treesearch.prompts import PromptFormat

LAYOUT = PromptFormat("{question}\n", revision=REVISION_PROMPT)  # what a study with revision_prompt builds


def problem(level: int = 2):
    return next(p for p in train_split(20) if p.level == level)


def wrong_attempt(p, k: int) -> str:
    """The gold solution with its answer off by ``k`` (a wrong final answer)."""
    return p.solution.replace(f"The answer is {p.answer}\n", f"The answer is {int(p.answer) + k}\n")


def right_variant(p) -> str:
    """A right solution whose text differs from the gold one (a trailing space the checker accepts)."""
    first, *rest = p.solution_steps
    return first.replace("\n", "  \n") + "".join(rest)


def test_revision_prompt_is_plain_characters_of_the_tokenizer(tokenizer):
    ids = tokenizer.encode(REVISION_PROMPT, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == REVISION_PROMPT
    assert len(ids) == len(REVISION_PROMPT) <= 12 and REVISION_PROMPT.endswith("\n")


def test_verdicts_use_the_checker():
    p = problem()
    assert tr.verdict(p, p.solution) == "right" and tr.verdict(p, right_variant(p)) == "right"
    assert tr.verdict(p, wrong_attempt(p, 1)) == "wrong" and tr.verdict(p, "") == "wrong"
    flawed = p.solution.replace("Step 1:", "Step 7:", 1)  # the right answer after a misnumbered step
    assert tr.verdict(p, flawed) == "unclear"


def test_examples_cover_history_sizes_with_only_wrong_attempts_oldest_first():
    p = problem()
    wrongs = [wrong_attempt(p, k) for k in range(1, 7)]
    attempts = (wrongs[0], p.solution, wrongs[1], wrongs[2], p.solution.replace("Step 1:", "Step 9:", 1), *wrongs[3:])
    examples = tr.build_examples(tr.Sampled(p, attempts), random.Random(0))
    assert [len(e.history) for e in examples] == [0, 1, 2, 3, 4]
    for e in examples:
        assert all(a in wrongs for a in e.history)  # never a right or unclear attempt in context
        positions = [wrongs.index(a) for a in e.history]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert e.target == p.solution and e.source == "policy"
    few = tr.build_examples(tr.Sampled(p, (wrongs[0], p.solution, wrongs[1])), random.Random(0))
    assert [len(e.history) for e in few] == [0, 1, 2]  # as many as there are wrong attempts
    assert [len(e.history) for e in tr.build_examples(tr.Sampled(p, (p.solution,) * 3), random.Random(0))] == [0]


def test_target_is_the_closest_right_attempt_else_gold():
    assert tr.edit_distance("kitten", "sitting") == 3 and tr.edit_distance("", "abc") == 3 and tr.edit_distance("ab", "ab") == 0
    assert tr.pick_target(["abcd", "xyz"], ["old", "xya"], "gold") == ("xyz", "policy")
    assert tr.pick_target(["abc", "abd"], ["abx"], "gold") == ("abc", "policy")  # ties: the earliest
    assert tr.pick_target(["abcd", "xyz"], [], "gold") == ("abcd", "policy")  # no history: the first right one
    assert tr.pick_target([], ["abx"], "gold") == ("gold", "gold")

    p = problem(3)
    variant = right_variant(p)
    near_variant = wrong_attempt(p, 1).replace(p.solution_steps[0], variant.splitlines(keepends=True)[0])
    attempts = (near_variant, p.solution, variant)
    (none, one) = tr.build_examples(tr.Sampled(p, attempts), random.Random(0))
    assert one.history == (near_variant,) and one.target == variant and one.source == "policy"  # not the first right one
    assert none.target == p.solution  # no history: the first right attempt
    only_wrong = tr.build_examples(tr.Sampled(p, (wrong_attempt(p, 1), wrong_attempt(p, 2))), random.Random(0))
    assert all(e.target == p.solution and e.source == "gold" for e in only_wrong) and len(only_wrong) == 3


def test_encoding_is_the_search_layout_and_the_loss_covers_target_and_eos(tokenizer, model):
    p = problem()
    ex = tr.RevisionExample(p.question, p.level, (wrong_attempt(p, 1), wrong_attempt(p, 2)), p.solution, "policy")
    ids, n = tr.encode(tokenizer, ex)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[1:n]) == LAYOUT.revision_text(None, p.question, ex.history)
    assert tokenizer.decode(ids[n:-1]) == p.solution
    assert tuple(ids[:n]) == builtin_policy(model, tokenizer).encode_revision(p.question, ex.history)  # what a search feeds
    assert tr.encode(tokenizer, replace(ex, history=()))[1] == len(tokenizer.encode(p.question + "\n"))

    short = replace(ex, history=())
    (_, mask, labels), = bucketed(iter([tr.encode(tokenizer, ex), tr.encode(tokenizer, short)]), 2, tokenizer.pad_token_id, random.Random(0))
    for row, e in enumerate(sorted([ex, short], key=lambda e: len(tr.encode(tokenizer, e)[0]))):
        seq, start = tr.encode(tokenizer, e)
        supervised = [i for i, t in enumerate(labels[row].tolist()) if t != -100]
        assert supervised == list(range(start, len(seq)))  # the target and <eos>, nothing else
        assert labels[row, start:len(seq)].tolist() == tokenizer.encode(p.solution, add_special_tokens=False) + [tokenizer.eos_token_id]
        assert int(mask[row].sum()) == len(seq)


def test_positions_fit_the_longest_history_4_revision(tokenizer):
    q = "Left to right: 99 * 9 * 9 * 9 * 9 * 9"
    longest = "x" * tr.LIMITS.max_solution_tokens
    ex = tr.RevisionExample(q, 5, (longest,) * 4, longest, "gold")
    assert len(tr.encode(tokenizer, ex)[0]) <= tr.position_budget() < len(tr.encode(tokenizer, ex)[0]) + 128
    checkpoint = tr.REVISION_DIR / "config.json"
    if checkpoint.exists():
        assert json.loads(checkpoint.read_text())["max_position_embeddings"] == tr.position_budget()


def test_chain_stats_by_hand():
    ps = [replace(problem(1), level=1), replace(problem(2), level=2)]
    per_problem = [[[False, True], [True, True]], [[True, False], [False, False]]]
    s = tr.chain_stats(ps, per_problem, history=1)
    assert s.accuracy == [0.5, 0.5] and s.accuracy_by_level == {1: [0.5, 1.0], 2: [0.5, 0.0]}
    assert s.right_after_wrong == 0.5 and s.wrong_after_right == 0.5  # wrong->right, wrong->wrong; right->right, right->wrong
    assert s.right_after_wrong_by_level == {1: 1.0, 2: 0.0} and s.wrong_after_right_by_level == {1: 0.0, 2: 1.0}
    other = tr.chain_stats(ps, [[[False, False], [True, False]], [[True, False], [False, False]]], history=0)
    assert tr.paired_gain(s, other) == {"mean": 0.5, "se": 0.5}


def test_training_script_smoke_and_resume(tmp_path, capsys):
    out, work = tmp_path / "out", tmp_path / "work"
    args = ["--minutes", "1", "--max-steps", "3", "--problems", "12", "--samples", "2", "--held-out", "2", "--batch-size", "4",
            "--eval-n", "5", "--eval-chains", "1", "--curve-n", "5", "--eval-every-s", "0.001", "--out", str(out), "--work-dir", str(work)]
    tr.main(args)
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 3 and len(m["curve"]) == 3 and m["data"]["problems"] == 10 and m["data"]["held_out_problems"] == 2
    assert m["revision_prompt"] == REVISION_PROMPT and sum(m["data"]["target_source"].values()) == m["data"]["examples"]
    assert {"revised", "resampled", "policy_fresh", "policy_revising", "chain5"} <= set(m["eval"])
    assert m["eval"]["revised"]["accuracy"][0] == m["eval"]["resampled"]["accuracy"][0]  # shared first attempts
    assert len(m["eval"]["chain5"]["accuracy"]) == 5 and len(m["eval"]["chain5"]["step_kinds"]) == 5
    assert sum(m["eval"]["revised"]["step_kinds"][1].values()) > 0  # the revisions' steps were graded
    card = (out / "README.md").read_text()
    assert "python -m experiments.builtin.train_revision --minutes 1" in card and "Verdict" in card
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == tr.position_budget()
    assert (work / "attempts.json").exists() and not (work / "train_state.pt").exists()

    capsys.readouterr()
    tr.main(args + ["--resume", "--max-steps", "1", "--checkpoint-every-s", "0"])
    assert "loaded 12 sampled problems" in capsys.readouterr().out  # the attempts are not sampled again
    assert json.loads((out / "metrics.json").read_text())["sampling_seconds"] == m["sampling_seconds"]

    before = json.loads((out / "metrics.json").read_text())["eval"]
    again = tr.reevaluate(out, "re-evaluated")  # the saved model, evaluated again: same seeds, same numbers
    assert again["eval"]["revised"]["accuracy"] == before["revised"]["accuracy"]
    assert again["eval"]["chain5"]["step_kinds"] == before["chain5"]["step_kinds"]
    assert again["steps"] == 1 and "re-evaluated" in (out / "README.md").read_text()
