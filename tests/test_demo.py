"""The README's main job in its quick form: every method and policy size on the built-in task."""
from experiments.builtin import demo
from experiments.records import load_dir


def test_quick_demo_writes_table_and_plot(tmp_path, capsys):
    assert demo.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for method in ("greedy", "sampling", "beam", "rebase", "mcts"):
        assert method in out
    plot = tmp_path / "report" / "accuracy_vs_flops.png"
    assert plot.stat().st_size > 10_000
    records = load_dir(tmp_path)
    cfg = demo.study("quick")
    assert {r.model for r in records} == {p.name for p in cfg.policies}
    assert len({r.problem_id for r in records}) == 20
    assert all(r.ledger.paper_flops > 0 for r in records)
    # The reference curve and the verifier sweep: their own verifiers, the sweep for one policy only.
    by_method = {}
    for r in records:
        by_method.setdefault(r.method, []).append(r)
    assert {r.verifier["type"] for r in by_method["rebase-oracle"]} == {"builtin_oracle"}
    assert {r.verifier["type"] for r in by_method["rebase"]} == {"likelihood"}
    assert {r.model for r in by_method["rebase-noisy0.2"]} == {"builtin-small"}
    assert {r.verifier["flip_rate"] for r in by_method["sampling-noisy0.3"]} == {0.3}
    assert (tmp_path / "report" / "verifier_quality.png").stat().st_size > 10_000
    assert "FLOPs to reach sampling's best accuracy" in out
    assert "Findings (95 % intervals" in out and "(a) rebase reaches sampling's best accuracy" in out
    assert (tmp_path / "report" / "findings.csv").read_text().startswith("key,claim,subject,verdict,evidence")
    assert {(r.budget, r.params["root_width"]) for r in by_method["mcts"]} == {(4, 2), (8, 2)}


def test_mcts_root_width_follows_the_paper():
    assert [demo.mcts_root_width(b) for b in (4, 16, 32, 64, 128)] == [2, 2, 4, 8, 16]


def test_extended_and_full_profiles_add_the_peers_strategies():
    names = {p: {m.name for m in demo.study(p).methods} for p in demo.PROFILES}
    added = {"lookahead", "dvts", "particle_filtering", "particle_gibbs", "adaptive-supermajority", "adaptive-beta",
             "deepconf-low", "deepconf-high", "deepconf-online"}
    assert added <= names["extended"] and added <= names["full"]
    assert not added & names["default"]
    assert names["extended"] - added == names["default"]
    assert set(demo.REFERENCES) <= names["default"]


def test_the_held_out_split_is_disjoint_and_reseeded():
    first = demo.study("default")
    second = demo.heldout(first)
    assert (first.dataset.start, first.dataset.limit, first.seeds) == (0, 100, [0])
    assert (second.dataset.start, second.dataset.limit, second.seeds) == (100, 200, [1])
    assert second.output == first.output + "-heldout"
    assert [m.name for m in second.methods] == [m.name for m in first.methods]


def test_replication_compares_verdicts_split_by_split():
    from experiments.findings import HOLDS, UNSURE, Finding, replication

    a = [Finding("a", "claim", "small", HOLDS, "3x"), Finding("b", "other", "small vs large", UNSURE, "+1")]
    b = [Finding("a", "claim", "small", HOLDS, "2x")]
    rows = replication([("split 1", a), ("split 2", b)])
    assert [(f.key, [g.evidence if g else None for g in same], ok) for f, same, ok in rows] == [
        ("a", ["3x", "2x"], "yes"), ("b", ["+1", None], "no")]


def test_the_extended_table_measures_each_added_strategy_against_the_references(tmp_path):
    import dataclasses

    from experiments.report import report
    from experiments.sweep import run_study

    cfg = demo.study("quick")
    keep = {"sampling", "beam", "rebase"}
    methods = [dataclasses.replace(m, budgets=[4, 8]) for m in cfg.methods if m.name in keep]
    methods += [m for m in demo.extended_methods([4, 8]) if m.name in ("particle_filtering", "deepconf-high")]
    cfg = dataclasses.replace(cfg, methods=methods, policies=cfg.policies[:1], output=str(tmp_path),
                              dataset=dataclasses.replace(cfg.dataset, limit=6), problems_per_chunk=6)
    rep = report(run_study(cfg, progress=False))
    text = demo.extended_markdown(tmp_path, rep, ["particle_filtering", "deepconf-high"])
    row = next(line for line in text.splitlines() if line.startswith("| particle_filtering | 4 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    pf = next(r for r in rep.rows if (r.method, r.budget, r.rule) == ("particle_filtering", 4, rep.rule))
    assert cells[2].startswith(f"{100 * pf.accuracy:.1f} [")
    assert len(cells) == 7 and all(c == "–" or " [" in c and "(p " in c for c in cells[4:])
    assert "## FLOPs to reach sampling's best accuracy" in text
    # DeepConf is measured by its own confidence vote too, on the same FLOPs.
    own = next(line for line in text.splitlines() if line.startswith("| deepconf-high [confidence] | 8 |"))
    plain = next(line for line in text.splitlines() if line.startswith("| deepconf-high | 8 |"))
    assert own.split("|")[4] == plain.split("|")[4]


def test_workers_must_be_a_count_of_processes(capsys):
    import pytest

    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as e:
            demo.main(["--quick", "--workers", bad])
        assert e.value.code == 2 and f"expected a number of processes >= 1, got {bad!r}" in capsys.readouterr().err
