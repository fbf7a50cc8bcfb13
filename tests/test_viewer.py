"""The tree export (identical siblings grouped, widths, candidates, the vote), kept trees in a sweep,
`treesearch view`, and the viewer rendered in headless Chromium, checked from its DOM."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.sweep import run_study
from experiments.trees import read_trees
from treesearch.builtin.task import answer_of
from experiments.viewer import render_html
from support import comparable, make_config, write_problems
from treesearch.algorithms import Rebase, Sampling
from treesearch.runner import Candidate, Runner
from treesearch.testing import ScriptedPolicy, ScriptedPRM
from treesearch.tree import Tree
from treesearch.tree_export import TreeExport, export_tree


# ---- the export -----------------------------------------------------------------------------------
def hand_tree() -> tuple[Tree, list[Candidate]]:
    """Q -> a (x2, one with children b, b, c), d; b and c terminal."""
    t = Tree("q")
    a1 = t.add_child(t.root, "a\n")
    a2 = t.add_child(t.root, "a\n")
    d = t.add_child(t.root, "d\n")
    for n, s in ((a1, 0.5), (a2, 0.5), (d, 0.1)):
        n.score = s
    b1 = t.add_child(a1, "The answer is 1\n", terminal=True, answer="1", finish_reason="answer")
    b2 = t.add_child(a1, "The answer is 1\n", terminal=True, answer="1", finish_reason="answer")
    c = t.add_child(a2, "The answer is 2\n", terminal=True, answer="2", finish_reason="answer")
    for n, s in ((b1, 0.9), (b2, 0.9), (c, 0.8)):
        n.score = s
    cands = [Candidate(n.answer, tuple(Tree.steps(n)), (0.5, n.score), 10, "answer", n.id) for n in (b1, b2, c)]
    return t, cands


def test_export_groups_identical_siblings_and_counts_the_vote():
    tree, cands = hand_tree()
    ex = export_tree(tree, cands, gold="2", grade=lambda a: a == "2",
                     check_steps=lambda q, steps: [not s.startswith("d") for s in steps])
    g = {(x.text, x.depth): x for x in ex.groups}
    assert ex.nodes == len(tree) == 7 and sum(x.n for x in ex.groups) == 7
    assert len(ex.groups) == 5  # Q, a x2, d, answer-1 x2, answer-2
    a = g[("a\n", 1)]
    assert (a.n, a.width, a.score, a.ok) == (2, 3, 0.5, True)  # both a's children together
    assert g[("d\n", 1)].ok is False and g[("d\n", 1)].width == 0
    one, two = g[("The answer is 1\n", 2)], g[("The answer is 2\n", 2)]
    assert (one.n, one.parent, one.right, two.n, two.right) == (2, a.id, False, 1, True)
    assert [c.group for c in ex.candidates] == [one.id, one.id, two.id]
    assert {t.answer: (t.count, round(t.weight_last, 6)) for t in ex.tally} == {"1": (2, 1.8), "2": (1, 0.8)}
    votes = {v.key: (v.answer, v.right) for v in ex.votes}
    assert votes["majority"] == ("1", False) and votes["best_of_n/last"] == ("1", False)
    assert votes["weighted/last"] == ("1", False)
    data = json.loads(json.dumps(ex.to_json()))
    assert TreeExport.from_json(data) == ex
    assert "answer" not in data["groups"][a.id] and data["groups"][one.id]["right"] is False  # compact, verdicts kept


def test_export_marks_stopped_traces_finished_or_not():
    tree, cands = hand_tree()
    d = next(n for n in tree if n.text == "d\n")
    d.finish_reason = "stopped"  # an unfinished trace the search dropped (DeepConf online)
    late = tree.add_child(d, "The answer is 1\n", terminal=True, answer="1", finish_reason="stopped")
    ex = export_tree(tree, cands)
    text = {g.id: g.text for g in ex.groups}
    finish = {(text.get(g.parent), g.text): g.finish for g in ex.groups}
    assert finish[("q", "d\n")] == "stopped" and finish[("q", "a\n")] == ""
    assert finish[("a\n", "The answer is 1\n")] == "answer" and finish[("d\n", "The answer is 1\n")] == "stopped"
    assert sum(g.finish == "stopped" for g in ex.groups) == 2 and late.id not in {c.node for c in ex.candidates}


def test_export_votes_are_a_records_with_chains_and_confidences():
    """The page shows what the record votes: the hierarchical rule for revision chains, the confidence vote
    for DeepConf's candidates. Chains: (1: "1" at 0.9, "2" at 0.3), (2: "2" at 0.8), (3: "2" at 0.7):
    majority "2"; hierarchical takes "1" from chain 1 (0.9) against "2" from chains 2 and 3 (0.8 + 0.7)."""
    import dataclasses
    tree, cands = hand_tree()
    node = cands[0].node_id
    chained = [Candidate(a, ("s",), (s,), 5, "answer", node, chain=k)
               for a, s, k in (("1", 0.9, 1), ("2", 0.3, 1), ("2", 0.8, 2), ("2", 0.7, 3))]
    votes = {v.key: v.answer for v in export_tree(tree, chained).votes}
    assert votes["majority"] == "2" and votes["hierarchical/last"] == "2" and "confidence" not in votes
    chained[2] = dataclasses.replace(chained[2], step_scores=(0.1,))
    votes = {v.key: v.answer for v in export_tree(tree, chained, aggregations=["last"]).votes}
    assert votes["hierarchical/last"] == "1" and "hierarchical/min" not in votes  # 0.9 against 0.1 + 0.7
    sure = [dataclasses.replace(c, confidence=w) for c, w in zip(cands, (0.1, 0.1, 0.5))]  # answers 1, 1, 2
    votes = {v.key: (v.answer, v.right) for v in export_tree(tree, sure, grade=lambda a: a == "2").votes}
    assert votes["confidence"] == ("2", True) and votes["majority"] == ("1", False)


def test_text_print_groups_identical_siblings():
    tree, _ = hand_tree()
    text = tree.render()
    assert text.count("The answer is 1") == 1 and "x2  => 1" in text
    assert text.splitlines()[1].strip().startswith("[0.500] a  x2")


def scripted(seed_text: bool = True):
    """Steps drawn from 2 choices (so identical siblings are frequent), then an answer."""
    def script(question, steps, k, seed):
        if len(steps) >= 2:
            return f"The answer is {(seed >> 3) % 2}"
        return f"Step {len(steps) + 1}: {(seed + k) % 2}"
    return ScriptedPolicy(script), ScriptedPRM(lambda q, steps: (sum(map(ord, "".join(steps))) % 10) / 10)


def rebase_result(width: int = 8):
    policy, prm = scripted()
    [res] = Runner(policy, prm, progress=False).run(["what is it?"], Rebase(width=width), seed=3)
    return res


def test_export_of_a_searched_tree_keeps_every_node_and_width():
    res = rebase_result(8)
    ex = export_tree(res.tree, res.candidates)
    assert sum(g.n for g in ex.groups) == len(res.tree) and len(ex.groups) < len(res.tree)
    assert ex.groups[0].width == 8  # REBASE gives the root its whole width
    kids: dict[int, int] = {}
    for g in ex.groups[1:]:
        kids[g.parent] = kids.get(g.parent, 0) + g.n
    assert all(g.width == kids.get(g.id, 0) for g in ex.groups)
    assert len(ex.candidates) == len(res.candidates) and sum(t.count for t in ex.tally) == len(res.candidates)


def test_builtin_gold():
    assert answer_of("Left to right: 3 + 4 * 2") == "14" and answer_of("what?") is None


# ---- kept trees in a sweep, and `treesearch view` ---------------------------------------------------
def test_sweep_keeps_trees_of_chosen_problems_and_records_stay_the_same(tmp_path, capsys):
    data = write_problems(tmp_path)
    plain = run_study(make_config(tmp_path / "a", data), progress=False)
    kept = run_study(make_config(tmp_path / "b", data, store_trees=["p0", "p3"]), progress=False)
    assert comparable(plain) == comparable(kept)
    assert not list(plain.glob("trees*")) and (kept / "trees.jsonl").exists()
    trees = read_trees(kept)
    assert {t["problem_id"] for t in trees} == {"p0", "p3"}
    # searched settings only (sampling's smaller budgets are cut from its largest run): 2 models x 2 seeds x 5
    assert len(trees) == 2 * 2 * 2 * 5
    from experiments.records import load_dir
    records = {r.key: r for r in load_dir(kept)}
    for t in trees:
        rec = records[(t["problem_id"], t["model"], t["method"], t["budget"], t["seed"])]
        tree = t["tree"]
        assert [c.get("answer") for c in tree["candidates"]] == [c.answer for c in rec.candidates]
        assert {v["key"]: v.get("answer") for v in tree["votes"]} == {k: v.answer for k, v in rec.votes.items()}
        assert tree["gold"] == rec.gold

    html = tmp_path / "view.html"
    assert main(["view", str(kept), "--out", str(html), "--method", "rebase", "--problem", "p3"]) == 0
    page = html.read_text(encoding="utf-8")
    assert "wrote" in capsys.readouterr().out
    assert not re.search(r"(src|href)\s*=|https?://|@import", page)  # self-contained: nothing to load
    entries = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
                         .group(1))["entries"]
    assert {(e["problem_id"], e["method"]) for e in entries} == {("p3", "rebase")} and len(entries) == 2 * 2 * 2
    assert main(["view", str(plain)]) == 2  # no trees kept: one line saying how to keep them
    assert "store_trees" in capsys.readouterr().err


# ---- the page in a real browser ----------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium; CI's .ci/run "
                             "installs it), so the viewer cannot be rendered in a browser here")


def chromium(tmp_path: Path, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class DomReader(HTMLParser):
    """What the test reads back from the rendered DOM: tree rows, vote rows, candidate rows, the node count."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.votes: dict[str, str] = {}
        self.candidate_rows: list[int] = []
        self.node_count = ""
        self.question = ""
        self.stopped = 0  # rows marked as stopped traces
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag == "li" and "node" in cls.split():
            self.rows.append({k[5:]: v for k, v in a.items() if k.startswith("data-")})
        elif tag == "tr" and cls == "vote":
            self.votes[a["data-key"]] = a["data-answer"]
        elif tag == "tr" and cls == "cand":
            self.candidate_rows.append(int(a["data-count"]))
        elif a.get("id") == "node-count":
            self._in = "count"
        elif tag == "span" and cls == "stop":
            self.stopped += 1
        elif tag == "div" and cls == "q":
            self._in = "question"

    def handle_data(self, data):
        if self._in == "count":
            self.node_count += data
        elif self._in == "question":
            self.question += data

    def handle_endtag(self, tag):
        self._in = None


@needs_chromium
def test_viewer_in_headless_chromium_matches_the_tree(tmp_path):
    wide = rebase_result(16)
    policy, prm = scripted()
    [sampled] = Runner(policy, prm, progress=False).run(["another question"], Sampling(n=6), seed=1)
    next(n for n in sampled.tree if n.depth == 1).finish_reason = "stopped"  # as DeepConf's online filter marks
    entries = [{"problem_id": "a", "method": "rebase", "budget": 16, "tree": export_tree(wide.tree, wide.candidates).to_json()},
               {"problem_id": "b", "method": "sampling", "budget": 6,
                "tree": export_tree(sampled.tree, sampled.candidates).to_json()}]
    page = tmp_path / "view.html"
    page.write_text(render_html(entries), encoding="utf-8")

    for index, res in enumerate((wide, sampled)):
        dom = DomReader()
        dom.feed(chromium(tmp_path, "--dump-dom", f"{page.as_uri()}#e={index}&all"))
        ex = export_tree(res.tree, res.candidates)
        assert dom.question == res.tree.question
        assert int(dom.node_count) == len(res.tree)
        assert len(dom.rows) == len(ex.groups)  # every group drawn (#all), each once
        assert sum(int(r["count"]) for r in dom.rows) == len(res.tree)
        shown = sorted((int(r["depth"]), r.get("score", "-"), int(r["count"])) for r in dom.rows)
        want = sorted((g.depth, "-" if g.score is None else f"{g.score:.3f}", g.n) for g in ex.groups)
        assert shown == want
        assert dom.votes == {v.key: v.answer or "" for v in ex.votes}
        assert sum(dom.candidate_rows) == len(res.candidates)
        assert dom.stopped == sum(g.finish == "stopped" for g in ex.groups) == (1 if res is sampled else 0)

    # without #all a wide tree opens breadth first and stays partly collapsed; the screenshot is for people
    shot = tmp_path / "viewer.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,900", f"{page.as_uri()}#e=0")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
