"""Sequential revisions, hand-computed with the scripted policy and PRM."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from experiments.config import VotingConfig
from experiments.judging import judge
from experiments.records import CandidateRecord
from treesearch.algorithms import Revisions, make_algorithm
from treesearch.prompts import PromptFormat
from treesearch.runner import Runner
from treesearch.testing import ScriptedPolicy, ScriptedPRM
from treesearch.tree import Tree
from treesearch.voting import hierarchical_vote, vote
from treesearch.work import Expand

REV = PromptFormat.revision  # the revision request the prompt builder puts after each earlier attempt


def seen(question: str, steps: tuple[str, ...], k: int, seed: int) -> str:
    """Answers how many earlier attempts its prompt holds (a revision's prompt reaches it whole)."""
    return f"The answer is {question.count(REV.strip())}"


def two_steps(question: str, steps: tuple[str, ...], k: int, seed: int) -> str:
    n = question.count(REV.strip())
    return f"The answer is {n}" if steps else f"Think {n}"


def run(algo, script=seen, prm=None):
    policy = ScriptedPolicy(script)
    prm = prm or ScriptedPRM(lambda q, steps: 0.5)
    return policy, Runner(policy, prm, progress=False).run(["Q"], algo)[0]


@pytest.mark.parametrize("chains,length", [(1, 4), (2, 3), (4, 1), (3, 2)])
def test_chain_and_attempt_counts(chains, length):
    policy, res = run(Revisions(n=chains * length, chains=chains, history=4))
    assert len(res.candidates) == chains * length  # every attempt is a candidate
    assert Counter(c.chain for c in res.candidates) == {c: length for c in range(chains)}
    # one expansion of the root for the first attempts, then one round of revisions per later attempt
    assert policy.widths() == [[chains]] + [[1] * chains] * (length - 1)
    assert [c.answer for c in res.candidates] == [str(j) for _ in range(chains) for j in range(length)]


@pytest.mark.parametrize("history,answers", [(0, "0000"), (1, "0111"), (2, "0122"), (4, "0123"), (9, "0123")])
def test_a_revision_sees_the_last_k_attempts(history, answers):
    policy, res = run(Revisions(n=4, chains=1, history=history))
    assert "".join(c.answer for c in res.candidates) == answers
    texts = ["".join(c.steps) for c in res.candidates]
    prompts = ["".join(map(chr, call[0].prefix_ids)) for call in policy.calls]
    for j, prompt in enumerate(prompts):  # attempt j revises attempts j-k .. j-1, oldest first
        before = texts[max(0, j - history):j] if history else []
        assert prompt == "Q\n" + "".join(t + REV for t in before)
    if history == 2:
        assert prompts[3] == f"Q\nThe answer is 1\n{REV}The answer is 2\n{REV}"


def test_each_attempt_is_its_own_solution():
    chains = []
    prm = ScriptedPRM(lambda q, steps: chains.append((q, steps)) or 0.1 * len(steps))
    _, res = run(Revisions(n=2, chains=1), script=two_steps, prm=prm)
    first, second = res.candidates
    # The revision hangs under the attempt it revises, but its steps, answer, tokens and PRM chain are its own.
    assert second.steps == ("Think 1\n", "The answer is 1\n") and second.answer == "1"
    assert second.num_tokens == len("Think 1\nThe answer is 1\n")
    assert second.step_scores == (0.1, 0.2)
    assert ("Q", ("Think 1\n", "The answer is 1\n")) in chains
    assert all(len(steps) <= 2 for _, steps in chains)
    node = res.tree.nodes[second.node_id]
    assert node.depth == 2 and Tree.path(node)[0].parent.id == first.node_id
    prompt = "Q\nThink 0\nThe answer is 0\n" + REV
    assert res.tree.prefix_ids(node) == tuple(map(ord, prompt + "Think 1\nThe answer is 1\n"))


def test_ledger_of_a_revision_chain():
    policy, res = run(Revisions(n=3, chains=1, history=4))
    attempts = [len(f"The answer is {j}\n") for j in range(3)]  # 16 tokens each (one per character)
    contexts = [len("Q\n"), len("Q\n") + attempts[0] + len(REV), len("Q\n") + sum(attempts[:2]) + 2 * len(REV)]
    assert res.ledger.generated_tokens == sum(attempts) == 48
    assert res.ledger.policy_processed_tokens == sum(contexts) + sum(attempts) == 102 + 3 * len(REV)
    assert res.ledger.policy_calls == 3


@dataclass
class C:
    answer: str | None
    step_scores: tuple[float, ...]
    chain: int | None = None


def test_hierarchical_selection_by_hand():
    cands = [C("A", (0.9,), 0), C("B", (0.2,), 0),
             C("B", (0.6,), 1), C("C", (0.5,), 1),
             C("B", (0.4,), 2), C("A", (0.35,), 2), C(None, (1.0,), 2)]
    # per chain the verifier's best: A 0.9, B 0.6, B 0.4; weighted across chains: B 1.0 > A 0.9
    assert hierarchical_vote(cands) == "B"
    # plain voting over every attempt picks otherwise: weighted A 1.25 > B 1.2, best-of-N A
    assert vote(cands, "weighted") == "A" and vote(cands, "best_of_n") == "A" and vote(cands, "majority") == "B"
    assert hierarchical_vote([C("A", (0.5,), 0), C("B", (0.5,), 0)]) == "A"  # ties within a chain: first
    assert hierarchical_vote([C(None, (0.5,), 0)]) is None
    assert hierarchical_vote(cands, agg="min") == "B"


def test_records_carry_the_hierarchical_vote():
    _, res = run(Revisions(n=4, chains=2))
    votes = judge(res.candidates, "1", VotingConfig(), lambda a, b: a == b)["votes"]
    assert votes["hierarchical/last"].answer == "0" and not votes["hierarchical/last"].correct  # ties: chain 0's first
    assert set(votes) == {"majority", "best_of_n/last", "weighted/last", "hierarchical/last"}
    _, plain = run(make_algorithm("sampling", n=4))
    assert "hierarchical/last" not in judge(plain.candidates, "0", VotingConfig(), lambda a, b: a == b)["votes"]
    rec = CandidateRecord("1", True, (0.5,), 16, "answer", sample=1, chain=1)
    assert CandidateRecord.from_json(rec.to_json()) == rec
    assert "chain" not in CandidateRecord("1", True, (0.5,), 16, "answer", sample=1).to_json()


def test_options_and_seams():
    assert make_algorithm("revisions", n=8, chains=2).length == 4
    with pytest.raises(ValueError, match="multiple"):
        Revisions(n=6, chains=4)
    with pytest.raises(ValueError):
        Revisions(n=4, chains=2, history=-1)
    tree = Tree("Q")
    done = tree.add_child(tree.root, "The answer is 1\n", terminal=True, answer="1")
    with pytest.raises(ValueError, match="terminal"):
        Expand([done], [1])
    Expand([done], [1], revise=[["The answer is 1\n"]])  # a finished attempt may be revised
    fmt = PromptFormat("Question: {question}\n", revision="Again.\n")
    assert fmt.revision_text(None, "q", []) == fmt.text(None, "q")
    assert fmt.revision_text(None, "q", ["a1\n", "a2\n"]) == "Question: q\na1\nAgain.\na2\nAgain.\n"


def test_a_chat_revision_is_a_conversation_of_attempts_and_requests():
    """With a chat template, each earlier attempt is an assistant turn and each revision request a user turn,
    the new attempt's turn last; the template writes them (the SmolLM2 config's layout)."""
    from treesearch.builtin.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    fmt = PromptFormat(chat_template=True, system_prompt="S", revision="R")
    assert fmt.revision_text(tok, "q", ["a1", "a2"]) == "<system>S<user>q<assistant>a1<user>R<assistant>a2<user>R<assistant>"
    assert fmt.revision_text(tok, "q", []) == fmt.text(tok, "q") == "<system>S<user>q<assistant>"
    ids = fmt.revision_ids(tok, "q", ["a1"])
    assert tok.decode(ids) == "<system>S<user>q<assistant>a1<user>R<assistant>" and ids[0] != tok.bos_token_id
