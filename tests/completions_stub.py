"""A test double of an OpenAI-compatible completions server, for the ``openai`` backend's fault paths.

It answers ``GET /v1/models`` and ``POST /v1/completions`` in vLLM's shape (token-id prompts,
``n``, ``seed``, ``stop`` kept in the text, ``return_token_ids``, ``stop_reason``, usage with
cached prompt tokens), sampling with the in-process transformers backend, so a study run against
it is deterministic. It is not a stand-in for vLLM: the conformance suite runs against a real
``vllm serve`` (tests/test_policy_conformance.py, marked vllm). What it adds is faults on demand:
scripted answers (a status code, a malformed sample, a cut step, a truncated body), a death after
k answers, a restart on the same port, and requests held until k are in flight at once.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from treesearch.protocols import ExpandRequest


class CompletionsStub:
    def __init__(self, policy: Any, model: str = "stub", api_key: str | None = None, delay: float = 0.0):
        self.policy, self.model, self.api_key, self.delay = policy, model, api_key, delay
        self.faults: list[str] = []  # consumed one per completion request: "503", "429", "malformed", "cut",
        # "truncated", "no_logprobs"
        self.die_after: int | None = None  # answer this many completions, then stop listening (a crash)
        self.hold_after: int | None = None  # answer this many, then keep the next waiting until release is set
        self.gather = 0  # the first completions wait until this many are in flight at once (60 s at most)
        self.held, self.release = threading.Event(), threading.Event()
        self.answered = 0
        self.prompts: list[tuple[int, ...]] = []  # every completion's prompt, in arrival order
        self.in_flight = self.peak = 0
        self.port = 0
        self._lock = threading.Lock()
        self._gathered = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> CompletionsStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not stub._authorized(self):
                    return
                if self.path != "/v1/models":
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                self._json(200, {"object": "list", "data": [{"id": stub.model, "object": "model", "created": 0,
                                                             "owned_by": "test"}]})

            def do_POST(self) -> None:
                if not stub._authorized(self):
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if stub.hold_after is not None and stub.answered >= stub.hold_after:
                    stub.held.set()  # a test waits for this, then acts on a client that is mid-request
                    stub.release.wait()
                    self.close_connection = True  # never answered: no model work left running at teardown
                    return
                with stub._lock:
                    if stub.die_after is not None and stub.answered >= stub.die_after:
                        threading.Thread(target=stub.stop, daemon=True).start()
                        self.close_connection = True
                        return
                    fault = stub.faults.pop(0) if stub.faults else None
                    stub.in_flight += 1
                    stub.peak = max(stub.peak, stub.in_flight)
                    self._counted = True
                    stub._gathered.notify_all()  # concurrency is seen as an event, not through a delay
                    stub._gathered.wait_for(lambda: stub.peak >= stub.gather, timeout=60)  # the limit: a hang guard
                try:
                    if fault in ("503", "429"):
                        return self._json(int(fault), {"error": {"message": "try again"}})
                    time.sleep(stub.delay)
                    answer = stub._complete(body, fault)
                    if fault == "truncated":
                        data = json.dumps(answer).encode()
                        self._leave()
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data[: len(data) // 2])
                        self.close_connection = True
                        return
                    self._json(200, answer)
                finally:
                    self._leave()

            def _leave(self) -> None:
                """Out of flight before the answer goes out: a client that sends its next request when it gets
                this answer never finds this one still counted (so ``peak`` never exceeds its concurrency)."""
                if getattr(self, "_counted", False):
                    self._counted = False
                    with stub._lock:
                        stub.in_flight -= 1

            def _json(self, status: int, payload: dict) -> None:
                self._leave()
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def restart(self) -> None:
        """Listen again on the same port, answering normally."""
        self.die_after, self.faults = None, []
        self.start()

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        if self.api_key is None or handler.headers.get("Authorization") == f"Bearer {self.api_key}":
            return True
        handler.send_response(401)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return False

    def _complete(self, body: dict, fault: str | None) -> dict:
        prompt = tuple(body["prompt"])
        greedy = body.get("temperature") == 0
        req = ExpandRequest(prompt, int(body.get("n", 1)), seed=int(body.get("seed") or 0),
                            max_new_tokens=int(body.get("max_tokens", 16)), greedy=greedy,
                            logprobs=int(body.get("logprobs") or 0))
        with self._lock:
            self.prompts.append(prompt)
            [out] = self.policy.expand([req])
            self.answered += 1
        choices = []
        for k, s in enumerate(out.samples):
            ids = list(s.token_ids)
            stop = body["stop"][0] if s.finish_reason == "delimiter" else None
            choice = {"index": k, "text": s.text, "token_ids": ids, "logprobs": _logprobs(s),
                      "finish_reason": "length" if s.finish_reason == "step_cap" else "stop", "stop_reason": stop}
            if fault == "malformed":
                del choice["token_ids"], choice["text"]
            if fault == "cut":
                choice.update(finish_reason="length", token_ids=ids[:1])
            if fault == "no_logprobs":
                choice["logprobs"] = None
            choices.append(choice)
        decoded = sum(len(s.token_ids) - 1 for s in out.samples)
        return {"id": "cmpl-stub", "object": "text_completion", "created": 0, "model": self.model,
                "choices": choices,
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": sum(len(c["token_ids"]) for c in choices
                                                                                  if "token_ids" in c),
                          "total_tokens": 0,
                          "prompt_tokens_details": {"cached_tokens": len(prompt) - (out.processed_tokens - decoded)}}}


def _logprobs(s: Any) -> dict | None:
    """vLLM's shape with ``return_tokens_as_token_ids``: per token the top k and, first, the sampled token,
    here one outside the top k at OpenAI's floor for -inf (the client must keep only the k largest)."""
    if s.top_logprobs is None:
        return None
    return {"top_logprobs": [{"token_id:-1": -9999.0, **{f"token_id:{j}": lp for j, lp in enumerate(top)}}
                             for top in s.top_logprobs]}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a cancelled request, Ctrl-C) is not the stub's error to print."""
