"""``treesearch.vllm_server``: a local ``vllm serve`` answers, crashes without leaving processes or
shared memory behind, comes back on the same port, and shuts down cleanly."""
from __future__ import annotations

import importlib.util
import os

import pytest

from treesearch.vllm_server import VllmServer, group_processes

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                                   reason="vllm not installed")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A 2-layer random Llama with head size 64 (vLLM's CPU attention takes it), character tokenizer."""
    from reward_models.testing import build_tokenizer, save_causal_lm

    return save_causal_lm(str(tmp_path_factory.mktemp("vllm-server") / "tiny-llama"), "llama", build_tokenizer(),
                          hidden=128, heads=2, kv_heads=2)


def _answer(server: VllmServer) -> tuple[int, ...]:
    from openai import OpenAI

    client = OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)
    r = client.completions.create(model=server.served_model_name, prompt="12+3=", max_tokens=8, temperature=0,
                                  extra_body={"return_token_ids": True})
    [choice] = r.choices
    assert r.usage.completion_tokens == len(choice.model_extra["token_ids"]) > 0
    return tuple(choice.model_extra["token_ids"])


def test_a_killed_server_leaves_nothing_and_restarts_on_its_port(checkpoint, tmp_path):
    server = VllmServer(checkpoint, log_path=str(tmp_path / "server.log"))
    try:
        server.start()
        assert server.alive and server.url == f"http://127.0.0.1:{server.port}/v1"
        first = _answer(server)
        pgid, tmpdir = server.pid, server._tmpdir
        members = group_processes(pgid)
        assert len(members) >= 3  # API server, engine core, worker (and a resource tracker)
        from treesearch.vllm_server import _shm_files

        shm = _shm_files(members)

        server.kill()
        assert not server.alive
        assert group_processes(pgid) == []  # no orphaned engine or worker
        assert not [p for p in shm if os.path.exists(p)]  # no shared memory left behind
        assert not os.path.exists(tmpdir)  # its vllm_dist_* store files and sockets

        port = server.port
        server.restart()
        assert server.port == port and server.pid != pgid
        assert _answer(server) == first  # greedy, same weights

        pgid = server.pid
        server.stop()
        assert not server.alive and group_processes(pgid) == []
    finally:
        server.kill()


def test_a_server_that_cannot_start_raises_with_its_log(tmp_path):
    server = VllmServer(str(tmp_path / "no-such-model"), log_path=str(tmp_path / "server.log"), startup_timeout=300)
    with pytest.raises(RuntimeError, match="exited with status") as info:
        server.start()
    assert "no-such-model" in str(info.value)
    assert not server.alive and group_processes(server.pid) == []
