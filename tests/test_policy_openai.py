"""The ``openai`` backend's client side against an in-process test double (tests/completions_stub.py):
requests, concurrency, affinity, faults, credentials and ``treesearch check``. The conformance suite
runs it against a real ``vllm serve`` (tests/test_policy_conformance.py, marked vllm)."""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from completions_stub import CompletionsStub
from experiments.cli import main
from support import interruptible, records
from treesearch.algorithms import Rebase
from treesearch.backends import PolicySpec, load_policy
from treesearch.protocols import ExpandRequest
from treesearch.runner import Runner, SearchLimits
from treesearch.serving import ServerError
from treesearch.step_format import StepFormat
from treesearch.testing import ScriptedPRM

ROOT = Path(__file__).resolve().parents[1]
SMALL = str(ROOT / "experiments" / "builtin" / "checkpoints" / "policy-small")
QUESTIONS = ["Left to right: 3 + 4 * 2", "Left to right: 9 - 2 * 3", "Left to right: 7 * 2 + 1",
             "Left to right: 8 + 8 - 3"]
SECRET = "sk-test-SECRET-8f3a1c"
pytestmark = pytest.mark.usefixtures("one_thread")


def spec(**options) -> PolicySpec:
    return PolicySpec(path=SMALL, step_format=StepFormat.preset("newline"), options=options)


@pytest.fixture(scope="module")
def local():
    return load_policy("transformers", spec())


@pytest.fixture
def stubs(local):
    """Start stubs on demand; every one is stopped at the end."""
    started = []

    def make(**kwargs) -> CompletionsStub:
        started.append(CompletionsStub(load_policy("transformers", spec()), **kwargs).start())
        return started[-1]

    yield make
    for s in started:
        s.stop()


def remote(*urls: str, **options):
    return load_policy("openai", spec(**{"base_url": list(urls), "max_retries": 1, "timeout": 10, **options}))


def requests(policy, width=3, seed=0):
    return [ExpandRequest(policy.encode_prompt(q), width, seed=seed + i, max_new_tokens=32)
            for i, q in enumerate(QUESTIONS)]


def ids(outs):
    return [[s.token_ids for s in o.samples] for o in outs]


def test_a_request_is_the_node_the_width_the_cap_the_seed_and_the_ledger_is_the_servers(stubs, local):
    stub = stubs()
    policy = remote(stub.url)
    reqs = requests(local)
    body = policy.body(reqs[1])
    assert body["prompt"] == list(reqs[1].prefix_ids) and body["n"] == 3 and body["max_tokens"] == 32
    assert body["seed"] == reqs[1].seed and body["stop"] == ["\n"]
    assert body["extra_body"]["include_stop_str_in_output"] and body["extra_body"]["return_token_ids"]
    got, want = policy.expand(reqs), local.expand(reqs)
    assert ids(got) == ids(want)  # the stub samples as the local backend: nothing lost or shifted on the way
    assert [s.text for o in got for s in o.samples] == [s.text for o in want for s in o.samples]
    assert [o.processed_tokens for o in got] == [o.processed_tokens for o in want]
    assert policy.processed_source == "server_usage" and policy.num_parameters == local.num_parameters
    greedy = policy.body(ExpandRequest(reqs[0].prefix_ids, 4, seed=1, max_new_tokens=8, greedy=True))
    assert (greedy["n"], greedy["temperature"], greedy["seed"]) == (1, 0.0, None)
    policy.close()


def test_logprobs_are_asked_only_when_wanted_and_come_back_as_the_local_backends(stubs, local):
    stub = stubs()
    policy = remote(stub.url)
    plain = requests(local)
    reqs = [dataclasses.replace(r, logprobs=4) for r in plain]
    body = policy.body(reqs[0])
    assert body["logprobs"] == 4 and body["extra_body"]["return_tokens_as_token_ids"]
    assert "logprobs" not in policy.body(plain[0]) and "return_tokens_as_token_ids" not in policy.body(plain[0])[
        "extra_body"]  # not asked: the request is as it always was
    got, want = policy.expand(reqs), local.expand(reqs)
    assert ids(got) == ids(want)
    flat = [x for o in got for s in o.samples for t in s.top_logprobs for x in t]
    assert all(len(t) == 4 for o in got for s in o.samples for t in s.top_logprobs)  # the stub's -9999 entry cut
    # (the stub's policy kept other KV than the local one: the same values up to float rounding)
    assert flat == pytest.approx([x for o in want for s in o.samples for t in s.top_logprobs for x in t], abs=1e-4)
    stub.faults = ["no_logprobs"]
    with pytest.raises(ServerError, match=f"policy server {stub.url} answered without top-4 log-probabilities"):
        policy.expand(reqs[:1])
    policy.close()


def test_a_rounds_requests_go_out_together_bounded_by_max_concurrency(stubs, local):
    stub = stubs()
    stub.gather = 3  # the first requests are answered once 3 are in flight: only concurrent ones get there
    policy = remote(stub.url, max_concurrency=3, timeout=120)
    policy.expand(requests(local, width=1) * 2)
    assert stub.peak == 3
    policy.close()


def test_each_question_sticks_to_one_server_and_questions_spread_over_servers(stubs, local):
    a, b = stubs(), stubs()
    policy = remote(a.url, b.url)
    limits = SearchLimits(max_depth=4, max_step_tokens=32, max_solution_tokens=120)
    results = Runner(policy, ScriptedPRM(lambda q, s: len(s[-1]) % 7 / 7), limits, progress=False).run(
        QUESTIONS, Rebase(width=4), seed=3)
    prompts = [policy.encode_prompt(q) for q in QUESTIONS]
    home = {}
    for stub in (a, b):
        for p in stub.prompts:
            [q] = [i for i, pr in enumerate(prompts) if p[:len(pr)] == pr]
            assert home.setdefault(q, stub) is stub
    assert {id(s) for s in home.values()} == {id(a), id(b)} and len(home) == len(QUESTIONS)
    one = remote(a.url)  # one server: the same trees (the draws follow the node seeds, not the server)
    alone = Runner(one, ScriptedPRM(lambda q, s: len(s[-1]) % 7 / 7), limits, progress=False).run(
        QUESTIONS, Rebase(width=4), seed=3)
    assert [[n.token_ids for n in r.tree.nodes] for r in results] == [[n.token_ids for n in r.tree.nodes] for r in alone]
    policy.close()


def test_a_server_that_dies_has_its_questions_moved_with_a_warning(stubs, local, capsys):
    a, b = stubs(), stubs()
    a.die_after = 2
    policy = remote(a.url, b.url)
    got = policy.expand(requests(local)) + policy.expand(requests(local, seed=10))
    assert ids(got) == ids(local.expand(requests(local)) + local.expand(requests(local, seed=10)))
    [warning] = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert a.url in warning and b.url in warning and "move to" in warning
    b.stop()
    with pytest.raises(ServerError, match=f"policy server {b.url}"):
        policy.expand(requests(local, seed=20))


def test_429_and_5xx_answers_are_retried_counted_and_reported(stubs, local):
    stub = stubs()
    stub.faults = ["503", "429", "503"]
    policy = remote(stub.url, max_retries=3)
    assert ids(policy.expand(requests(local))) == ids(local.expand(requests(local)))
    report = policy.server_report()
    assert f"2 x 503 from {stub.url}" in report and f"1 x 429 from {stub.url}" in report


@pytest.mark.parametrize("fault, message", [
    ("malformed", "answered a sample with neither text nor token ids"),
    ("cut", "cut a step at 1 of 32 tokens"),
    ("truncated", "unreachable after 1 retries"),  # a body cut short, on every try
])
def test_a_malformed_or_truncated_answer_is_a_clear_error_never_a_short_step(stubs, local, fault, message):
    stub = stubs()
    stub.faults = [fault] * 2
    policy = remote(stub.url)
    with pytest.raises(ServerError, match=message) as e:
        policy.expand(requests(local)[:1])
    assert stub.url in str(e.value) and "\n" not in str(e.value)


def test_a_hung_server_times_out_as_a_dead_one(stubs, local):
    stub = stubs(delay=5)  # accepts, answers too late (as a SIGSTOPped server)
    policy = remote(stub.url, timeout=0.5, max_retries=0)
    with pytest.raises(ServerError, match=f"policy server {stub.url}: no answer within 0.5 s"):
        policy.expand(requests(local)[:1])


# ---- the harness: check, a run that loses its server, credentials -----------------------------

def study(tmp_path: Path, url: str, name: str = "out", **options) -> Path:
    data = {"policies": [{"name": "small", "path": SMALL, "backend": "openai", "step_format": "newline",
                          "options": {"base_url": url, "max_retries": 1, "timeout": 10, **options}}],
            "methods": [{"name": "rebase", "algorithm": "rebase", "budgets": [2, 4]}],
            "prm": {"type": "builtin_oracle"},
            "dataset": {"name": "builtin", "limit": 4, "grader": "exact"},
            "limits": {"max_depth": 8, "max_step_tokens": 32, "max_solution_tokens": 200},
            "problems_per_chunk": 1, "output": str(tmp_path / name)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


def test_a_run_whose_server_dies_keeps_its_records_and_resumes_to_an_uninterrupted_runs(stubs, tmp_path, capsys):
    stub = stubs()
    assert main(["run", str(study(tmp_path, stub.url, "whole")), "--no-progress"]) == 0
    whole = records(tmp_path / "whole")
    assert len(whole) == 8 and all(r["processed_source"] == "server_usage" for r in whole)
    capsys.readouterr()
    stub.answered, stub.die_after = 0, 12
    config = study(tmp_path, stub.url, "broken")
    assert main(["run", str(config), "--no-progress"]) == 1
    line = one_line(capsys)
    assert f"policy server {stub.url}" in line and "records kept" in line and "resumes" in line
    kept = records(tmp_path / "broken")
    assert 0 < len(kept) < 8
    stub.restart()
    assert main(["run", str(config), "--no-progress"]) == 0
    assert records(tmp_path / "broken") == whole


def test_ctrl_c_keeps_the_records_in_one_line(stubs, tmp_path):
    stub = stubs()
    stub.hold_after = 20  # some problems done and recorded, then the run waits on the server
    config = study(tmp_path, stub.url)
    data = yaml.safe_load(config.read_text())
    data["dataset"]["limit"] = 40
    config.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "experiments", "run", str(config), "--no-progress"],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=interruptible)
    try:  # interrupt it while it waits for an answer: an event, not a race with the clock
        assert stub.held.wait(timeout=120), "the run never reached the held request"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        stub.release.set()
        proc.kill()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 130 and len(lines) == 1, err
    assert "interrupted" in lines[0] and "records kept" in lines[0] and "resumes" in lines[0]


def test_check_names_a_server_that_is_down_in_one_line(tmp_path, capsys):
    assert main(["check", str(study(tmp_path, "http://127.0.0.1:9/v1"))]) == 2
    line = one_line(capsys)
    assert "policies[0].options.base_url: policy server http://127.0.0.1:9/v1 does not answer" in line


def test_check_wants_num_parameters_without_a_local_model_and_refuses_an_inline_key(stubs, tmp_path, capsys):
    stub = stubs()
    capsys.readouterr()
    config = study(tmp_path, stub.url, tokenizer=SMALL)
    data = yaml.safe_load(config.read_text())
    del data["policies"][0]["path"]
    config.write_text(yaml.safe_dump(data))
    assert main(["check", str(config)]) == 2
    assert "policies[0].num_parameters: required for the openai backend when no local model path" in one_line(capsys)
    data["policies"][0]["num_parameters"] = 32928
    config.write_text(yaml.safe_dump(data))
    assert main(["check", str(config)]) == 0
    capsys.readouterr()
    assert main(["check", str(study(tmp_path, stub.url, api_key=SECRET))]) == 2
    line = one_line(capsys)
    assert "policies[0].options.api_key: an API key is never written in a config" in line and SECRET not in line


def test_the_key_comes_from_the_environment_and_is_written_nowhere(stubs, tmp_path, capsys, monkeypatch):
    stub = stubs(api_key=SECRET)
    capsys.readouterr()
    monkeypatch.setenv("TREESEARCH_TEST_KEY", SECRET)
    config = study(tmp_path, stub.url, api_key_env="TREESEARCH_TEST_KEY")
    assert main(["run", str(config), "--no-progress"]) == 0
    assert main(["report", str(tmp_path / "out")]) == 0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) > 3 and not any(SECRET.encode() in p.read_bytes() for p in files)
    monkeypatch.setenv("TREESEARCH_TEST_KEY", SECRET + "-wrong")  # the server refuses it: the error hides it too
    assert main(["run", str(study(tmp_path, stub.url, "other", api_key_env="TREESEARCH_TEST_KEY")),
                 "--no-progress"]) == 2
    line = one_line(capsys)
    assert "answered 401" in line and SECRET not in line
    monkeypatch.delenv("TREESEARCH_TEST_KEY")
    assert main(["check", str(config)]) == 2
    assert "'TREESEARCH_TEST_KEY', which is not set" in one_line(capsys)


def test_certificates_are_verified_except_for_the_urls_named(monkeypatch):
    import openai

    from treesearch.serving import ServerOptions, ServerPool

    with pytest.raises(ValueError, match=r"tls_unverified names \['https://b/v1'\], which base_url does not list"):
        ServerOptions(base_url="https://a/v1", tls_unverified=["https://b/v1"])
    made = []
    monkeypatch.setattr(openai, "DefaultAsyncHttpxClient", lambda **kw: made.append(kw) or None)
    pool = ServerPool(ServerOptions(base_url=["https://a/v1/", "https://b/v1"], tls_unverified=["https://b/v1"]))
    assert pool.urls == ("https://a/v1", "https://b/v1")
    pool.client(0), pool.client(1)
    assert [kw["verify"] for kw in made] == [True, False]
