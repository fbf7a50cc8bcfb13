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
    assert {r["model"] for r in records} == {p.name for p in cfg.policies}
    assert len({r["problem_id"] for r in records}) == 20
    assert all(r["ledger"]["paper_flops"] > 0 for r in records)
