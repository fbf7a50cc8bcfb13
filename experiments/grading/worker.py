"""The symbolic check, in a killable worker process.

Only expressions that need real algebra get here. sympy runs in a separate ``python`` process that
is killed when it exceeds its time limit, since a slow ``simplify`` cannot be interrupted from inside
the process; its address space is capped too. The child gets plain ASTs as JSON and builds sympy
objects with constructors only (never from a string).

Caching policy: a verdict the worker reached (proved equal, or finished without proving it) is
cached for the life of the process; a check that ran out of time, or a worker that died, is not
cached: that pair counts as not equal for this call only, and is tried afresh next time, so a
busy machine cannot turn a provable equality into a permanent "not equal".

This file is also run by path as the worker's main module, so it imports nothing from the package.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from typing import Any

Ast = tuple
CACHE_SIZE = 65536


class _Worker:
    """A persistent `python` child that builds sympy objects from ASTs and answers 1/0 per line.

    A plain subprocess (not multiprocessing) so it neither forks a threaded parent (torch) nor
    re-imports the caller's __main__. A child that runs out of time is killed and a replacement is
    spawned at once, so its start-up overlaps whatever the caller does next.
    """

    STARTUP_TIMEOUT = 60.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._owner = 0  # pid that started it; a forked child must not use the parent's pipe
        self._buf = b""
        self._lock = threading.Lock()

    def _spawn(self) -> None:
        boot = ("import sys\nif sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"
                "import importlib.util as u\n"
                f"s = u.spec_from_file_location('_treesearch_grading_worker', {os.path.abspath(__file__)!r})\n"
                "m = sys.modules[s.name] = u.module_from_spec(s); s.loader.exec_module(m); m._serve()\n")
        self._proc = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, bufsize=0)
        self._ready, self._owner, self._buf = False, os.getpid(), b""

    def _ready_proc(self) -> subprocess.Popen[bytes]:
        """The running child, spawning it and waiting for its 'ready' line if needed."""
        if self._proc is not None and self._owner != os.getpid():
            self._proc = None  # inherited through fork: the pipe belongs to the parent
        if self._proc is not None and self._proc.poll() is not None:
            self.stop()
        if self._proc is None:
            self._spawn()
        if not self._ready:
            if self._read_line(self.STARTUP_TIMEOUT) != b"ready":
                self.stop()
                raise RuntimeError("grading worker failed to start")
            self._ready = True
        assert self._proc is not None
        return self._proc

    def _read_line(self, timeout: float) -> bytes | None:
        """One line from the child within ``timeout`` seconds, else None."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.strip()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._owner == os.getpid():
            proc.kill()
            proc.wait()

    def check(self, payload: dict[str, Any], deadline: float) -> bool | None:
        """The child's verdict (True: proved equal) if it answers before ``deadline``
        (time.monotonic(), not counting its start-up); None when it ran out of time or failed."""
        with self._lock:
            started = time.monotonic()
            try:
                proc = self._ready_proc()
                left = deadline - started  # start-up time is not the answer's fault
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(payload).encode() + b"\n")
                answer = self._read_line(left) if left > 0 else None
            except (OSError, RuntimeError):
                answer = None
            if answer in (b"0", b"1"):
                return answer == b"1"
            self.stop()
            if self._owner == os.getpid():
                self._spawn()  # warm a replacement while the caller moves on
            return None


WORKER = _Worker()
atexit.register(WORKER.stop)


_VERDICTS: dict[str, bool] = {}


def symbolic_equal(a: Ast, b: Ast, mode: str, deadline: float) -> bool:
    """Whether sympy proves ``a`` and ``b`` equal ("diff": a - b = 0; "ratio": a / b a nonzero
    constant) before ``deadline``. Reached verdicts are cached; timeouts are not (module docstring)."""
    request = {"mode": mode, "a": a, "b": b}
    key = json.dumps(request)
    if key in _VERDICTS:
        return _VERDICTS[key]
    verdict = WORKER.check(request, deadline)
    if verdict is None:
        return False
    if len(_VERDICTS) >= CACHE_SIZE:
        _VERDICTS.clear()
    _VERDICTS[key] = verdict
    return verdict


def to_sympy(node: Any, sp: Any) -> Any:
    """Sympy object from an AST via constructors only (never from a string)."""
    kind = node[0]
    if kind == "num":
        return sp.Rational(int(node[1]), int(node[2]))
    if kind == "sym":
        if not re.fullmatch(r"[A-Za-z]+", node[1]):
            raise ValueError("bad symbol")
        return sp.Symbol(node[1])
    if kind == "const":
        return {"pi": sp.pi, "E": sp.E, "I": sp.I, "oo": sp.oo}[node[1]]
    if kind == "add":
        return sp.Add(*(to_sympy(t, sp) for t in node[1]))
    if kind == "mul":
        return sp.Mul(*(to_sympy(f, sp) for f in node[1]))
    if kind == "neg":
        return -to_sympy(node[1], sp)
    if kind == "inv":
        return sp.Pow(to_sympy(node[1], sp), -1)
    if kind == "pow":
        return sp.Pow(to_sympy(node[1], sp), to_sympy(node[2], sp))
    if kind == "fact":
        return sp.factorial(to_sympy(node[1], sp))
    if kind == "func":
        funcs = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
                 "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
                 "tanh": sp.tanh, "log": sp.log, "ln": sp.log, "exp": sp.exp}
        return funcs[node[1]](to_sympy(node[2], sp))
    raise ValueError(f"unknown node {kind!r}")


def worker_check(request: dict[str, Any]) -> bool:
    import sympy as sp

    a, b = to_sympy(request["a"], sp), to_sympy(request["b"], sp)
    if request["mode"] == "ratio":  # equations: lhs-rhs equal up to a nonzero constant
        if b == 0:
            return a == 0
        r = sp.simplify(a / b)
        return not r.free_symbols and r.is_finite is True and r.is_zero is False
    d = a - b
    if d == 0 or sp.simplify(d) == 0:
        return True
    return d.equals(0) is True


def _serve() -> None:
    """Worker main loop: one JSON request per line in, '1' or '0' per line out."""
    try:
        import resource
        limit = 2 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a runaway simplify dies instead of swapping
    except (ImportError, ValueError, OSError):
        pass
    import sympy  # noqa: F401  (import before 'ready' so the first timeout measures work, not import)

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            ok = worker_check(json.loads(line))
        except Exception:  # any failure to prove equality is "not equal"
            ok = False
        out.write("1\n" if ok else "0\n")
        out.flush()

