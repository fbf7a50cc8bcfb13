"""The report's figures: one look per model and method, labels that do not collide, no empty or warning plots."""
import itertools
import warnings
from pathlib import Path

import pytest

from experiments.analysis import Row
from experiments.plots import _place_labels, _plt, palette
from experiments.records import Record, RecordWriter, Vote
from experiments.report import report
from treesearch.ledger import ComputeLedger

LEARNED = {"type": "likelihood", "path": "prm"}
CHECKER = {"type": "builtin_oracle"}


def _row(model: str, method: str, budget: int = 4) -> Row:
    return Row(model, method, "weighted/last", budget, 1e12 * budget, 2e12 * budget, 0.5, 0.3, 0.7, 10, 1, False)


def _records(model: str, method: str, budgets, params: int = 10**9, algorithm: str | None = None,
             verifier=LEARNED, problems: int = 6) -> list[Record]:
    """Synthetic records: accuracy rising with the budget, 100 generated tokens per unit of budget."""
    out = []
    for budget, p in itertools.product(budgets, range(problems)):
        right = p < min(problems, budget + 1)
        votes = {"majority": Vote("1", right), "weighted/last": Vote("1", right)}
        out.append(Record(f"q{p}", model, method, budget, 0, level=1 + p % 2, gold="1",
                          algorithm=algorithm or method, votes=votes, pass_at_n=right,
                          ledger=ComputeLedger(policy_params=params, generated_tokens=100 * budget,
                                               policy_processed_tokens=120 * budget, policy_calls=1),
                          verifier=verifier))
    return out


def _study(directory: Path, records: list[Record]) -> Path:
    directory.mkdir()
    with RecordWriter(directory / "records.jsonl") as w:
        w.write(records)
    return directory


def _quiet_report(directory: Path):
    """report() with every warning an error, as pytest -W error would have it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return report(directory)


def test_a_method_keeps_its_colour_whichever_rows_a_figure_gets():
    full = [_row(m, k) for m in ("small", "large") for k in ("greedy", "sampling", "beam", "rebase", "mcts")]
    part = [r for r in full if r.method in ("rebase", "mcts") and r.model == "large"]
    a, b = palette(full), palette(part)
    for method in ("rebase", "mcts"):
        assert a.method(method) == b.method(method)
        assert a.marker(method) == b.marker(method)
    assert len({a.method(k) for k in ("sampling", "beam", "rebase", "mcts")}) == 4
    assert a.model("small") != a.model("large")
    order = (["large", "small"], ["greedy", "rebase", "sampling"])  # the config's order decides when known
    c, d = palette(full, order), palette(part, order)
    assert c.method("rebase") == d.method("rebase") != c.method("sampling")
    assert c.model("large") == d.model("large") == palette(full).model("small")  # the config's first model


def test_a_reference_verifier_variant_takes_its_base_methods_colour_dashed():
    rows = [_row("small", k) for k in ("sampling", "rebase", "rebase-oracle", "check")]
    pal = palette(rows, algorithms={"rebase-oracle": "rebase", "check": "sampling"},
                  reference={"rebase-oracle", "check"})
    assert pal.method("rebase-oracle") == pal.method("rebase") and pal.ls("rebase-oracle") == "--"
    assert pal.method("check") == pal.method("sampling") and pal.ls("check") == "--"
    assert pal.ls("rebase") == "-" and pal.learned == {"sampling": "sampling", "rebase": "rebase"}


def test_labels_of_close_points_do_not_overlap():
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    xy = [(1e14 * (1 + 0.04 * i), 45 + 0.3 * i) for i in range(8)] + [(1e12, 30), (1e15, 60)]
    ax.scatter(*zip(*xy))
    ax.set_xscale("log")
    fig.tight_layout()
    _place_labels(ax, xy, [f"label {i}" for i in range(len(xy))])
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    plt.close(fig)
    assert len(boxes) == len(xy)
    assert not [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]


def test_models_compared_needs_two_policies_with_a_sampling_curve(tmp_path):
    def policy(model, params):
        return (_records(model, "greedy", [1], params) + _records(model, "sampling", [1, 2, 4], params)
                + _records(model, "rebase", [1, 2, 4], params)
                + _records(model, "rebase-oracle", [1, 2, 4], params, "rebase", CHECKER))

    two = _quiet_report(_study(tmp_path / "two", policy("small", 10**9) + policy("large", 10**10)))
    assert (tmp_path / "two" / "report" / "models_compared.png").stat().st_size > 0
    assert "models_compared.png" in two.files and "![models_compared.png]" in two.files["results.md"].read_text()
    one = _quiet_report(_study(tmp_path / "one", policy("small", 10**9)))
    assert "models_compared.png" not in one.files
    assert not (tmp_path / "one" / "report" / "models_compared.png").exists()


@pytest.mark.parametrize("records", [
    _records("small", "rebase", [2, 4], algorithm="rebase", verifier=CHECKER),  # only reference verifiers
    _records("small", "greedy", [1]) + _records("large", "sampling", [8], 10**10),  # one budget each
], ids=["reference-verifier-only", "one-budget"])
def test_report_on_a_degenerate_study_warns_nothing_and_writes_every_figure(tmp_path, records):
    res = _quiet_report(_study(tmp_path / "study", records))
    for name in ("accuracy_vs_flops.png", "pareto.png", "best_model_per_budget.png", "accuracy_by_level.png"):
        assert res.files[name].stat().st_size > 0, name
