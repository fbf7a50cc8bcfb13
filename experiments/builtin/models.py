"""The built-in task's committed models and the search limits every built-in run shares."""
from __future__ import annotations

from pathlib import Path

from treesearch.prompts import PromptFormat
from treesearch.runner import SearchLimits

CHECKPOINTS = Path(__file__).parent / "checkpoints"
POLICIES = ("small", "large")  # the study's policy sizes (train_policy.SIZES), smallest first
PRM_DIR = CHECKPOINTS / "prm"  # the learned verifier the demo searches with
REVISION_DIR = CHECKPOINTS / "revision-small"  # policy-small fine-tuned to revise (train_revision.py)
LIMITS = SearchLimits(max_depth=10, max_step_tokens=32, max_solution_tokens=200)
# The built-in revision request (sequential revisions): written after each earlier attempt in a
# revision's prompt. Short, since every character is a token; set it in a study config with the
# policy key ``revision_prompt`` (the revision model was trained with exactly this text).
REVISION_PROMPT = "Revise:\n"
PROMPT = PromptFormat("{question}\n", revision=REVISION_PROMPT)  # how every built-in model is prompted


def policy_dir(name: str) -> Path:
    return CHECKPOINTS / f"policy-{name}"


def load_policy(name: str, temperature: float = 1.0):
    """A committed built-in policy, as the demo samples from it."""
    path = policy_dir(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no built-in policy {name!r} at {path} (policies: {', '.join(POLICIES)})")
    return load_checkpoint(path, temperature)


def load_checkpoint(path: Path, temperature: float = 1.0):
    """Any built-in language model directory (a policy, the revision model) as a search policy."""
    from treesearch.policy_hf import TransformersPolicy

    return TransformersPolicy.from_pretrained(str(path), **_policy_options(temperature))


def builtin_policy(model, tokenizer, temperature: float = 1.0):
    """A built-in model in memory (e.g. one being trained) as a search policy, set up as a loaded one."""
    from treesearch.policy_hf import TransformersPolicy

    return TransformersPolicy(model, tokenizer, **_policy_options(temperature))


def _policy_options(temperature: float) -> dict:
    """How every built-in model samples: one line per step, the built-in prompt and revision request."""
    from treesearch.step_format import StepFormat

    return {"step_format": StepFormat.preset("newline"), "prompt": PROMPT, "temperature": temperature, "max_batch_rows": 512}
