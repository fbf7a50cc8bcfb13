"""The command line as a user meets it: errors before work, the run lock, Ctrl-C, what a rerun says."""
from __future__ import annotations

import json
import shutil
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.config import dump_config
from experiments.records import load_dir
from experiments.run_lock import DirectoryInUse, RunLock
from support import (BUILTIN, N_RECORDS, builtin_config, child_env, comparable, interruptible, make_config,
                     one_line_error, wait_for, write_problems)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    return write_problems(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("changes, message", [
    ({"policies.path": "/no/such/policy"}, "policies[0].path: no such directory '/no/such/policy'"),
    ({"policies.path": str(ROOT / "docs")}, "policies[0].path: "),  # a directory without a model
    ({"prm": {"type": "no_such_prm"}}, "prm.type: unknown PRM type 'no_such_prm'"),
    ({"prm": {"type": "nosuchmodule:make"}}, "prm.type: cannot import 'nosuchmodule'"),
    ({"prm": {"type": "callable", "fn": "treesearch.builtin.task:no_such_fn"}}, "prm.fn: "),
    ({"prm": {"type": "likelihood", "path": "/no/prm"}}, "prm.path: no such file or directory '/no/prm'"),
    ({"prm": {"type": "likelihood", "path": str(BUILTIN / "prm"), "max_batch_token": 5}},
     "prm.max_batch_token: unknown option of LikelihoodPRM (did you mean 'max_batch_tokens'?)"),
    ({"prm": {"type": "likelihood", "path": str(BUILTIN / "prm"), "max_batch_tokens": "many"}},
     "prm.max_batch_tokens: expected "),
    ({"policies.backend": "nosuchpkg.mod:factory"}, "policies[0].backend: cannot import 'nosuchpkg.mod'"),
    ({"dataset": {"name": "nosuchset"}}, "dataset.name: 'nosuchset' is neither a registered dataset (builtin, gsm8k, "
                                         "math500), an import path 'pkg.mod:loader' nor a file"),
    ({"dataset": {"name": "nosuchpkg.data:load"}}, "dataset.name: cannot import 'nosuchpkg.data'"),
])
@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_fail_before_any_work_with_one_line(tmp_path, capsys, changes, message, command):
    config = builtin_config(tmp_path, **changes)
    assert main([command, str(config)]) == 2
    line = one_line_error(capsys)
    assert message in line and f"treesearch {command}: error:" in line
    assert not (tmp_path / "out" / "records.jsonl").exists()


def test_debug_shows_the_traceback(tmp_path):
    config = builtin_config(tmp_path, **{"policies.path": "/no/such/policy"})
    with pytest.raises(Exception, match="no such directory"):
        main(["run", str(config), "--debug"])


def test_check_passes_a_good_config(tmp_path, capsys):
    assert main(["check", str(builtin_config(tmp_path))]) == 0
    assert "2 problems, 1 policies" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["report", "/no/such/results"], "/no/such/results: no such directory"),
    (["solve", "--policy", str(BUILTIN / "policy-small"), "--method", "rebase", "q"], "give --prm TYPE"),
    (["solve", "--policy", "/no/such/policy", "--method", "greedy", "q"], "--policy.path: no such directory"),
    (["solve", "--policy", str(BUILTIN / "policy-small"), "--prm", "nope", "q"], "--prm.type: unknown PRM type"),
])
def test_other_commands_fail_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    assert message in one_line_error(capsys)


# ---- the lock -----------------------------------------------------------------------------------
def test_a_second_run_into_the_same_directory_is_refused(tmp_path, capsys):
    config = builtin_config(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as holder:
        try:  # the holder lives until it is killed
            (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "started": "now"}))
            assert main(["run", str(config), "--no-progress"]) == 2
            assert f"is in use by process {holder.pid}" in one_line_error(capsys)
        finally:
            holder.kill()
    # Its process is gone now: the lock is stale and the next run takes it over, then releases it.
    assert main(["run", str(config), "--no-progress"]) == 0
    assert len(load_dir(out)) == 2 and not (out / ".lock").exists()


def test_run_lock_in_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(DirectoryInUse, match=f"process {os.getpid()}"):
            with RunLock(tmp_path):
                pass
        with RunLock(tmp_path, rank=1, world=2):  # another shard's lock is its own
            pass
    with RunLock(tmp_path):  # released
        pass


# ---- Ctrl-C and resume --------------------------------------------------------------------------
def test_ctrl_c_stops_promptly_and_a_rerun_completes_exactly(tmp_path, problems):
    from experiments.sweep import run_study

    reference = run_study(make_config(tmp_path / "ref", problems), progress=False)
    cfg = make_config(tmp_path, problems)
    config = tmp_path / "study.yaml"
    dump_config(cfg, config)
    path = tmp_path / "out" / "records.jsonl"
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "hold").touch()  # once some records are written, the run stops in a policy call: interrupted there
    env = child_env(TEST_SWEEP_GATE=str(gate), TEST_SWEEP_RECORDS=str(path))
    proc = subprocess.Popen([sys.executable, "-m", "experiments", "run", str(config), "--no-progress"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    try:
        wait_for(lambda: (gate / "held").exists() or proc.poll() is not None)
        assert proc.poll() is None, "the run ended before it was held"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        (gate / "hold").unlink(missing_ok=True)
        proc.kill()
    assert proc.returncode == 130
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    kept = len(load_dir(tmp_path / "out"))
    assert 0 < kept < N_RECORDS
    assert lines[-1] == (f"treesearch run: interrupted; {kept:,} records kept in {cfg.output}; "
                         f"`treesearch run {config} --no-progress` resumes")
    assert "Traceback" not in err
    assert not (tmp_path / "out" / ".lock").exists()
    run_study(cfg, progress=False)
    assert comparable(tmp_path / "out") == comparable(reference)


def test_a_rerun_says_what_it_found(tmp_path, capsys, problems):
    from experiments.sweep import run_study

    cfg = make_config(tmp_path, problems)
    run_study(cfg, progress=False, limit=3)
    capsys.readouterr()
    run_study(cfg, progress=False)
    err = capsys.readouterr().err
    done = 3 * N_RECORDS // 7
    assert f"{done:,} of {N_RECORDS:,} records present; running {N_RECORDS - done:,}" in err
    run_study(cfg, progress=False)
    assert f"all {N_RECORDS:,} records present; nothing to run" in capsys.readouterr().err


def test_report_on_a_live_run_says_it_is_partial(tmp_path, capsys):
    from experiments.run_lock import RunLock

    shutil.copy(Path(__file__).parent / "data" / "report_records.jsonl", tmp_path / "records.jsonl")
    with RunLock(tmp_path):  # this process holds the directory, as a running sweep does
        assert main(["report", str(tmp_path), "--no-plots"]) == 0
        assert "is still writing to" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    assert "still writing" not in capsys.readouterr().err
