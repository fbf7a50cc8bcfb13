import pytest

from treesearch.runner import Candidate
from treesearch.voting import aggregate, answer_classes, memoized, vote


def cand(answer, scores):
    return Candidate(answer, (), tuple(scores), 0, "answer", 0)


CANDS = [cand("2", (0.9, 0.1)), cand("2", (0.5, 0.2)), cand("3", (0.3, 0.8)), cand("3.", (0.2, 0.25)),
         cand("5", (0.9, 0.9)), cand(None, (1.0, 1.0))]


def test_aggregations():
    s = (0.5, 0.2, 0.8)
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "min") == 0.2
    assert aggregate(s, "mean") == pytest.approx(0.5)
    assert aggregate(s, "prod") == pytest.approx(0.08)
    assert aggregate((), "min") == 0.0
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(s, "max")


def test_majority_ties_go_to_first_class_and_normalization_merges():
    assert [len(c) for c in answer_classes(CANDS)] == [2, 2, 1]
    assert vote(CANDS, "majority") == "2"


@pytest.mark.parametrize("rule,agg,expected", [
    ("best_of_n", "last", "5"),  # the unanswered candidate (1.0) is ignored
    ("best_of_n", "min", "5"),
    ("weighted", "last", "3"),   # 2: 0.3, 3: 1.05, 5: 0.9
    ("weighted", "mean", "5"),   # 2: 0.85, 3: 0.775, 5: 0.9
    ("weighted", "prod", "5"),   # 2: 0.19, 3: 0.29, 5: 0.81
    ("weighted", "min", "5"),    # 2: 0.3, 3: 0.5, 5: 0.9
])
def test_rules(rule, agg, expected):
    assert vote(CANDS, rule, agg) == expected


def test_custom_equivalence_and_empty():
    same_parity = lambda a, b: int(a.rstrip(".")) % 2 == int(b.rstrip(".")) % 2
    assert [len(c) for c in answer_classes(CANDS, same_parity)] == [2, 3]
    assert vote(CANDS, "majority", equal=same_parity) == "3"
    assert vote([cand(None, (0.5,))], "weighted") is None
    with pytest.raises(ValueError, match="unknown voting rule"):
        vote(CANDS, "plurality")


def test_voting_reads_stored_candidates_and_needs_no_engine():
    """vote takes anything with an answer and step scores (a record's candidates), and the module
    loads on its own: it imports nothing of the search engine."""
    import importlib.util
    from pathlib import Path

    from experiments.records import CandidateRecord

    stored = [CandidateRecord(c.answer, None, c.step_scores, 0, "answer", i) for i, c in enumerate(CANDS)]
    assert [vote(stored, r) for r in ("majority", "best_of_n", "weighted")] == [vote(CANDS, r) for r in
                                                                                 ("majority", "best_of_n", "weighted")]
    path = Path(__file__).resolve().parents[1] / "treesearch" / "voting.py"
    spec = importlib.util.spec_from_file_location("standalone_voting", path)  # no package: relative imports fail
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.vote(CANDS, "weighted") == vote(CANDS, "weighted")


def test_one_memo_grades_each_distinct_pair_once():
    """Voting rules and answer classes sharing a memoized grader call it once per distinct pair."""
    calls = []

    def equal(a: str, b: str) -> bool:
        calls.append((a, b))
        return a.strip("0.") == b.strip("0.")

    cands = [Candidate(answer=a, steps=(), step_scores=(s,), num_tokens=1, finish_reason="answer", node_id=i)
             for i, (a, s) in enumerate([("1", 0.2), ("1.0", 0.9), ("2", 0.5), ("1.0", 0.1), ("2", 0.3)])]
    memo = memoized(equal)
    assert memoized(memo) is memo
    for rule in ("majority", "weighted"):
        assert vote(cands, rule, equal=memo) == "1"
    assert [len(c) for c in answer_classes(cands, memo)] == [3, 2]
    assert sorted(calls) == [("1.0", "1"), ("2", "1")]
