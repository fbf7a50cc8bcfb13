"""The built-in task: generator, gold checking, tokenizer round-trip, committed checkpoints."""
from __future__ import annotations

import pytest

from experiments.builtin.models import CHECKPOINTS
from treesearch.builtin import task
from treesearch.builtin.task import (
    BuiltinProblem,
    arithmetic_ok,
    check_solution,
    generate,
    grade_steps,
    on_gold_path,
    parse_question,
    parse_step,
    train_split,
)
from treesearch.builtin.task import test_split as fixed_test_split  # not test_*: pytest would collect it
from treesearch.builtin.tokenizer import build_tokenizer, encode_example
from treesearch.step_format import StepFormat

MODELS = ("policy-small", "policy-large", "lm-xl", "revision-small")  # the committed language models


def test_generator_is_deterministic_per_seed() -> None:
    assert generate(50, seed=3) == generate(50, seed=3)
    assert generate(50, seed=3) != generate(50, seed=4)
    assert fixed_test_split(40) == fixed_test_split(40)
    assert fixed_test_split(500)[:100] == fixed_test_split(100)  # prefixes nest


def test_train_and_test_never_overlap() -> None:
    test_q = {p.question for p in fixed_test_split(500)}
    for seed in (0, 1):
        train_q = {p.question for p in train_split(3000, seed=seed)}
        assert not train_q & test_q
    assert len(test_q) == 500  # deduplicated


def test_gold_solutions_check_out_and_all_levels_present() -> None:
    problems = fixed_test_split(500) + train_split(1000, seed=0)
    assert all(check_solution(p) for p in problems)
    assert task.level_counts(fixed_test_split(500)) == {lv: 100 for lv in range(1, 6)}
    fmt = StepFormat.preset("newline")
    for p in problems[:200]:
        assert isinstance(p, BuiltinProblem) and isinstance(p.answer, str)
        assert 2 <= len(p.solution_steps) <= 6
        assert all(s.endswith("\n") and s.count("\n") == 1 for s in p.solution_steps)
        assert fmt.extract_answer(p.solution_steps[-1]) == p.answer
        assert all(fmt.extract_answer(s) is None for s in p.solution_steps[:-1])
        start, ops = parse_question(p.question)
        assert len(ops) == len(p.solution_steps) - 1


def test_parse_step_and_grading_catch_errors() -> None:
    assert parse_step("Step 2: 45 * 3 = 135\n") == (45, "*", 3, 135)
    assert parse_step("The answer is 135\n") is None
    assert parse_step("Step 2: 45 * = 135") is None
    assert arithmetic_ok("Step 1: 37 + 8 = 45\n") and not arithmetic_ok("Step 1: 37 + 8 = 46\n")
    q = "Left to right: 37 + 8 * 3"
    gold = ["Step 1: 37 + 8 = 45\n", "Step 2: 45 * 3 = 135\n", "The answer is 135\n"]
    assert all(g.ok for g in grade_steps(q, gold))
    bad = ["Step 1: 37 + 8 = 46\n", "Step 2: 46 * 3 = 138\n", "The answer is 138\n"]
    assert [g.kind for g in grade_steps(q, bad)] == ["arith", "ok", "ok"]
    assert on_gold_path(q, bad) == [False, False, False]
    skipped = ["Step 1: 37 * 3 = 111\n", "The answer is 111\n"]
    assert [g.kind for g in grade_steps(q, skipped)] == ["copy", "answer"]


def test_tokenizer_round_trips_task_text() -> None:
    tok = build_tokenizer()
    for p in fixed_test_split(50):
        text = p.question + "\n" + p.solution
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)  # one token per character
        assert tok.decode(ids) == text
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == text
    ids, n_prompt = encode_example(tok, "Left to right: 2 + 3", ["Step 1: 2 + 3 = 5\n", "The answer is 5\n"])
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[1:n_prompt]) == "Left to right: 2 + 3\n"


@pytest.mark.parametrize("name", MODELS)
def test_committed_checkpoint_loads_offline_and_writes_steps(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = CHECKPOINTS / name
    assert (path / "model.safetensors").exists() and (path / "README.md").exists()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    text = "Left to right: 37 + 8 * 3\nStep 1: 37 + 8 = 45\n  The answer is 135\n"
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == text

    problems = generate(6, seed=11, levels=[1, 2])
    enc = tok([p.question + "\n" for p in problems], return_tensors="pt", padding=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model; extra threads only contend with other jobs
    try:
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=60, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    finally:
        torch.set_num_threads(threads)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    fmt = StepFormat.preset("newline")
    n_correct = 0
    for p, t in zip(problems, texts):
        lines = t.splitlines(keepends=True)
        assert lines and all(parse_step(s) is not None for s in lines[:-1]), t
        answer = fmt.extract_answer(lines[-1])
        assert answer is not None, t
        n_correct += answer == p.answer
    assert n_correct >= 1  # weak sanity check: easy problems are not all wrong



def test_prm_probe_tells_a_checker_from_a_blind_scorer() -> None:
    from experiments.builtin.probe_prm import off_by, probe
    from reward_models import load_prm

    assert off_by("Step 2: 45 * 3 = 135\n", -7) == "Step 2: 45 * 3 = 128\n"
    problems = [p for p in fixed_test_split(100) if len(p.solution_steps) >= 4][:20]
    checker = load_prm("callable", fn=lambda q, steps: [float(ok) for ok in on_gold_path(q, steps)])
    assert probe(checker, problems, step=1, delta=1)[0] == 1.0
    blind = load_prm("callable", fn=lambda q, steps: [0.5] * len(steps))
    assert probe(blind, problems, step=1, delta=1)[0] == 0.0  # ties never count as "right > wrong"


def test_committed_checkpoints_name_a_tokenizer_class_every_supported_transformers_loads():
    """transformers 5 writes "TokenizersBackend", which 4.x (allowed by pyproject) cannot load."""
    import json

    dirs = sorted(p for p in CHECKPOINTS.iterdir() if (p / "tokenizer_config.json").is_file())
    assert len(dirs) >= 4
    for d in dirs:
        config = json.loads((d / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == "PreTrainedTokenizerFast", d
        assert config["model_input_names"] == ["input_ids", "attention_mask"], d  # 4.x adds token_type_ids otherwise
