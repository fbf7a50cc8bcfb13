"""The Runner: drives many problems' search generators at once and merges their work
into large policy and PRM batches."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from tqdm.auto import tqdm

from .confidence import token_confidence
from .ledger import ComputeLedger
from .protocols import Chain, ExpandRequest, Policy, ProcessRewardModel, StepSample
from .seeds import mix
from .tree import Node, Tree
from .work import Expand, Score, Search, SearchAlgorithm


@dataclass(frozen=True)
class SearchLimits:
    """Caps every path obeys, whatever the algorithm.

    A step that reaches a cap becomes terminal with no answer (it still counts as a
    finished solution, so REBASE's budget is decremented and nothing leaks).
    """

    max_depth: int = 25
    max_step_tokens: int = 256
    max_solution_tokens: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_step_tokens", "max_solution_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"SearchLimits.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Candidate:
    """A finished solution: its answer (None if it has none), steps and PRM step scores."""

    answer: str | None
    steps: tuple[str, ...]
    step_scores: tuple[float, ...]
    num_tokens: int
    finish_reason: str
    node_id: int
    chain: int | None = None  # the sequential chain it belongs to (revisions); None elsewhere
    confidence: float | None = None  # the policy's confidence in it (DeepConf); None elsewhere


@dataclass
class SearchResult:
    question: str
    tree: Tree
    candidates: list[Candidate]
    ledger: ComputeLedger
    wall_time: float = 0.0


@dataclass
class _Problem:
    index: int
    tree: Tree
    search: Search
    ledger: ComputeLedger
    seed: int
    pending: object = None
    finals: list[Node] | None = None
    step_scores: dict[int, tuple[float, ...]] = field(default_factory=dict)
    started: float = 0.0
    wall_time: float = 0.0


class Runner:
    """Runs one search algorithm over many problems in lock-step batches."""

    def __init__(self, policy: Policy, prm: ProcessRewardModel | None = None,
                 limits: SearchLimits = SearchLimits(), progress: bool = True,
                 score_candidates: bool = True):
        self.policy = policy
        self.prm = prm
        self.limits = limits
        self.progress = progress
        self.score_candidates = score_candidates

    # ---- public -------------------------------------------------------------------------
    def run(self, questions: Sequence[str], algorithm: SearchAlgorithm, seed: int = 0,
            desc: str | None = None, seeds: Sequence[int] | None = None,
            on_finish: Callable[[int, ComputeLedger], None] | None = None) -> list[SearchResult]:
        """Search every question; problem i draws its randomness from ``seeds[i]`` if given,
        else from (``seed``, i). Results do not depend on which other problems share the batch.
        ``on_finish(i, ledger)`` is called as each problem's search ends (for progress displays)."""
        if seeds is None:
            seeds = [mix(seed, i) for i in range(len(questions))]
        elif len(seeds) != len(questions):
            raise ValueError(f"{len(seeds)} seeds for {len(questions)} questions")
        problems = [self._start(i, q, algorithm, s) for i, (q, s) in enumerate(zip(questions, seeds))]
        bar = tqdm(total=len(problems), desc=desc or _name(algorithm), disable=not self.progress,
                   leave=False, unit="problem")
        active = [p for p in problems if p.finals is None]
        bar.update(len(problems) - len(active))
        if on_finish is not None:
            for p in problems:
                if p.finals is not None:
                    on_finish(p.index, p.ledger)
        while active:
            expands = [p for p in active if isinstance(p.pending, Expand)]
            scores = [p for p in active if isinstance(p.pending, Score)]
            replies: dict[int, object] = {}
            if expands:
                replies.update(self._expand(expands))
            if scores:
                replies.update(self._score(scores, [p.pending.nodes for p in scores]))
            for p in active:
                self._advance(p, replies[p.index])
            still = [p for p in active if p.finals is None]
            bar.update(len(active) - len(still))
            if on_finish is not None:
                for p in active:
                    if p.finals is not None:
                        on_finish(p.index, p.ledger)
            active = still
        bar.close()
        if self.prm is not None and self.score_candidates:
            self._score_finals(problems)
        return [self._result(p) for p in problems]

    # ---- generator plumbing -------------------------------------------------------------
    def _start(self, index: int, question: str, algorithm: SearchAlgorithm, seed: int) -> _Problem:
        tree = Tree(question, self.policy.encode_prompt(question))
        ledger = ComputeLedger(policy_params=self.policy.num_parameters,
                               prm_params=self.prm.num_parameters if self.prm is not None else 0)
        p = _Problem(index, tree, algorithm(tree), ledger, seed, started=time.perf_counter())
        self._advance(p, None)
        return p

    def _advance(self, p: _Problem, reply: object) -> None:
        try:
            work = p.search.send(reply)
        except StopIteration as stop:
            finals = list(stop.value or [])
            for n in finals:
                if not n.terminal:
                    raise RuntimeError(f"algorithm returned non-terminal node {n.id} as a candidate")
            p.finals = finals
            p.wall_time = time.perf_counter() - p.started
            return
        if not isinstance(work, (Expand, Score)):
            raise TypeError(f"search algorithms yield Expand or Score, got {type(work).__name__}")
        if isinstance(work, Score) and self.prm is None:
            raise RuntimeError(f"{_name(p.search)} needs a process reward model; the Runner has none")
        p.pending = work

    # ---- policy -------------------------------------------------------------------------
    def _expand(self, problems: list[_Problem]) -> dict[int, list[list[Node]]]:
        requests, owners = [], []
        lim = self.limits
        leads: list[tuple[str, tuple[int, ...], tuple[int, ...] | None]] = []
        for p in problems:
            work: Expand = p.pending  # type: ignore[assignment]
            for i, (node, width) in enumerate(zip(work.nodes, work.widths)):
                if width == 0:
                    continue
                lead = work.leads[i] if work.leads is not None else ""
                lead_ids = self._encode_lead(lead)
                revise = work.revise[i] if work.revise is not None else None
                # A revision starts a new solution after its own prompt (question and earlier attempts).
                prompt = None if revise is None else self._encode_revision(p.tree.question, revise)
                used = (0 if node.is_root or prompt is not None else node.path_tokens) + len(lead_ids)
                # A node expanded again behind a lead (budget forcing's "Wait") or asked to redraw
                # (rounds of adaptive sampling) draws afresh: its seed also counts the node's children,
                # so a retry is not the same draw as the first try.
                seed = mix(p.seed, node.id)
                if (lead or work.redraw) and node.children:
                    seed = mix(seed, len(node.children))
                requests.append(ExpandRequest(
                    prefix_ids=(p.tree.prefix_ids(node) if prompt is None else prompt) + lead_ids, width=width,
                    seed=seed, greedy=work.greedy, logprobs=work.logprobs,
                    max_new_tokens=max(1, min(lim.max_step_tokens, lim.max_solution_tokens - used))))
                owners.append((p, node))
                leads.append((lead, lead_ids, prompt))
        outputs = self.policy.expand(requests) if requests else []
        children: dict[tuple[int, int], list[Node]] = {}
        fmt = self.policy.step_format
        for (p, node), req, out, (lead, lead_ids, prompt) in zip(owners, requests, outputs, leads):
            if len(out.samples) != req.width:
                raise RuntimeError(f"policy returned {len(out.samples)} samples for width {req.width}")
            p.ledger.policy_processed_tokens += out.processed_tokens
            kids = []
            for s in out.samples:
                p.ledger.generated_tokens += len(s.token_ids)
                text = lead + s.text
                answer = fmt.extract_answer(text)
                child = p.tree.add_child(node, text, lead_ids + tuple(s.token_ids), answer=answer,
                                         finish_reason="answer" if answer is not None else s.finish_reason,
                                         prompt_ids=prompt)
                child.terminal = (answer is not None or s.finish_reason == "eos"
                                  or child.path_tokens >= lim.max_solution_tokens
                                  or child.depth >= lim.max_depth)
                if child.terminal and answer is None and s.finish_reason != "eos":
                    child.finish_reason = ("token_cap" if child.path_tokens >= lim.max_solution_tokens
                                           else "depth_cap")
                if req.logprobs:
                    child.token_confidence = self._token_confidence(s)
                kids.append(child)
            children[(p.index, node.id)] = kids
        for p in problems:
            p.ledger.policy_calls += 1
        return {p.index: [children.get((p.index, n.id), []) for n in p.pending.nodes] for p in problems}

    def _token_confidence(self, s: StepSample) -> tuple[float, ...]:
        if s.top_logprobs is None:
            raise TypeError(f"{type(self.policy).__name__} returns no log-probabilities (ExpandRequest.logprobs), "
                            f"which this search needs; the transformers, vllm and openai backends return them")
        if len(s.top_logprobs) != len(s.token_ids):
            raise RuntimeError(f"{type(self.policy).__name__} returned log-probabilities for {len(s.top_logprobs)} "
                               f"of a step's {len(s.token_ids)} tokens")
        return tuple(token_confidence(lps) for lps in s.top_logprobs)

    def _encode_lead(self, lead: str) -> tuple[int, ...]:
        if not lead:
            return ()
        encode = getattr(self.policy, "encode_text", None)
        if encode is None:
            raise TypeError(f"{type(self.policy).__name__} has no encode_text(text), which fixed step leads need")
        return tuple(encode(lead))

    def _encode_revision(self, question: str, attempts: Sequence[str]) -> tuple[int, ...]:
        encode = getattr(self.policy, "encode_revision", None)
        if encode is None:
            raise TypeError(f"{type(self.policy).__name__} has no encode_revision(question, attempts), which "
                            f"revisions need")
        return tuple(encode(question, tuple(attempts)))

    # ---- PRM ----------------------------------------------------------------------------
    def _score(self, problems: list[_Problem], node_lists: list[Sequence[Node]]) -> dict[int, list[float]]:
        chains, owners = [], []
        for p, nodes in zip(problems, node_lists):
            for n in nodes:
                if n.is_root:
                    raise ValueError("the root (the question) has no step to score")
                chains.append(Chain(p.tree.question, tuple(Tree.steps(n))))
                owners.append((p, n))
        results = self.prm.score(chains) if chains else []  # type: ignore[union-attr]
        if len(results) != len(chains):
            raise RuntimeError(f"PRM returned {len(results)} results for {len(chains)} chains")
        for (p, n), chain, r in zip(owners, chains, results):
            if len(r.scores) != len(chain.steps):
                raise RuntimeError(f"PRM returned {len(r.scores)} scores for a chain of {len(chain.steps)} steps")
            n.score = float(r.scores[-1])
            p.step_scores[n.id] = tuple(float(s) for s in r.scores)
            p.ledger.prm_processed_tokens += r.processed_tokens
        for p in problems:
            p.ledger.prm_calls += 1
        return {p.index: [n.score for n in nodes] for p, nodes in zip(problems, node_lists)}

    def _score_finals(self, problems: list[_Problem]) -> None:
        """Give every candidate its step scores (voting needs them); scored chains are skipped.

        The scoring runs once for all problems, so each problem's wall time gets the share of
        it its own chains took (sampling spends up to half its time here)."""
        todo = [(p, [n for n in p.finals if n.id not in p.step_scores]) for p in problems]
        todo = [(p, ns) for p, ns in todo if ns]
        if not todo:
            return
        t0 = time.perf_counter()
        self._score([p for p, _ in todo], [ns for _, ns in todo])
        spent = time.perf_counter() - t0
        total = sum(len(ns) for _, ns in todo)
        for p, ns in todo:
            p.wall_time += spent * len(ns) / total

    def _result(self, p: _Problem) -> SearchResult:
        cands = [Candidate(answer=n.answer, steps=tuple(Tree.steps(n)),
                           step_scores=p.step_scores.get(n.id, ()),
                           num_tokens=n.path_tokens, finish_reason=n.finish_reason, node_id=n.id, chain=n.chain,
                           confidence=n.confidence)
                 for n in p.finals or []]
        return SearchResult(p.tree.question, p.tree, cands, p.ledger, p.wall_time)


def _name(obj: object) -> str:
    return getattr(obj, "name", None) or type(obj).__name__
