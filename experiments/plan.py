"""Plan: what work a study needs, and how it is split across processes.

Before anything runs, the sweep asks which (model, method, budget, seed) settings still lack
records for which problems (``plan``, so a resumed run skips what is recorded and ``treesearch
check`` can count the work without loading a model), and which problems this process owns
(``Shard``: problem i goes to rank i % world, under a launcher or as an independent
``--shard K/N`` process).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from .config import ConfigError, MethodConfig, PolicyConfig, StudyConfig


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """This process's slice of the problems: problem i belongs to rank i % world."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = True  # started together by accelerate/torchrun (False: --shard K/N, e.g. a SLURM array)

    def take(self, items: Sequence[Any]) -> list[Any]:
        return [x for i, x in enumerate(items) if i % self.world == self.rank]

    def barrier(self) -> None:
        if self.world > 1 and self.launched:
            from accelerate import PartialState
            PartialState().wait_for_everyone()


#: Set by torchrun / ``accelerate launch --multi_gpu`` (WORLD_SIZE) or by MPI launchers.
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def current_shard() -> Shard:
    """The shard accelerate's PartialState assigns; a plain run is one shard.

    accelerate is imported only for multi-process runs (it costs seconds to import). With
    no GPU the processes talk over gloo on CPU.
    """
    if max(int(os.environ.get(v, "1") or 1) for v in _WORLD_VARS) <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true")
    return Shard(state.process_index, state.num_processes, state.local_process_index)


def parse_shard(text: str) -> Shard:
    """``"K/N"`` (0 <= K < N): an independent process running shard K of N, as a SLURM array task
    does (``--shard $SLURM_ARRAY_TASK_ID/4``); it needs no launcher, so a vLLM engine may span GPUs."""
    k, sep, n = text.partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit() or not int(k) < int(n):
        raise ConfigError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    if max(int(os.environ.get(v, "1") or 1) for v in _WORLD_VARS) > 1:
        raise ConfigError("--shard K/N is for independent processes; under accelerate/torchrun the launcher shards")
    return Shard(int(k), int(n), 0, launched=False)


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One searched setting and, per problem, the budgets to record from it.

    A problem whose list holds ``budget`` is searched; otherwise its records are derived
    from the stored record at ``budget`` (sampling with subsample)."""

    model: str
    method: MethodConfig
    budget: int
    seed: int
    items: list[tuple[Any, list[int]]] = field(default_factory=list)

    @property
    def to_search(self) -> list[Any]:
        return [p for p, bs in self.items if self.budget in bs]

    @property
    def num_records(self) -> int:
        return sum(len(bs) for _, bs in self.items)

    @property
    def cost(self) -> int:
        """Problems to search x budget: a proxy for the solutions (so tokens) this job generates."""
        return len(self.to_search) * self.budget


def plan(cfg: StudyConfig, policy: PolicyConfig, problems: Sequence[Any], done: set) -> list[Job]:
    jobs = []
    for m in cfg.methods:
        budgets = m.budgets_for(policy.name)
        if not budgets:  # the method is not run for this policy
            continue
        runs = [(max(budgets), sorted(budgets))] if m.subsample else [(b, [b]) for b in budgets]
        for budget, covered in runs:
            for seed in cfg.seeds:
                job = Job(policy.name, m, budget, seed)
                for p in problems:
                    missing = [b for b in covered if (p.id, policy.name, m.name, b, seed) not in done]
                    if missing:
                        job.items.append((p, missing))
                if job.items:
                    jobs.append(job)
    return jobs
