"""Run: the sweep loop, every (policy, method, budget, seed) over the problems, as resumable records.

The stages around it: ``plan`` says what is left to run and which problems this process owns,
``judging`` turns each finished search into its Record, ``records`` appends it, ``run_lock``
keeps a second live run out, ``progress`` draws the bar. This module only runs the loop.

One policy is loaded at a time and freed before the next (or, with ``workers``, one per worker
process: ``workers``). Problems go through the Runner
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
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from treesearch.config_mapping import from_plain
from treesearch.ledger import ComputeLedger
from treesearch.runner import Runner
from treesearch.seeds import problem_seed
from treesearch.voting import memoized

from .facts import study_facts, write_facts
from .builders import algorithm_for, grader_of, load_policy, load_prm_for, load_problems, policy_device, runtime_keys
from .config import (ConfigError, MethodConfig, PolicyConfig, StudyConfig, config_to_dict, dump_config, incompatible_keys,
                     validate)
from .judging import build_record, derive_record
from .plan import Job, Shard, current_shard, plan
from .preflight import preflight
from .progress import Progress
from .records import RecordWriter, load_dir, records_file
from .workers import merge, run_side_by_side
from .run_lock import RunLock
from .trees import TreeWriter, step_checker, tree_line, trees_file, wanted

RESOLVED = "resolved.yaml"


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------
def run_study(config: StudyConfig, out: str | Path | None = None, limit: int | None = None, *,
              progress: bool = True, allow_config_change: bool = False, shard: Shard | None = None,
              workers: int = 1) -> Path:
    """Run (or resume) a whole study; returns the results directory.

    ``out`` and ``limit`` override ``config.output`` and ``config.dataset.limit``. ``workers`` > 1 runs
    that many policies at once in worker processes (:mod:`experiments.workers`): the same records.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cfg = dataclasses.replace(config)
    if out is not None:
        cfg.output = str(out)
    if limit is not None:
        cfg.dataset = dataclasses.replace(cfg.dataset, limit=limit)
    validate(cfg)
    preflight(cfg)
    problems = load_problems(cfg.dataset)  # before anything is written: a bad dataset leaves no resolved.yaml
    shard = shard or current_shard()
    if workers > 1 and shard.world > 1:
        raise ConfigError(f"--workers {workers}: workers run policies side by side within one process's share; "
                          f"this is shard {shard.rank} of {shard.world}, already one of several processes: use "
                          "--workers or shards, not both")
    results = Path(cfg.output)
    results.mkdir(parents=True, exist_ok=True)
    with RunLock(results, shard.rank, shard.world):
        _write_resolved(cfg, results, shard, allow_config_change)
        _sweep(cfg, problems, results, shard, progress, workers)
    return results


def _sweep(cfg: StudyConfig, problems: list, results: Path, shard: Shard, progress: bool, workers: int) -> None:
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"dataset {cfg.dataset.name!r} has repeated problem ids; records are keyed by id")
    mine = shard.take(problems)
    if shard.world == 1:
        merge(results, range(len(cfg.policies)))  # what a side-by-side run stopped before its merge left
    existing = load_dir(results)
    done = {r.key for r in existing}
    stored = {r.key: r for r in existing if any(m.subsample and m.name == r.method for m in cfg.methods)}
    del existing
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
    todo = [(i, pol, jobs) for i, (pol, jobs) in enumerate(work) if jobs]
    try:
        if workers > 1 and len(todo) > 1:
            run_side_by_side(run_policies, cfg, todo, shard, stored, results, bar, min(workers, len(todo)))
        else:
            trees = trees_file(results, shard.rank, shard.world) if cfg.store_trees else None
            run_policies(cfg, [(pol, jobs) for _, pol, jobs in todo], shard, stored,
                         records_file(results, shard.rank, shard.world), trees, bar)
    finally:
        bar.close()


def run_policies(cfg: StudyConfig, work: list[tuple[PolicyConfig, list[Job]]], shard: Shard, stored: dict,
                 records: Path, trees: Path | None, bar: Progress) -> None:
    """Each policy's jobs in turn, appending records (and the kept trees) to these files."""
    grader = grader_of(cfg.dataset)
    verifiers = Verifiers(cfg, shard)
    tree_writer = TreeWriter(trees, fsync=cfg.fsync) if trees is not None else None
    try:
        with RecordWriter(records, fsync=cfg.fsync) as writer:
            for pol, jobs in work:
                _run_policy(cfg, pol, jobs, verifiers, shard, grader, stored, writer, bar, tree_writer)
                _release()
    finally:
        if tree_writer is not None:
            tree_writer.close()
        for prm in verifiers.loaded.values():
            close_model(prm)
        verifiers.loaded.clear()
        _release()


class Verifiers:
    """Each method's PRM (its own, or the study's), loaded once on first use and shared by
    every method that names the same spec (so they share one model and one score cache)."""

    def __init__(self, cfg: StudyConfig, shard: Shard):
        self.cfg, self.shard = cfg, shard
        self.loaded: dict[str, Any] = {}

    def key(self, method: MethodConfig) -> str:
        prm = self.cfg.verifier(method)
        return json.dumps(None if prm is None else prm.to_plain(), sort_keys=True, default=str)

    def get(self, method: MethodConfig) -> Any:
        prm = self.cfg.verifier(method)
        if prm is None:
            return None
        key = self.key(method)
        if key not in self.loaded:
            self.loaded[key] = load_prm_for(prm, self.shard.local_rank, self.cfg.gpus_per_process)
        return self.loaded[key]


def _as_written_now(old: dict, path: Path) -> dict:
    """An older resolved.yaml as today's schema writes it: a key added since, at its default, is no change."""
    try:
        return config_to_dict(from_plain(StudyConfig, old, "", str(path)))
    except ConfigError:
        return old  # a key since removed or retyped: compared as it was written


def _write_resolved(cfg: StudyConfig, results: Path, shard: Shard, allow_change: bool) -> None:
    """Every process checks the directory's settings (so all fail alike); rank 0 writes them."""
    path = results / RESOLVED
    new = config_to_dict(cfg)
    if path.exists() and not allow_change:
        old = _as_written_now(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, path)
        bad = incompatible_keys(old, new, runtime_keys(cfg))
        if bad:
            raise ConfigError(f"{path}: the records here were made with other settings ({', '.join(bad)}); "
                              f"use another output directory, or allow_config_change / --allow-config-change "
                              f"if the records stay comparable")
    if shard.rank == 0 or not (shard.launched or path.exists()):  # an independent shard may start first
        dump_config(cfg, path)
        write_facts(results, study_facts(cfg))  # what the report needs to know of each method, declared here
    shard.barrier()


def _run_policy(cfg: StudyConfig, pol: PolicyConfig, jobs: list[Job], verifiers: Verifiers, shard: Shard,
                grader: Callable[[str, str], bool], stored: dict, writer: RecordWriter, bar: Progress,
                trees: TreeWriter | None = None) -> None:
    """All jobs of one policy; the policy lives only inside this call, so it is freed after. With ``trees``,
    the kept problems' search trees are written there (each before its record)."""
    check_steps = step_checker(cfg.dataset) if trees is not None else None
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
            verifier = cfg.verifier(job.method)
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
                recs, kept = [], []
                for (p, budgets), s, res in zip(chunk, seeds, results):
                    equal = memoized(grader)  # one memo per problem: its tree, record and derived records agree
                    if trees is not None and wanted(cfg.store_trees, p.id):
                        key = {"problem_id": p.id, "model": job.model, "method": job.method.name,
                               "budget": job.budget, "seed": job.seed}
                        kept.append(tree_line(key, res, p.answer, equal, cfg.voting, check_steps))
                    rec = build_record(p, job.model, job.method, job.budget, job.seed, s, res, cfg.voting, equal,
                                       cfg.dataset.name, cfg.store_steps, verifier, pol.parameter_convention,
                                       getattr(policy, "processed_source", "model"))
                    recs.append(rec)
                    recs += [derive_record(rec, b, job.method, cfg.voting, equal) for b in budgets if b != job.budget]
                if trees is not None:
                    trees.write(kept)
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
