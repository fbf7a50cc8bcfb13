"""The built-in task's committed models and the search limits every built-in run shares."""
from __future__ import annotations

from pathlib import Path

from treesearch.runner import SearchLimits

CHECKPOINTS = Path(__file__).parent / "checkpoints"
POLICIES = ("small", "large")  # the study's policy sizes (train_policy.SIZES), smallest first
PRM_DIR = CHECKPOINTS / "prm"  # the learned verifier the demo searches with
LIMITS = SearchLimits(max_depth=10, max_step_tokens=32, max_solution_tokens=200)


def policy_dir(name: str) -> Path:
    return CHECKPOINTS / f"policy-{name}"


def load_policy(name: str, temperature: float = 1.0):
    """A committed built-in policy, as the demo samples from it."""
    from treesearch.policy_hf import TransformersPolicy
    from treesearch.step_format import StepFormat

    path = policy_dir(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no built-in policy {name!r} at {path} (policies: {', '.join(POLICIES)})")
    return TransformersPolicy.from_pretrained(str(path), step_format=StepFormat.preset("newline"),
                                              temperature=temperature, max_batch_rows=512)
