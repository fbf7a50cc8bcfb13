"""Plain helpers the test modules share (fixtures are in conftest.py). No test module imports another.

* child processes: ``interruptible``, ``child_env``, ``wait_for``;
* the command line: a study on the built-in policy (``builtin_config``), ``one_line_error``;
* the scripted sweep: backends named in configs as ``support:...``, its problems, config and records;
* served models: ``ServerDouble`` (a served PRM's server), ``records`` of a study against a server;
* the PRM adapters the fixtures in conftest.py build (``KINDS``).
"""
from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
import weakref
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from experiments.config import DatasetConfig, FieldMap, MethodConfig, PolicyConfig, StudyConfig
from experiments.records import load_dir
from treesearch.protocols import ChainScores
from treesearch.step_format import StepFormat
from treesearch.testing import ScriptedPolicy, ScriptedPRM

ROOT = Path(__file__).resolve().parents[1]

#: The PRM adapters of reward_models on the checkpoints of conftest.py's ``checkpoints`` fixture.
KINDS = ("step_tag", "llemma", "llemma2", "classification", "value_head", "outcome", "self_score")


# ---- child processes ------------------------------------------------------------------------------
def interruptible() -> None:
    """``preexec_fn`` for a child process a test will Ctrl-C: a background job of a non-interactive shell
    (CI scripts, nohup) starts with SIGINT ignored, and a Python started so never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child ``python -m experiments``: the tests' directory (for the
    ``support:...`` backends its config names) and the repository on its path, plus ``extra``."""
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def wait_for(condition, limit: float = 120.0) -> None:
    """Poll until ``condition()`` (an event the child signals); the limit only guards against a hang."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the child process never got there"
        time.sleep(0.02)


# ---- the command line -----------------------------------------------------------------------------
BUILTIN = ROOT / "experiments" / "builtin" / "checkpoints"


def builtin_config(tmp_path: Path, **changes) -> Path:
    """A tiny valid study on the committed built-in policy, with ``changes`` applied to its dict."""
    data = {
        "policies": [{"name": "small", "path": str(BUILTIN / "policy-small"), "step_format": "newline"}],
        "methods": [{"name": "rebase", "algorithm": "rebase", "budgets": [2]}],
        "prm": {"type": "builtin_oracle"},
        "dataset": {"name": "builtin", "limit": 2, "grader": "exact"},
        "limits": {"max_depth": 8, "max_step_tokens": 32, "max_solution_tokens": 200},
        "output": str(tmp_path / "out"),
    }
    for key, value in changes.items():
        section, _, field_ = key.partition(".")
        if field_:
            target = data[section][0] if isinstance(data[section], list) else data[section]
            target[field_] = value
        else:
            data[section] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def one_line_error(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


# ---- the scripted sweep: backends named in configs as "support:..." ---------------------------------
_LIVE: list[weakref.ref] = []


def scripted_steps(question: str, steps: tuple[str, ...], k: int, seed: int) -> str:
    """Two steps, then an answer in {0, 1, 2}; every choice depends on the request seed."""
    if len(steps) >= 2:
        return f"The answer is {(seed >> 7) % 3}"
    return f"Step {len(steps) + 1} {seed % 97}"


class _GatedPolicy(ScriptedPolicy):
    """With TEST_SWEEP_GATE=DIR: once the run has written records (to TEST_SWEEP_RECORDS), its next policy
    call writes DIR/held and stops there while DIR/hold exists. A test interrupts the run while it is held:
    some records kept and some still to run, whatever the machine's speed (no race with the clock)."""

    def expand(self, requests):
        gate, records = os.environ["TEST_SWEEP_GATE"], os.environ["TEST_SWEEP_RECORDS"]
        hold = os.path.join(gate, "hold")
        if os.path.exists(hold) and os.path.exists(records) and os.path.getsize(records) > 0:
            open(os.path.join(gate, "held"), "w").close()
            while os.path.exists(hold):
                time.sleep(0.05)
        return super().expand(requests)


def scripted_policy(cfg: PolicyConfig) -> ScriptedPolicy:
    """A policy backend factory; fails if an earlier policy is still alive (one model at a time)."""
    assert all(ref() is None for ref in _LIVE), "the previous policy was not freed before loading the next"
    cls = _GatedPolicy if os.environ.get("TEST_SWEEP_GATE") else ScriptedPolicy
    policy = cls(scripted_steps, step_format=StepFormat.preset("newline"), num_parameters=int(cfg.num_parameters))
    _LIVE.append(weakref.ref(policy))
    return policy


@dataclass
class CachingPRM(ScriptedPRM):
    """Like a model PRM with a score cache: a chain scored before costs no tokens. So a record's PRM
    token count depends on what ran before it in the process, unless the sweep resets the cache."""

    cache: set = field(default_factory=set)

    def score(self, chains):
        out = []
        for c, r in zip(chains, super().score(chains)):
            key = (c.question, tuple(c.steps))
            out.append(ChainScores(r.scores, processed_tokens=0 if key in self.cache else r.processed_tokens))
            self.cache.add(key)
        return out


def scripted_prm(**_: object) -> ScriptedPRM:
    return CachingPRM(lambda q, steps: (sum(map(ord, steps[-1])) % 10) / 10, num_parameters=100)


def write_problems(directory: Path) -> Path:
    """The 7 scripted problems every sweep test runs on."""
    data = directory / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "question": f"question {i}", "answer": str(i % 3),
                                        "level": 1 + i % 2}) + "\n" for i in range(7)))
    return data


def make_config(tmp_path: Path, data: Path, **kw) -> StudyConfig:
    backend = "support:scripted_policy"
    return StudyConfig(
        policies=[PolicyConfig("small", backend=backend, num_parameters=1000),
                  PolicyConfig("large", backend=backend, num_parameters=5000)],
        prm={"type": "support:scripted_prm"},
        dataset=DatasetConfig(name=str(data), fields=FieldMap(id="id", level="level"), grader="exact"),
        methods=[MethodConfig("greedy", "greedy"),
                 MethodConfig("sampling", "sampling", budgets=[1, 2, 4], subsample=True),
                 MethodConfig("rebase", "rebase", params={"temperature": 0.1}, budgets=[2, 4]),
                 MethodConfig("mcts", "mcts", params={"width": 2}, budgets=[3], budget_params={3: {"root_width": 2}})],
        seeds=[0, 1], problems_per_chunk=2, output=str(tmp_path / "out"), **kw)


N_RECORDS = 7 * 2 * 2 * (1 + 3 + 2 + 1)  # problems x policies x seeds x budgets of all methods


def comparable(directory: Path) -> list[str]:
    """Records without wall time (the only field that may differ between equal runs), sorted."""
    out = []
    for r in load_dir(directory):
        r = {k: v for k, v in r.to_json().items() if k != "wall_time"}
        out.append(json.dumps(r, sort_keys=True))
    return sorted(out)


# ---- a study against a served policy --------------------------------------------------------------
def records(directory: Path) -> list[dict]:
    """The records, less what depends on the server's state rather than on the study: wall time, and the
    policy's processed tokens (the prompt tokens a server's prefix cache held depend on what it served
    before and on the order concurrent requests arrived; the stub's KV store behaves the same way)."""
    rows = [json.loads(ln) for f in sorted(directory.glob("records*.jsonl")) for ln in f.read_text().splitlines()]
    for r in rows:
        r.pop("wall_time")
        for k in ("policy_processed_tokens", "full_flops"):
            r["ledger"].pop(k)
    return sorted(rows, key=lambda r: (r["problem_id"], r["budget"]))


# ---- a served PRM's server: the test double (tests/test_prm_served.py) -------------------------------

class ServerDouble:
    """A local HTTP server in a thread answering what the served PRMs ask, from Python functions of token ids:
    ``token_embed`` / ``token_classify`` (ids -> [T, D]), ``logprobs`` (ids -> [T - 1] log P(next id)),
    ``verifier`` (question, steps -> scores). ``faults``: (status, body) answered to the next POSTs instead;
    ``edit(path, answer)``: changes an answer before it is sent; ``key``: the Bearer key it wants."""

    def __init__(self, name: str = "tiny", *, token_embed=None, token_classify=None, logprobs=None, verifier=None,
                 key: str | None = None):
        self.name, self.key = name, key
        self.compute = {"token_embed": token_embed, "token_classify": token_classify}
        self.logprobs, self.verifier = logprobs, verifier
        self.faults: list[tuple[int, dict]] = []
        self.edit = lambda path, answer: answer
        self.posts: list[tuple[str, dict]] = []
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.root = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.url = f"{self.root}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def answer(self, path: str, body: dict) -> dict:
        import numpy as np

        if path == "/pooling":
            rows = [np.asarray(self.compute[body["task"]](ids), dtype="<f4") for ids in body["input"]]
            enc = (lambda a: base64.b64encode(a.tobytes()).decode()) if body.get("encoding_format") == "base64" \
                else (lambda a: a.tolist())
            return {"object": "list", "model": body["model"],
                    "data": [{"index": i, "object": "pooling", "data": enc(a)} for i, a in enumerate(rows)]}
        if path == "/v1/completions":
            ids = body["prompt"]
            lps = self.logprobs(ids)
            prompt = [None] + [{str(t): {"logprob": float(lp), "rank": 1, "decoded_token": "?"}}
                               for t, lp in zip(ids[1:], lps)]
            return {"object": "text_completion", "model": body["model"],
                    "choices": [{"index": 0, "text": "x", "finish_reason": "length", "prompt_logprobs": prompt}]}
        if path == "/score":
            chains = body["chains"]
            return {"scores": [self.verifier(c["question"], c["steps"]) for c in chains],
                    "processed_tokens": [len(c["question"]) + sum(map(len, c["steps"])) for c in chains]}
        raise KeyError(path)

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorised(self) -> bool:
                if double.key is None or self.headers.get("Authorization") == f"Bearer {double.key}":
                    return True
                self.send(401, {"error": {"message": "wrong key"}})
                return False

            def do_GET(self):
                if not self.authorised():
                    return
                if self.path == "/v1/models":
                    self.send(200, {"object": "list", "data": [{"id": double.name, "object": "model"}]})
                else:
                    self.send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.posts.append((self.path, body))
                if not self.authorised():
                    return
                if double.faults:
                    status, answer = double.faults.pop(0)
                    # Echoes what it was sent, the key included: messages must not repeat it.
                    answer = json.loads(json.dumps(answer).replace("{auth}", self.headers.get("Authorization", "")))
                    return self.send(status, answer, {"retry-after-ms": "1"})
                try:
                    answer = double.answer(self.path, body)
                except KeyError:
                    return self.send(404, {"error": {"message": f"no route {self.path}"}})
                self.send(200, double.edit(self.path, answer))

        return Handler


def pooling_double(path: str, adapter: str, **kw) -> ServerDouble:
    """Hidden states (or, for qwen_prm, the classifier's logits) of the checkpoint, loaded apart from the PRM."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, trust_remote_code=adapter == "qwen_prm", dtype=torch.float32).eval()

    def run(ids):
        with torch.inference_mode():
            out = model(torch.tensor([ids]))
        return (out.logits if adapter == "qwen_prm" else out.last_hidden_state)[0].numpy()

    return ServerDouble(**{"token_classify" if adapter == "qwen_prm" else "token_embed": run}, **kw)


def policy_double(path: str, **kw) -> ServerDouble:
    """A generate server's prompt log-probabilities: log P(id t+1 | ids 0..t) of the causal LM."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def logprobs(ids):
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()

    return ServerDouble(logprobs=logprobs, **kw)
