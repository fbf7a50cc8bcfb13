"""The plug-in contract from the command line, run on the README's own example: a module that
registers an algorithm, a policy backend, a PRM, a dataset and a grader, listed under ``plugins:``
and named in a config, checks and runs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from experiments.cli import main
from experiments.facts import MethodFacts, read_facts
from experiments.records import load_dir

ROOT = Path(__file__).resolve().parents[1]


def readme_block(first_line: str) -> str:
    """The README's fenced code block that starts with ``first_line``."""
    for body in re.findall(r"```\w*\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"README.md has no code block starting with {first_line!r}")


def study(tmp_path: Path, plugins: list[str] | None = None) -> Path:
    """The README's plug-in module and study config, written to ``tmp_path`` (results there too);
    ``plugins`` replaces the config's list."""
    (tmp_path / "my_plugins.py").write_text(readme_block("# my_plugins.py"))
    data = {**yaml.safe_load(readme_block("# study.yaml")), "output": str(tmp_path / "out")}
    if plugins is not None:
        data["plugins"] = plugins
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def test_every_kind_of_plug_in_checks_and_runs_from_the_cli(tmp_path, capsys):
    config = study(tmp_path)
    assert main(["check", str(config)]) == 0
    assert "4 problems, 1 policies: 2 searched settings" in capsys.readouterr().out
    assert main(["run", str(config), "--no-progress"]) == 0
    records = load_dir(tmp_path / "out")
    assert len(records) == 8 and {r.algorithm for r in records} == {"best_first_step"}
    assert all(r.votes["weighted/last"].correct for r in records)  # the parity PRM picks the even (right) answer
    # What the plug-ins declared is written beside the records, for the report.
    assert read_facts(tmp_path / "out") == {"best": MethodFacts("best_first_step", "n", True, False)}


def test_a_plug_in_named_on_the_command_line(tmp_path):
    """In a fresh process (this one may have imported the plug-in already): without --plugin the
    config's names are unknown; with it they check."""
    config = study(tmp_path, plugins=[])
    command = [sys.executable, "-m", "experiments", "check", str(config)]
    without = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert without.returncode == 2 and "unknown search algorithm 'best_first_step'" in without.stderr
    plugged = subprocess.run(command + ["--plugin", str(tmp_path / "my_plugins.py")], capture_output=True, text=True,
                             cwd=ROOT)
    assert plugged.returncode == 0, plugged.stderr


def test_a_missing_plug_in_is_one_line(tmp_path, capsys):
    assert main(["check", str(study(tmp_path, plugins=["no_such_plugin_module"]))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plugins: plugin 'no_such_plugin_module': cannot import it" in err[0]
    assert main(["check", str(study(tmp_path, plugins=["missing.py"]))]) == 2
    assert "plugins: plugin 'missing.py': no such file" in capsys.readouterr().err
