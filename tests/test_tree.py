from treesearch.tree import Tree


def build():
    t = Tree("What is 2+2?", prompt_ids=(1, 2, 3))
    a = t.add_child(t.root, "Step 1: 2+2=4\n", (10, 11, 12))
    b = t.add_child(t.root, "Step 1: 2+2=5\n", (10, 13))
    c = t.add_child(a, "The answer is 4\n", (20, 21), terminal=True, answer="4")
    c.score = 0.875
    return t, a, b, c


def test_path_prefix_and_accumulated_tokens():
    t, a, b, c = build()
    assert Tree.path(c) == [a, c]
    assert Tree.steps(c) == ["Step 1: 2+2=4\n", "The answer is 4\n"]
    assert t.prefix_ids(c) == (1, 2, 3, 10, 11, 12, 20, 21)
    assert (a.path_tokens, c.path_tokens, c.depth) == (3, 5, 2)  # accumulated from the parent
    assert set(t.leaves()) == {b, c} and t.terminals() == [c]


def test_networkx_keeps_attributes():
    t, a, b, c = build()
    g = t.to_networkx()
    assert set(g.edges) == {(0, a.id), (0, b.id), (a.id, c.id)}
    assert g.nodes[c.id]["score"] == 0.875 and g.nodes[c.id]["answer"] == "4"
    assert g.nodes[c.id]["terminal"] and g.nodes[a.id]["token_ids"] == (10, 11, 12)


def test_render_shows_scores_and_terminals():
    t, *_ = build()
    lines = str(t).splitlines()
    assert lines[0] == "Q: What is 2+2?"
    assert lines[2] == "    [0.875] The answer is 4  => 4"
    assert lines[1].startswith("  [  -  ] Step 1: 2+2=4")


def test_networkx_keeps_the_chain_and_confidence():
    t, a, b, c = build()
    c.confidence, c.chain = -0.25, 1
    g = t.to_networkx()
    assert (g.nodes[c.id]["confidence"], g.nodes[c.id]["chain"]) == (-0.25, 1)
    assert g.nodes[a.id]["confidence"] is None and g.nodes[a.id]["chain"] is None


def test_render_marks_stopped_traces_apart_from_identical_finished_ones():
    """A trace the search stopped (DeepConf's online filter) is no candidate, even where it reached an answer:
    the print says so, and never groups it with an identical sibling that finished."""
    t = Tree("q")
    done = t.add_child(t.root, "The answer is 4\n", terminal=True, answer="4", finish_reason="answer")
    cut = t.add_child(t.root, "The answer is 4\n", terminal=True, answer="4", finish_reason="answer")
    cut.finish_reason = "stopped"
    mid = t.add_child(t.root, "Step 1\n")
    mid.finish_reason = "stopped"
    lines = t.render().splitlines()[1:]
    assert lines == ["  [  -  ] The answer is 4  => 4", "  [  -  ] The answer is 4  => 4  [stopped]",
                     "  [  -  ] Step 1  [stopped]"]
    assert [g.stopped for g in t.grouped().children] == [False, True, True] and done.finish_reason == "answer"
