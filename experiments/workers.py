"""Policies side by side: a study's policies run at once in worker processes, one share of the cores each.

A policy's records do not depend on what another policy ran before it (each setting starts with the
PRM's caches emptied, and a policy's KV store lives and dies with the policy), so workers give the
records a one-process run gives. Each worker appends to a file of its own
(``records.policy<i>.jsonl``, ``trees.policy<i>.jsonl``), and when the workers end (an error and
Ctrl-C included) the parent appends those files to ``records.jsonl`` and ``trees.jsonl`` in policy
order and removes them: the study's files read as a one-process run writes them, and nothing a
worker wrote is lost. A run stopped before the merge leaves the worker files, which the records
reader and the next run's merge both take up.

Why: tiny models on a few cores gain little from a second torch thread inside one process (most
of their time is small operations), and a lot from a second process. The built-in demo runs its two
policies this way by default.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Sequence

from .records import RecordWriter, records_file
from .trees import TreeWriter, trees_file

_FILES = {"records": (RecordWriter, records_file), "trees": (TreeWriter, trees_file)}  # kind -> writer, study's file
_messages: Any = None  # in a worker: the queue its progress goes to


def part_file(results: Path, kind: str, index: int) -> Path:
    """Where worker ``index`` (the policy's place in the study) appends its records or trees."""
    return Path(results) / f"{kind}.policy{index}.jsonl"


def parse_workers(text: str) -> int:
    """``--workers``: a count of processes, at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes >= 1, got {text!r}")
    return int(text)


def default_workers(policies: int) -> int:
    """One worker per policy, as far as the cores go."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(policies, cores))


def run_side_by_side(run_policies: Callable, cfg, work: Sequence[tuple[int, Any, list]], shard, stored: dict,
                     results: Path, bar, workers: int) -> None:
    """Run each (policy index, policy, jobs) of ``work`` by ``run_policies`` (the sweep's, passed in: a worker
    gets it by reference) in one of ``workers`` processes, each with its share of torch's threads; relay their
    progress to ``bar``; merge their files; re-raise the first error."""
    import torch

    threads = max(1, torch.get_num_threads() // workers)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process whose torch threads already run
    messages = ctx.Queue()
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start, initargs=(messages, threads)) as pool:
            futures = [pool.submit(_run, run_policies, cfg, i, pol, jobs, shard, stored, results)
                       for i, pol, jobs in work]
            labels: dict[int, str] = {}  # policy index -> the setting its worker runs now, all on the bar
            while not all(f.done() for f in futures):
                _relay(messages, bar, labels, wait=0.2)
            _relay(messages, bar, labels, wait=0.0)
            for f in futures:  # the first worker's error, in policy order, once every worker has ended
                try:
                    f.result()
                except BrokenProcessPool as e:
                    raise RuntimeError("a worker process ended abruptly: killed, out of memory, or started from a "
                                       "script without an `if __name__ == \"__main__\":` guard (worker processes "
                                       "import the script that starts them)") from e
    finally:
        merge(results, [i for i, *_ in work])


def merge(results: Path, indices: Sequence[int]) -> None:
    """Append the workers' files to the study's own in policy order (complete lines only) and remove them."""
    for kind, (writer, study_file) in _FILES.items():
        parts = [part_file(results, kind, i) for i in indices]
        parts = [p for p in parts if p.exists()]
        if not parts:
            continue
        with writer(study_file(results)) as out:  # opening cuts a torn last line off
            for part in parts:
                writer(part).close()  # and the worker's, if it stopped mid-write
                text = part.read_text(encoding="utf-8")
                out.write_lines([text] if text else [])
                part.unlink()


# ---- in a worker -----------------------------------------------------------------------------------
def _start(messages, threads: int) -> None:
    import torch

    global _messages
    _messages = messages
    torch.set_num_threads(threads)


def _run(run_policies: Callable, cfg, index: int, policy, jobs: list, shard, stored: dict, results: Path) -> None:
    trees = part_file(results, "trees", index) if cfg.store_trees else None
    run_policies(cfg, [(policy, jobs)], shard, stored, part_file(results, "records", index), trees,
                 _RelayedProgress(_messages, index))


class _RelayedProgress:
    """The parent's progress bar as a worker sees it: every call is sent to the parent."""

    def __init__(self, messages, worker: int):
        self.messages, self.worker, self.label = messages, worker, ""

    def start(self, label: str) -> None:
        self.label = label
        self.messages.put((self.worker, label, 0, 0, 0))

    def advance(self, units: int, tokens: int) -> None:
        self.messages.put((self.worker, self.label, units, tokens, 0))

    def wrote(self, n: int) -> None:
        self.messages.put((self.worker, self.label, 0, 0, n))


def _relay(messages, bar, labels: dict[int, str], wait: float) -> None:
    """Apply the workers' progress to the bar (every worker's setting in its label), waiting up to ``wait``
    seconds for the first message."""
    block = wait > 0
    while True:
        try:
            worker, label, units, tokens, records = messages.get(block, wait) if block else messages.get_nowait()
        except queue.Empty:
            return
        block = False
        labels[worker] = label
        bar.label = " · ".join(labels[w] for w in sorted(labels))
        if units or tokens:
            bar.advance(units, tokens)
        elif records:
            bar.wrote(records)
        else:
            bar.start(bar.label)
