"""The sweep: resumable, shardable, seeded per problem, with exact records (scripted policy and PRM)."""
from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from experiments.config import ConfigError, MethodConfig, PolicyConfig, StudyConfig, dump_config, load_config
from experiments.records import Derivation, Record, RecordsError, RecordsWarning, RecordWriter, load_dir, read_records
from support import N_RECORDS, child_env, comparable, make_config, scripted_policy, scripted_steps, wait_for, write_problems
from treesearch.step_format import StepFormat
from treesearch.testing import ScriptedPolicy, ScriptedPRM
from treesearch.voting import normalized_equal
from treesearch.work import complete, expand

ROOT = Path(__file__).resolve().parents[1]


# ---- scripted backends only these tests name, as "test_sweep:..." (make_config names support's) ------
def other_prm(**_: object) -> ScriptedPRM:
    return ScriptedPRM(lambda q, steps: 0.5, num_parameters=7)


@dataclass(frozen=True)
class FirstSteps:
    """A search algorithm outside the library, named in configs as "test_sweep:FirstSteps":
    ``k`` first steps, each completed greedily; no PRM while searching."""

    k: int = 1
    budget_param: ClassVar[str | None] = "k"
    needs_prm: ClassVar[bool] = False

    def __call__(self, tree):
        (first,) = yield from expand([tree.root], self.k)
        return (yield from complete(first, greedy=True))


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    return write_problems(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, problems) -> tuple[Path, StudyConfig]:
    """One uninterrupted single-process run every other run is compared with."""
    from experiments.sweep import run_study

    tmp = tmp_path_factory.mktemp("reference")
    cfg = make_config(tmp, problems)
    return run_study(cfg, progress=False), cfg


# ---- tests ---------------------------------------------------------------------------------
def test_records_are_complete_and_graded(reference):
    out, cfg = reference
    records = load_dir(out)
    assert len(records) == N_RECORDS == len({r.key for r in records})
    assert (out / "resolved.yaml").exists() and load_config(out / "resolved.yaml").seeds == [0, 1]
    for r in records:
        for v in r.votes.values():
            assert v.correct == (v.answer is not None and normalized_equal(v.answer, r.gold))
        assert set(r.votes) == {"majority", "best_of_n/last", "weighted/last"}
        assert r.ledger.paper_flops == 2 * r.ledger.policy_params * r.ledger.generated_tokens
        assert r.parameter_count == "configured"  # the configs set num_parameters
        assert all(c.steps is None for c in r.candidates)
        assert all(c.correct == (c.answer is not None and normalized_equal(c.answer, r.gold)) for c in r.candidates)
    # a rerun finds everything recorded and writes nothing
    size = (out / "records.jsonl").stat().st_size
    from experiments.sweep import run_study
    run_study(cfg, progress=False)
    assert (out / "records.jsonl").stat().st_size == size


def test_subsampled_budgets_are_the_first_samples(reference):
    out, _ = reference
    recs = {r.key: r for r in load_dir(out)}
    big = recs[("p3", "small", "sampling", 4, 1)]
    assert big.derived_from is None and sorted(c.sample for c in big.candidates) == [0, 1, 2, 3]
    for b in (1, 2):
        r = recs[("p3", "small", "sampling", b, 1)]
        kept = tuple(c for c in big.candidates if c.sample < b)
        tokens = sum(c.num_tokens for c in kept)
        share = tokens / big.ledger.generated_tokens
        assert r.candidates == kept and r.derived_from == Derivation(budget=4, share=share, exact_paper_flops=True)
        assert r.ledger.generated_tokens == tokens and r.ledger.paper_flops == 2 * 1000 * tokens
        assert r.ledger.policy_processed_tokens == round(share * big.ledger.policy_processed_tokens)
        assert r.params == {"n": b}


def test_interrupted_then_resumed_equals_uninterrupted(reference, problems, tmp_path, monkeypatch):
    from experiments import sweep

    cfg = make_config(tmp_path, problems)
    original = RecordWriter.write
    calls = []

    def dies_in_the_fifth_chunk(self, records):
        records = list(records)
        if len(calls) == 4:  # the process is killed halfway through writing its fifth chunk
            line = json.dumps(records[0].to_json())
            self._f.write(line + "\n" + json.dumps(records[1].to_json())[:25])
            self._f.flush()
            raise KeyboardInterrupt
        calls.append(len(records))
        return original(self, records)

    monkeypatch.setattr(RecordWriter, "write", dies_in_the_fifth_chunk)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_study(cfg, progress=False)
    monkeypatch.setattr(RecordWriter, "write", original)
    path = tmp_path / "out" / "records.jsonl"
    assert not path.read_text().endswith("\n")  # a torn last line
    with pytest.warns(RecordsWarning, match="torn last line"):
        partial = read_records(path)
    assert len(partial) == sum(calls) + 1 < N_RECORDS

    # resume with other chunks (problems_per_chunk is a runtime setting): seeds are per problem
    cfg.problems_per_chunk = 3
    with pytest.warns(RecordsWarning):
        sweep.run_study(cfg, progress=False)
    lines = path.read_text().splitlines()
    assert len(lines) == N_RECORDS and all(json.loads(x) for x in lines)
    assert comparable(tmp_path / "out") == comparable(reference[0])


def test_sigkill_then_resume_equals_uninterrupted(reference, problems, tmp_path):
    """A real `kill -9` of `python -m experiments run` mid-sweep, then a resume."""
    from experiments.sweep import run_study

    cfg = make_config(tmp_path, problems)
    config = tmp_path / "study.yaml"
    dump_config(cfg, config)
    path = tmp_path / "out" / "records.jsonl"
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "hold").touch()  # once some records are written, the run stops in a policy call: killed there
    env = child_env(TEST_SWEEP_GATE=str(gate), TEST_SWEEP_RECORDS=str(path))
    proc = subprocess.Popen([sys.executable, "-m", "experiments", "run", str(config), "--no-progress"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (gate / "held").exists() or proc.poll() is not None)
        assert proc.poll() is None, "the run ended before it was held"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    killed = len(read_records(path))  # killed between chunks: no torn line
    assert 0 < killed < N_RECORDS
    run_study(cfg, progress=False)
    assert len(path.read_text().splitlines()) == N_RECORDS
    assert comparable(tmp_path / "out") == comparable(reference[0])


def test_subset_first_then_the_rest_equals_uninterrupted(reference, problems, tmp_path):
    from experiments.sweep import run_study

    cfg = make_config(tmp_path, problems)
    run_study(cfg, limit=3, progress=False)
    assert len(load_dir(tmp_path / "out")) == 3 * N_RECORDS // 7
    run_study(cfg, progress=False)
    assert comparable(tmp_path / "out") == comparable(reference[0])


def test_missing_derived_records_come_from_the_stored_run(reference, problems, tmp_path, monkeypatch):
    """Adding a smaller sampling budget later needs no model: it is derived from the stored run."""
    from experiments import sweep

    cfg = make_config(tmp_path, problems)
    cfg.methods[1].budgets = [2, 4]
    sweep.run_study(cfg, progress=False)
    monkeypatch.setattr(sweep, "load_policy", lambda *a, **k: pytest.fail("no policy should be loaded"))
    cfg.methods[1].budgets = [1, 2, 4]
    sweep.run_study(cfg, progress=False)
    assert comparable(tmp_path / "out") == comparable(reference[0])


def test_changed_settings_refuse_to_mix_records(reference, problems, tmp_path):
    from experiments.sweep import run_study

    cfg = make_config(tmp_path, problems)
    run_study(cfg, limit=1, progress=False)
    cfg.policies[0].temperature = 0.5
    with pytest.raises(ConfigError, match=r"policies\[small\]\.temperature"):
        run_study(cfg, limit=1, progress=False)


def test_a_method_can_have_its_own_verifier_and_policies(reference, problems, tmp_path):
    """A method's prm replaces the study's for search and voting; models restricts where it runs."""
    from experiments.sweep import run_study

    out, cfg = reference
    alt = MethodConfig("rebase-alt", "rebase", params={"temperature": 0.1}, budgets=[2], models=["small"],
                       prm={"type": "test_sweep:other_prm"})
    cfg2 = make_config(tmp_path, problems)
    cfg2.methods = [cfg2.methods[2], alt]  # rebase with the study's PRM, and with its own
    recs = load_dir(run_study(cfg2, progress=False))
    mine = [r for r in recs if r.method == "rebase-alt"]
    assert {r.model for r in mine} == {"small"} and len(mine) == 7 * 2
    assert all(r.verifier == {"type": "test_sweep:other_prm"} for r in mine)
    assert all(s == 0.5 for r in mine for c in r.candidates for s in c.step_scores)
    assert all(r.ledger.prm_params == 7 for r in mine)
    study = [r for r in recs if r.method == "rebase"]
    assert {r.model for r in study} == {"small", "large"}
    assert all(r.verifier == {"type": "support:scripted_prm"} and r.ledger.prm_params == 100 for r in study)
    # The study's own records are those of the reference run (the extra method changes nothing).
    ref = {r.key: r.candidates for r in load_dir(out) if r.method == "rebase"}
    assert all(ref[r.key] == r.candidates for r in study)


def test_an_algorithm_class_named_by_import_path_runs_in_a_study(problems, tmp_path):
    """A new algorithm needs no library edit: its class, named in a YAML config, is validated, searched
    with and recorded like a built-in one (no PRM: it declares it needs none)."""
    from experiments.sweep import run_study

    cfg = make_config(tmp_path, problems)
    cfg.prm = None
    cfg.methods = [MethodConfig("mine", "test_sweep:FirstSteps", budgets=[1, 3])]
    dump_config(cfg, tmp_path / "study.yaml")
    recs = load_dir(run_study(load_config(tmp_path / "study.yaml"), progress=False))
    assert len(recs) == 7 * 2 * 2 * 2
    for r in recs:
        assert r.algorithm == "test_sweep:FirstSteps" and r.params == {"k": r.budget}
        assert sorted(c.sample for c in r.candidates) == list(range(r.budget))
        assert r.verifier is None and all(c.step_scores == () for c in r.candidates)


_OPENED: list[list[bool]] = []  # one [closed] flag per policy the factory below built


def closing_policy(cfg: PolicyConfig) -> ScriptedPolicy:
    """A backend whose policy holds an engine: the previous one must be closed before the next loads."""
    assert all(closed for closed, in _OPENED), "the previous policy's engine was not closed"
    policy = ScriptedPolicy(scripted_steps, step_format=StepFormat.preset("newline"), num_parameters=int(cfg.num_parameters))
    flag = [False]
    policy.close = lambda: flag.__setitem__(0, True)
    _OPENED.append(flag)
    return policy


def test_an_engine_policy_is_closed_before_the_next_loads(problems, tmp_path):
    from experiments.sweep import run_study

    cfg = make_config(tmp_path, problems)
    for p in cfg.policies:
        p.backend = "test_sweep:closing_policy"
    cfg.methods = cfg.methods[:2]
    _OPENED.clear()
    run_study(cfg, progress=False)
    assert [closed for closed, in _OPENED] == [True, True]


def test_method_models_must_name_policies(problems, tmp_path):
    cfg = make_config(tmp_path, problems)
    cfg.methods.append(MethodConfig("x", "sampling", budgets=[2], models=["huge"]))
    from experiments.config import validate
    with pytest.raises(ConfigError, match=r"methods\[4\].models: no policy named 'huge'"):
        validate(cfg)


def test_problem_seed_is_stable():
    from treesearch.seeds import problem_seed

    assert problem_seed(0, "p1") == problem_seed(0, "p1") != problem_seed(1, "p1")
    assert problem_seed(0, "p1") == 5595208845573517269  # blake2b: the same on every machine and Python run


def test_torn_and_damaged_files(tmp_path):
    path = tmp_path / "records.jsonl"
    rec = {"problem_id": "a", "model": "m", "method": "s", "budget": 1, "seed": 0}
    path.write_text(json.dumps(rec) + "\n" + '{"problem_id": "b", "mo')
    with pytest.warns(RecordsWarning):
        assert read_records(path) == [Record("a", "m", "s", 1, 0)]
    with pytest.warns(RecordsWarning, match="cutting off"):
        with RecordWriter(path) as w:
            w.write([Record("c", "m", "s", 1, 0)])
    assert [r.problem_id for r in read_records(path)] == ["a", "c"]
    path.write_text(json.dumps(rec) + "\n{oops\n" + json.dumps(rec) + "\n")
    with pytest.raises(RecordsError, match=r"records\.jsonl:2: damaged record"):
        read_records(path)


def test_records_read_back_to_the_bytes_they_were_written_as(reference):
    out, _ = reference
    text = (out / "records.jsonl").read_text(encoding="utf-8")
    assert "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in read_records(out / "records.jsonl")) == text


def test_old_records_read_and_bad_fields_are_named(tmp_path):
    """Records without the fields later versions added (the report's hand-written fixture) read with
    defaults; a field no version wrote is damage, named with its file and line."""
    old = read_records(ROOT / "tests" / "data" / "report_records.jsonl")
    assert old and all(r.candidates == () and r.parameter_count == "non_embedding" and r.problem_seed is None
                       for r in old)
    assert [Record.from_json(r.to_json()) for r in old] == old
    assert old[0].ledger.paper_flops == 2 * 6740000000 * 280 and old[0].verdict("majority") is True
    path = tmp_path / "records.jsonl"
    good = {"problem_id": "a", "model": "m", "method": "s", "budget": 1, "seed": 0}
    for bad, field_ in (({**good, "vots": {}}, "vots"), ({**good, "candidates": [{"answer": "1", "scor": []}]}, "scor"),
                        ({**good, "ledger": {"tokens": 1}}, "tokens"), ({**good, "budget": "1"}, "budget")):
        path.write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
        with pytest.raises(RecordsError, match=rf"records\.jsonl:1: damaged record \(.*'{field_}'"):
            read_records(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_same_records(reference, problems, tmp_path):
    """Two ranks launched as accelerate/torchrun would (RANK, WORLD_SIZE, ... env vars), through
    `python -m experiments run`: PartialState, gloo on CPU, records.rank<k>.jsonl, merged by the reader."""
    cfg = make_config(tmp_path, problems)
    config = tmp_path / "study.yaml"
    dump_config(cfg, config)
    port = str(_free_port())
    env = child_env(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                    OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    procs = [subprocess.Popen([sys.executable, "-m", "experiments", "run", str(config), "--no-progress"],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    files = sorted(x.name for x in (tmp_path / "out").glob("records*.jsonl"))
    assert files == ["records.rank0.jsonl", "records.rank1.jsonl"]
    rank0 = {r.problem_id for r in read_records(tmp_path / "out" / "records.rank0.jsonl")}
    assert rank0 == {"p0", "p2", "p4", "p6"}  # problem i goes to rank i % 2
    assert comparable(tmp_path / "out") == comparable(reference[0])


# ---- policies side by side in worker processes ------------------------------------------------------------
def _lines(path: Path) -> list[dict]:
    """A records file's records in file order, less wall time."""
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"} for line in path.read_text().splitlines()]


def exploding_policy(cfg: PolicyConfig) -> ScriptedPolicy:
    """The large policy (5,000 parameters) fails on its first expansion; the small one works (named as
    "test_sweep:exploding_policy")."""
    if int(cfg.num_parameters) < 5000:
        return scripted_policy(cfg)

    def boom(question, steps, k, seed):
        raise RuntimeError("the large policy exploded")
    return ScriptedPolicy(boom, step_format=StepFormat.preset("newline"), num_parameters=int(cfg.num_parameters))


def test_workers_write_the_one_process_records_in_its_order(reference, problems, tmp_path):
    """Two policies in two worker processes: records.jsonl holds the one-process run's records line for line
    (the workers' files are appended in policy order, then removed)."""
    from experiments.sweep import run_study

    out = run_study(make_config(tmp_path, problems), progress=False, workers=2)
    assert _lines(out / "records.jsonl") == _lines(reference[0] / "records.jsonl")
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["records.jsonl"]


def test_a_side_by_side_run_cut_short_is_taken_up_by_the_next_run(reference, problems, tmp_path):
    """What a stopped side-by-side run leaves (a worker's file ending in a torn line) is read as done, merged
    and completed: the records equal the uninterrupted run's."""
    from experiments.sweep import run_study
    from experiments.workers import part_file

    cfg = make_config(tmp_path, problems)
    out = Path(cfg.output)
    out.mkdir(parents=True)
    done = (reference[0] / "records.jsonl").read_text().splitlines(keepends=True)
    small = [line for line in done if json.loads(line)["model"] == "small"]
    part_file(out, "records", 0).write_text("".join(small[:20]) + small[20][:40])
    with pytest.warns(RecordsWarning, match="torn last line"):
        run_study(cfg, progress=False)
    assert comparable(out) == comparable(reference[0])
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["records.jsonl"]


def test_a_workers_error_is_raised_after_the_other_workers_records_are_kept(problems, tmp_path):
    from experiments.sweep import run_study

    cfg = make_config(tmp_path, problems)
    cfg.policies = [dataclasses.replace(p, backend="test_sweep:exploding_policy") for p in cfg.policies]
    with pytest.raises(RuntimeError, match="large policy exploded"):
        run_study(cfg, progress=False, workers=2)
    out = Path(cfg.output)
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["records.jsonl"]
    assert {r.model for r in read_records(out / "records.jsonl")} == {"small"}
    assert len(read_records(out / "records.jsonl")) == N_RECORDS // 2


def test_workers_must_be_positive_and_not_within_a_shard(problems, tmp_path):
    from experiments.plan import Shard
    from experiments.sweep import run_study

    cfg = make_config(tmp_path, problems)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_study(cfg, progress=False, workers=0)
    with pytest.raises(ValueError, match="shard 1 of 2"):
        run_study(cfg, progress=False, workers=2, shard=Shard(1, 2, launched=False))


def test_the_bar_shows_every_workers_setting_and_sums_their_progress():
    import queue

    from experiments.workers import _relay, _RelayedProgress

    class Bar:
        label, units, tokens, records, shown = "", 0, 0, 0, 0

        def start(self, label):
            self.label, self.shown = label, self.shown + 1

        def advance(self, units, tokens):
            self.units, self.tokens = self.units + units, self.tokens + tokens

        def wrote(self, n):
            self.records += n

    messages, bar, labels = queue.Queue(), Bar(), {}
    small, large = _RelayedProgress(messages, 0), _RelayedProgress(messages, 1)
    large.start("large greedy")
    small.start("small greedy")
    small.advance(1, 30)
    large.advance(4, 100)
    small.wrote(2)
    _relay(messages, bar, labels, wait=0.0)
    assert bar.label == "small greedy · large greedy" and bar.shown == 2
    assert (bar.units, bar.tokens, bar.records) == (5, 130, 2)


def test_worker_files_left_after_every_record_was_written_are_merged(reference, problems, tmp_path):
    """A side-by-side run killed between its last record and its merge: the next run has nothing to run, and
    still leaves one records.jsonl, the one-process run's line for line."""
    from experiments.sweep import run_study
    from experiments.workers import part_file

    cfg = make_config(tmp_path, problems)
    out = Path(cfg.output)
    out.mkdir(parents=True)
    done = (reference[0] / "records.jsonl").read_text().splitlines(keepends=True)
    for i, model in enumerate(("small", "large")):
        part_file(out, "records", i).write_text("".join(line for line in done if json.loads(line)["model"] == model))
    run_study(cfg, progress=False)
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["records.jsonl"]
    assert _lines(out / "records.jsonl") == _lines(reference[0] / "records.jsonl")
