"""Judge: a finished search turned into its Record.

Each candidate is graded against the gold answer, each voting rule's pick is judged, and the
search's ledger and context are stored; a sampling record at a smaller budget is derived from a
larger run's first samples instead of searched again. Kept apart from the run loop so that a
record's content depends only on its search result (and the grader), never on how the run was
scheduled.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Sequence

from treesearch.ledger import ComputeLedger
from treesearch.runner import SearchResult
from treesearch.tree import Tree
from treesearch.voting import Scored, answer_classes, memoized, picks

from .config import MethodConfig, PRMConfig, VotingConfig
from .records import CandidateRecord, Derivation, Record, Vote


def judge(candidates: Sequence[Scored], gold: str, voting: VotingConfig,
          grader: Callable[[str, str], bool]) -> dict[str, Any]:
    """The answer each voting rule picks and whether it is right, plus pass@n (any right):
    the ``votes``, ``pass_at_n`` and ``num_answered`` fields of a record. Candidates in chains
    (revisions) also get the hierarchical rule, one key per aggregation ("hierarchical/last"); candidates
    with the policy's confidence (DeepConf) get the confidence-weighted vote ("confidence")."""
    equal = memoized(grader)
    votes = {key: Vote(answer, answer is not None and equal(answer, gold))
             for key, answer in picks(candidates, voting.keys(), voting.aggregations, equal).items()}
    classes = answer_classes(candidates, equal)
    return {"votes": votes, "pass_at_n": any(equal(c[0].answer, gold) for c in classes),
            "num_answered": sum(len(c) for c in classes)}


def _sample_index(tree: Tree) -> dict[int, int]:
    """node id -> index of the root's child it descends from (the independent sample, for sampling;
    through the attempts it revised, for revisions: its chain's first attempt)."""
    out = {c.id: i for i, c in enumerate(tree.root.children)}
    for n in tree.nodes[1:]:  # a parent is created before its children
        if n.id not in out:
            out[n.id] = out[n.parent.id]
    return out


def build_record(problem: Any, model: str, method: MethodConfig, budget: int, seed: int, pseed: int,
                 result: SearchResult, voting: VotingConfig, grader: Callable[[str, str], bool],
                 dataset: str, store_steps: bool = False, verifier: PRMConfig | None = None,
                 parameter_count: str = "non_embedding", processed_source: str = "model") -> Record:
    """The record of one search (``pseed``: the problem seed the Runner used)."""
    samples = _sample_index(result.tree)
    equal = memoized(grader)  # one memo for the verdicts and the votes: each answer pair graded once
    cands = tuple(CandidateRecord(
        answer=c.answer, correct=c.answer is not None and equal(c.answer, problem.answer),
        step_scores=tuple(float(s) for s in c.step_scores), num_tokens=c.num_tokens, finish_reason=c.finish_reason,
        sample=samples.get(c.node_id, 0), steps=tuple(c.steps) if store_steps else None,
        chain=c.chain, confidence=c.confidence) for c in result.candidates)
    return Record(
        problem_id=problem.id, model=model, method=method.name, budget=budget, seed=seed, problem_seed=pseed,
        dataset=dataset, level=problem.level, gold=problem.answer, algorithm=method.algorithm,
        params=method.params_for(budget), candidates=cands, **judge(result.candidates, problem.answer, voting, equal),
        ledger=dataclasses.replace(result.ledger), wall_time=result.wall_time, verifier=_plain_spec(verifier),
        parameter_count=parameter_count, processed_source=processed_source)


def _plain_spec(prm: PRMConfig | None) -> dict[str, Any] | None:
    """The verifier as a record keeps it: its flat config, JSON-safe (a Python object becomes its text)."""
    return None if prm is None else json.loads(json.dumps(prm.to_plain(), default=str))


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
