"""A plug-in module as a user writes one: each of the five kinds registered by decorator, with no
library edit; tests/test_plugins.py names them in a config that lists this file under ``plugins:``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from experiments.datasets import Problem, register_dataset
from experiments.graders import register_grader
from reward_models import CallablePRM, register_prm
from treesearch.algorithms import register_algorithm
from treesearch.backends import register_policy
from treesearch.testing import ScriptedPolicy
from treesearch.work import expand, score


def _script(question: str, steps: tuple[str, ...], k: int, seed: int) -> str:
    """One step, then the answer: the question's number doubled, wrong on every third sample."""
    n = int(question.split()[-1])
    return f"Double {n}\n" if not steps else f"The answer is {2 * n + (k % 3 == 2)}"


@register_policy("plugin_doubler")
def doubler(spec) -> ScriptedPolicy:
    return ScriptedPolicy(_script, num_parameters=1000)


@register_prm("plugin_parity")
def parity(**options) -> CallablePRM:
    return CallablePRM(lambda question, steps: [0.9 if "answer" not in s or int(s.split()[-1]) % 2 == 0 else 0.1
                                                for s in steps])


@register_dataset("plugin_numbers", grader="plugin_equal")
def numbers(n: int = 5) -> list[Problem]:
    return [Problem(id=f"n{i}", question=f"Double {i}", answer=str(2 * i)) for i in range(n)]


@register_grader("plugin_equal")
def equal(answer: str, gold: str) -> bool:
    return answer.strip() == gold.strip()


@register_algorithm("plugin_best_first_step")
@dataclass(frozen=True)
class BestFirstStep:
    """Sample ``n`` first steps, keep the best-scored one, finish it once."""

    n: int = 2
    budget_param: ClassVar[str] = "n"
    needs_prm: ClassVar[bool] = True
    name: str = "plugin_best_first_step"

    def __call__(self, tree):
        (firsts,) = yield from expand([tree.root], self.n)
        scores = yield from score(firsts)
        best = max(zip(scores, firsts), key=lambda x: x[0])[1]
        (ends,) = yield from expand([best], 1)
        return [e for e in ends if e.terminal]
