"""The sweep: every (policy, method, budget, seed) over the problems, as resumable records.

One policy is loaded at a time and freed before the next. Problems go through the Runner
in chunks (cross-problem batching inside a chunk); each chunk's records are appended as one
flushed write, so a killed run loses at most the chunk in flight and a rerun skips every
recorded (problem, model, method, budget, seed). Under ``accelerate launch`` problem i goes
to process i % n, and each process appends to its own records.rank<k>.jsonl.

Randomness: a record's seed and its problem id give the problem's seed
(``treesearch.seeds.problem_seed``), which the Runner uses for every sample of that problem, so
a record does not depend on which problems shared its chunk or its process: resumed, sharded
and plain runs agree.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from tqdm.auto import tqdm

from treesearch.ledger import ComputeLedger
from treesearch.runner import Runner, SearchResult
from treesearch.seeds import problem_seed
from treesearch.tree import Tree
from treesearch.voting import Scored, answer_classes, memoized, vote

from .builders import algorithm_for, grader_of, load_policy, load_prm_for, load_problems, policy_device, runtime_keys
from .config import (ConfigError, MethodConfig, PolicyConfig, StudyConfig, VotingConfig, config_to_dict,
                     dump_config, incompatible_keys, validate)
from .preflight import preflight
from .records import CandidateRecord, Derivation, Record, RecordWriter, RunLock, Vote, load_dir, records_file

RESOLVED = "resolved.yaml"


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
# Records
# ---------------------------------------------------------------------------------------------
def judge(candidates: Sequence[Scored], gold: str, voting: VotingConfig,
          grader: Callable[[str, str], bool]) -> dict[str, Any]:
    """The answer each voting rule picks and whether it is right, plus the oracle (any right):
    the ``votes``, ``oracle_correct`` and ``num_answered`` fields of a record."""
    equal = memoized(grader)
    votes = {}
    for key, rule, agg in voting.keys():
        answer = vote(candidates, rule, agg, equal=equal)
        votes[key] = Vote(answer, answer is not None and equal(answer, gold))
    classes = answer_classes(candidates, equal)
    return {"votes": votes, "oracle_correct": any(equal(c[0].answer, gold) for c in classes),
            "num_answered": sum(len(c) for c in classes)}


def _sample_index(tree: Tree) -> dict[int, int]:
    """node id -> index of the root's child it descends from (the independent sample, for sampling)."""
    first = {c.id: i for i, c in enumerate(tree.root.children)}
    out = {}
    for n in tree.nodes[1:]:
        path = Tree.path(n)
        out[n.id] = first[path[0].id]
    return out


def build_record(problem: Any, model: str, method: MethodConfig, budget: int, seed: int, pseed: int,
                 result: SearchResult, voting: VotingConfig, grader: Callable[[str, str], bool],
                 dataset: str, store_steps: bool = False, verifier: dict[str, Any] | None = None,
                 parameter_count: str = "non_embedding", processed_source: str = "model") -> Record:
    """The record of one search (``pseed``: the problem seed the Runner used)."""
    samples = _sample_index(result.tree)
    equal = memoized(grader)  # one memo for the verdicts and the votes: each answer pair graded once
    cands = tuple(CandidateRecord(
        answer=c.answer, correct=c.answer is not None and equal(c.answer, problem.answer),
        step_scores=tuple(float(s) for s in c.step_scores), num_tokens=c.num_tokens, finish_reason=c.finish_reason,
        sample=samples.get(c.node_id, 0), steps=tuple(c.steps) if store_steps else None) for c in result.candidates)
    return Record(
        problem_id=problem.id, model=model, method=method.name, budget=budget, seed=seed, problem_seed=pseed,
        dataset=dataset, level=problem.level, gold=problem.answer, algorithm=method.algorithm,
        params=method.params_for(budget), candidates=cands, **judge(result.candidates, problem.answer, voting, equal),
        ledger=dataclasses.replace(result.ledger), wall_time=result.wall_time, verifier=_plain_spec(verifier),
        parameter_count=parameter_count, processed_source=processed_source)


def _plain_spec(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if spec is None else json.loads(json.dumps(spec, default=str))


def derive_record(record: Record, budget: int, method: MethodConfig, voting: VotingConfig,
                  grader: Callable[[str, str], bool]) -> Record:
    """The record sampling at ``budget`` would give, from a run at a larger budget: its first
    ``budget`` samples. Paper FLOPs are exact (their own generated tokens); processed-token
    counts (full FLOPs) and wall time are scaled by the same token share, an approximation
    because prompt encoding and PRM caching do not scale linearly."""
    big = record.budget
    if budget > big:
        raise ValueError(f"cannot derive budget {budget} from a run at budget {big}")
    kept = tuple(c for c in record.candidates if c.sample < budget)
    full = record.ledger
    total = sum(c.num_tokens for c in record.candidates)
    tokens = sum(c.num_tokens for c in kept)
    exact = total == full.generated_tokens and total > 0
    share = tokens / total if exact else budget / big
    ledger = ComputeLedger(
        policy_params=full.policy_params, prm_params=full.prm_params,
        generated_tokens=tokens if exact else round(full.generated_tokens * share),
        policy_processed_tokens=round(full.policy_processed_tokens * share),
        prm_processed_tokens=round(full.prm_processed_tokens * share),
        policy_calls=full.policy_calls, prm_calls=full.prm_calls)
    return dataclasses.replace(
        record, budget=budget, params=method.params_for(budget), candidates=kept,
        **judge(kept, record.gold, voting, grader), ledger=ledger, wall_time=record.wall_time * share,
        derived_from=Derivation(budget=big, share=share, exact_paper_flops=exact))


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


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------
def run_study(config: StudyConfig, out: str | Path | None = None, limit: int | None = None, *,
              progress: bool = True, allow_config_change: bool = False, shard: Shard | None = None) -> Path:
    """Run (or resume) a whole study; returns the results directory.

    ``out`` and ``limit`` override ``config.output`` and ``config.dataset.limit``.
    """
    cfg = dataclasses.replace(config)
    if out is not None:
        cfg.output = str(out)
    if limit is not None:
        cfg.dataset = dataclasses.replace(cfg.dataset, limit=limit)
    validate(cfg)
    preflight(cfg)
    problems = load_problems(cfg.dataset)  # before anything is written: a bad dataset leaves no resolved.yaml
    shard = shard or current_shard()
    results = Path(cfg.output)
    results.mkdir(parents=True, exist_ok=True)
    with RunLock(results, shard.rank, shard.world):
        _write_resolved(cfg, results, shard, allow_config_change)
        _sweep(cfg, problems, results, shard, progress)
    return results


def _sweep(cfg: StudyConfig, problems: list, results: Path, shard: Shard, progress: bool) -> None:
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"dataset {cfg.dataset.name!r} has repeated problem ids; records are keyed by id")
    mine = shard.take(problems)
    existing = load_dir(results)
    done = {r.key for r in existing}
    stored = {r.key: r for r in existing if any(m.subsample and m.name == r.method for m in cfg.methods)}
    del existing
    grader = grader_of(cfg.dataset)
    work = [(pol, plan(cfg, pol, mine, done)) for pol in cfg.policies]
    total = sum(j.num_records for _, jobs in work for j in jobs)
    wanted = sum(j.num_records for pol in cfg.policies for j in plan(cfg, pol, mine, set()))
    where = f"{results}" + (f" (rank {shard.rank}/{shard.world})" if shard.world > 1 else "")
    if total == 0:
        print(f"{where}: all {wanted:,} records present; nothing to run", file=sys.stderr)
        return
    if total < wanted:
        print(f"{where}: {wanted - total:,} of {wanted:,} records present; running {total:,}", file=sys.stderr)
    bar = Progress(sum(j.cost for _, jobs in work for j in jobs), enabled=progress,
                   desc=f"rank {shard.rank}/{shard.world}" if shard.world > 1 else "")
    verifiers = Verifiers(cfg, shard)
    try:
        with RecordWriter(records_file(results, shard.rank, shard.world), fsync=cfg.fsync) as writer:
            for pol, jobs in work:
                if jobs:
                    _run_policy(cfg, pol, jobs, verifiers, shard, grader, stored, writer, bar)
                    _release()
    finally:
        bar.close()
        for prm in verifiers.loaded.values():
            close_model(prm)
        verifiers.loaded.clear()
        _release()


class Progress:
    """A bar over generated tokens, moving as each problem finishes.

    The total is an estimate: the work left (problems x budget, a proxy for solutions) at the
    tokens per unit measured so far, so the time estimate follows token throughput, not
    record counts (budgets differ 32x in cost). The label names the setting running now.
    """

    def __init__(self, units: int, enabled: bool = True, desc: str = ""):
        self.units_total, self.units_done, self.tokens = max(1, units), 0, 0
        self.records = 0
        self.label = ""
        self.prefix = f"{desc}: " if desc else ""
        self.bar = tqdm(total=None, unit="tok", unit_scale=True, disable=not enabled, dynamic_ncols=True,
                        bar_format="{n_fmt}/{total_fmt} tokens generated [{elapsed}<{remaining}, {rate_fmt}] {desc}")

    def start(self, label: str) -> None:
        self.label = label
        self._show()

    def advance(self, units: int, tokens: int) -> None:
        self.units_done += units
        self.tokens += tokens
        if self.units_done:
            self.bar.total = max(self.tokens, round(self.tokens * self.units_total / self.units_done))
        self.bar.update(tokens)
        self._show()

    def wrote(self, n: int) -> None:
        self.records += n
        self._show()

    def _show(self) -> None:
        self.bar.set_description_str(f"{self.prefix}{self.label} | {self.records:,} records", refresh=True)

    def close(self) -> None:
        self.bar.close()


class Verifiers:
    """Each method's PRM (its own, or the study's), loaded once on first use and shared by
    every method that names the same spec (so they share one model and one score cache)."""

    def __init__(self, cfg: StudyConfig, shard: Shard):
        self.cfg, self.shard = cfg, shard
        self.loaded: dict[str, Any] = {}

    @staticmethod
    def spec(cfg: StudyConfig, method: MethodConfig) -> dict[str, Any] | None:
        return method.prm if method.prm is not None else cfg.prm

    def key(self, method: MethodConfig) -> str:
        return json.dumps(self.spec(self.cfg, method), sort_keys=True, default=str)

    def get(self, method: MethodConfig) -> Any:
        spec = self.spec(self.cfg, method)
        if spec is None:
            return None
        key = self.key(method)
        if key not in self.loaded:
            self.loaded[key] = load_prm_for(spec, self.shard.local_rank, self.cfg.gpus_per_process)
        return self.loaded[key]


def _write_resolved(cfg: StudyConfig, results: Path, shard: Shard, allow_change: bool) -> None:
    """Every process checks the directory's settings (so all fail alike); rank 0 writes them."""
    path = results / RESOLVED
    new = config_to_dict(cfg)
    if path.exists() and not allow_change:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        bad = incompatible_keys(old, new, runtime_keys(cfg))
        if bad:
            raise ConfigError(f"{path}: the records here were made with other settings ({', '.join(bad)}); "
                              f"use another output directory, or allow_config_change / --allow-config-change "
                              f"if the records stay comparable")
    if shard.rank == 0 or not (shard.launched or path.exists()):  # an independent shard may start first
        dump_config(cfg, path)
    shard.barrier()


def _run_policy(cfg: StudyConfig, pol: PolicyConfig, jobs: list[Job], verifiers: Verifiers, shard: Shard,
                grader: Callable[[str, str], bool], stored: dict, writer: RecordWriter, bar: Progress) -> None:
    """All jobs of one policy; the policy lives only inside this call, so it is freed after."""
    device = policy_device(pol, shard.local_rank, cfg.gpus_per_process)
    policy = None
    runners: dict[str, Runner] = {}  # one per verifier
    size = cfg.problems_per_chunk
    try:
        for job in jobs:
            label = f"{job.model} {job.method.name} b={job.budget} seed {job.seed}"
            derive_only = [(p, bs) for p, bs in job.items if job.budget not in bs]
            for i in range(0, len(derive_only), size):
                recs = []
                for p, budgets in derive_only[i:i + size]:
                    base = stored[(p.id, job.model, job.method.name, job.budget, job.seed)]
                    recs += [derive_record(base, b, job.method, cfg.voting, grader) for b in budgets]
                bar.wrote(writer.write(recs))
            searched = [(p, bs) for p, bs in job.items if job.budget in bs]
            if not searched:
                continue
            if policy is None:
                policy = load_policy(pol, device=device)
            key = verifiers.key(job.method)
            if key not in runners:
                runners[key] = Runner(policy, verifiers.get(job.method), cfg.limits, progress=False)
            runner = runners[key]
            verifier = Verifiers.spec(cfg, job.method)
            _forget_scores(runner.prm)
            algorithm = algorithm_for(job.method, job.budget)
            finished = 0
            for i in range(0, len(searched), size):
                chunk = searched[i:i + size]
                seeds = [problem_seed(job.seed, p.id) for p, _ in chunk]
                bar.start(f"{label}: problem {finished + 1}/{len(searched)}")

                def on_finish(_: int, ledger: ComputeLedger) -> None:
                    nonlocal finished
                    finished += 1
                    bar.label = f"{label}: problem {min(finished + 1, len(searched))}/{len(searched)}"
                    bar.advance(job.budget, ledger.generated_tokens)

                results = runner.run([p.question for p, _ in chunk], algorithm, seeds=seeds, on_finish=on_finish)
                recs = []
                for (p, budgets), s, res in zip(chunk, seeds, results):
                    rec = build_record(p, job.model, job.method, job.budget, job.seed, s, res, cfg.voting, grader,
                                       cfg.dataset.name, cfg.store_steps, verifier, pol.parameter_convention,
                                       getattr(policy, "processed_source", "model"))
                    recs.append(rec)
                    recs += [derive_record(rec, b, job.method, cfg.voting, grader) for b in budgets if b != job.budget]
                bar.wrote(writer.write(recs))
    finally:  # an engine (vLLM) frees its memory now, before the next policy loads; a client says what it retried
        if policy is not None:
            close_model(policy)
        del runners, policy


def close_model(model: Any) -> None:
    """Close a policy or PRM that holds an engine or connections (``close``), after printing the line a client
    of servers keeps on the answers it retried (``server_report``)."""
    report = getattr(model, "server_report", None)
    line = report() if callable(report) else None
    if line:
        print(line, file=sys.stderr)
    close = getattr(model, "close", None)
    if callable(close):
        close()


def _forget_scores(prm: Any) -> None:
    """Empty a PRM's score cache (and KV store) before each setting: a record's PRM tokens then count what its
    setting alone costs, whatever ran before it in the process (so resumed runs agree with
    uninterrupted ones), as a user running that one setting would pay."""
    forget = getattr(prm, "forget", None) or getattr(getattr(prm, "cache", None), "clear", None)
    if callable(forget):
        forget()


def _release() -> None:
    """Give a freed model's memory back (GPU caches included) before the next one loads."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
