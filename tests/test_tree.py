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
