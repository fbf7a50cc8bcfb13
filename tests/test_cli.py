"""The treesearch command: help, run + report end to end, errors as one line, solve on a tiny model."""
import subprocess
import sys

import pytest
import yaml

from experiments.cli import main
from experiments.config import config_to_dict
from support import make_config
from treesearch.testing import tiny_llama


def prm_fn(question, steps):
    """A PRM for `solve`: later steps score higher."""
    return [0.1 * (i + 1) for i in range(len(steps))]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["report", "--help"], ["check", "--help"],
                                  ["solve", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage: treesearch" in capsys.readouterr().out


def test_python_m_experiments_help():
    out = subprocess.run([sys.executable, "-m", "experiments", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "run" in out.stdout and "report" in out.stdout and "solve" in out.stdout


def test_run_then_report(tmp_path, capsys, problems):
    cfg = make_config(tmp_path, problems)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert main(["check", str(path), "--limit", "2"]) == 0
    assert "2 problems, 2 policies: 20 searched settings (model, method, budget, seed), 56 records" in capsys.readouterr().out
    out = tmp_path / "cli_out"
    assert main(["run", str(path), "--out", str(out), "--limit", "2", "--no-progress", "--store-steps"]) == 0
    assert main(["report", str(out), "--reference", "llemma-math500"]) == 0
    printed = capsys.readouterr().out
    assert "weighted/last" in printed and "saturating fits" in printed
    for name in ("results.md", "table.csv", "accuracy_vs_flops.png", "pareto.png", "best_model_per_budget.png",
                 "compute_optimal.png", "compute_optimal.md"):
        assert (out / "report" / name).exists()
    records = (out / "records.jsonl").read_text().splitlines()
    assert '"steps": [' in records[0]


def test_errors_are_one_line_with_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"policies": [{"name": "p", "path": "x", "temprature": 1}],
                                   "methods": [{"name": "g", "algorithm": "greedy"}]}))
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: policies[0].temprature: unknown key (did you mean 'temperature'?)" in err
    assert main(["report", str(tmp_path)]) == 2
    assert "no records" in capsys.readouterr().err
    (tmp_path / "records.jsonl").write_text('{"problem_id": "a", "model": "m", "method": "g", "budget": 1, "seed": 0, '
                                            '"votes": {}, "ledger": {}}\n')
    assert main(["report", str(tmp_path), "--rule", "weighted"]) == 2


def test_solve_prints_tree_and_votes(tmp_path, capsys, tokenizer):
    model_dir = tmp_path / "tiny"
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    code = main(["solve", "--policy", str(model_dir), "--method", "rebase", "--budget", "3", "--param", "temperature=0.2",
                 "--prm", "callable", "--prm-opt", "fn=test_cli:prm_fn", "--device", "cpu", "--grader", "exact",
                 "--max-step-tokens", "6", "--max-solution-tokens", "18", "--html", str(tmp_path / "tree.html"),
                 "--gold", "2", "1+1="])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("Q: 1+1=") and "weighted/last" in out and "majority" in out and "paper FLOPs" in out
    page = (tmp_path / "tree.html").read_text(encoding="utf-8")
    assert f"wrote {tmp_path / 'tree.html'}" in out and '"gold":"2"' in page and '"question":"1+1="' in page
    assert "hierarchical/last" not in out  # no chains: the rule does not apply


def test_solve_prints_the_rules_a_search_brings(tmp_path, capsys, tokenizer):
    """A revisions search is voted by the hierarchical rule too, as its records are."""
    model_dir = tmp_path / "tiny"
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert main(["solve", "--policy", str(model_dir), "--method", "revisions", "--budget", "2", "--param", "chains=1",
                 "--device", "cpu", "--max-step-tokens", "6", "--max-solution-tokens", "18", "1+1="]) == 0
    out = capsys.readouterr().out
    assert "hierarchical/last:" in out and "hierarchical/min:" in out and "weighted/last:" in out


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    import json

    data = tmp_path_factory.mktemp("data") / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "question": f"question {i}", "answer": str(i % 3),
                                        "level": 1 + i % 2}) + "\n" for i in range(4)))
    return data


def test_first_run_bad_inputs_are_one_line_with_the_fix(tmp_path, capsys, problems):
    """An output path that is a file, an empty dataset, a plain JSONL read as GSM8K, an empty question."""
    def one_line(args) -> str:
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1, (out, err)  # the error, and no plan before it
        return err.strip()

    cfg = config_to_dict(make_config(tmp_path, problems))
    (tmp_path / "afile").write_text("")
    cfg["output"] = str(tmp_path / "afile")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert "output: " + str(tmp_path / "afile") + " is a file" in one_line(["run", str(path), "--no-progress"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg["output"] = str(tmp_path / "out")
    cfg["dataset"] = {"name": str(empty), "fields": {"question": "question", "answer": "answer"}}
    path.write_text(yaml.safe_dump(cfg))
    for command in ("check", "run"):
        assert "no problems selected" in one_line([command, str(path)])
    assert not (tmp_path / "out" / "resolved.yaml").exists()  # nothing left that would block a corrected config
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"question": "1+1?", "answer": "2"}\n')
    cfg["dataset"] = {"name": str(plain)}
    path.write_text(yaml.safe_dump(cfg))
    assert "fields: {question: question, answer: answer}" in one_line(["check", str(path)])
    assert "question: it is empty" in one_line(["solve", "--policy", str(tmp_path), "--method", "greedy", " "])
    # a study that names how its local model is made says so when the model is missing
    cfg["dataset"] = {"name": str(problems)}
    cfg["policies"][0]["path"] = str(tmp_path / "not-converted-yet")
    cfg["policies"][0]["backend"] = "transformers"
    cfg["setup"] = "python -m experiments.smollm convert DIR"
    path.write_text(yaml.safe_dump(cfg))
    line = one_line(["check", str(path)])
    assert "no such directory" in line and "this study's setup creates it: python -m experiments.smollm convert" in line
