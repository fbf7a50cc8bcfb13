"""What every client of a served model shares (the ``openai`` policy backend, the served PRMs): the
server list, the API key, TLS, timeouts and retries, question-to-server affinity, failover, and
counts of the answers that were retried.

Why one place: a study spreads over the servers a user already runs (``vllm serve``, SGLang, TGI,
a router), and a policy and a PRM must treat a key, a certificate and a dead server alike.

* **Credentials.** A key is read from the environment variable the config names
  (``api_key_env``), never from the config; :meth:`ServerPool.redact` takes its text out of every
  message this module raises or prints.
* **Affinity.** All requests of one question go to one server (its ``home``), so siblings meet
  that server's prefix cache; questions are spread over the servers by load.
* **Faults.** The ``openai`` SDK retries connection errors, timeouts, 429 and 5xx with back-off
  (``max_retries``); every 429/5xx answer is counted per URL (:meth:`ServerPool.retry_report`).
  A server that still fails is marked down with a warning line and its questions move to the
  others; with none left, :class:`ServerError` names the URL and the last status.
"""
from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Hashable, Sequence, TypeVar

from .registry import RUNTIME

T = TypeVar("T")
INSTALL = "pip install openai"
INLINE_KEY = ("api_key: an API key is never written in a config; put it in an environment variable and name that "
              "variable: api_key_env: OPENAI_API_KEY")


class ServerError(RuntimeError):
    """A served model could not answer (down, or failing after every retry): one line naming the URL."""


@dataclass(frozen=True)
class ServerOptions:
    """How to reach the servers: the options every remote backend and served PRM takes."""

    # one server, or several (questions spread over them)
    base_url: str | list[str] = field(default="http://127.0.0.1:8000/v1", metadata=RUNTIME)
    # the environment variable holding the key; None: no key (a local server)
    api_key_env: str | None = field(default=None, metadata=RUNTIME)
    api_key: Any = None  # refused, whatever its type: keys are never written in a config (see api_key_env)
    # URLs of base_url whose TLS certificates are not checked
    tls_unverified: list[str] = field(default_factory=list, metadata=RUNTIME)
    timeout: float = field(default=300.0, metadata=RUNTIME)  # seconds for one request: a hung server must not hang us
    # the SDK's retries with back-off, for connection errors, timeouts, 429 and 5xx
    max_retries: int = field(default=4, metadata=RUNTIME)
    max_concurrency: int = field(default=64, metadata=RUNTIME)  # requests in flight at once, over all servers

    def __post_init__(self) -> None:
        if self.api_key is not None:
            raise ValueError(INLINE_KEY)
        if not self.urls:
            raise ValueError("base_url names no server")
        unknown = sorted(self.unverified - set(self.urls))
        if unknown:
            raise ValueError(f"tls_unverified names {unknown}, which base_url does not list")
        if self.timeout <= 0 or self.max_retries < 0 or self.max_concurrency < 1:
            raise ValueError(f"need timeout > 0, max_retries >= 0 and max_concurrency >= 1, got {self.timeout}, "
                             f"{self.max_retries}, {self.max_concurrency}")

    @property
    def urls(self) -> tuple[str, ...]:
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        return tuple(u.rstrip("/") for u in urls)

    @property
    def unverified(self) -> set[str]:
        return {u.rstrip("/") for u in self.tls_unverified}

    def key(self) -> str:
        """The API key from the environment ("EMPTY" when none is named: a server without ``--api-key``)."""
        if self.api_key_env is None:
            return "EMPTY"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"api_key_env names the environment variable {self.api_key_env!r}, which is not set")
        return key


class ServerPool:
    """The servers of one policy or PRM, their clients (one ``AsyncOpenAI`` each, built on first use in
    the running loop), each question's home server, and the failover between them.

    ``root``: clients address the server's root (``/pooling``, a verifier's own path), not ``/v1``.
    """

    def __init__(self, options: ServerOptions, what: str = "server", root: bool = False):
        self.options, self.what, self.root = options, what, root
        self.urls = options.urls
        self._key = options.key()
        self._clients: dict[int, Any] = {}
        self._home: dict[Hashable, int] = {}
        self._load = [0] * len(self.urls)
        self._down: dict[int, str] = {}
        self.retried: collections.Counter[tuple[str, int]] = collections.Counter()  # (url, status) -> answers
        self._limit: asyncio.Semaphore | None = None

    # ---- messages -----------------------------------------------------------------------
    def redact(self, text: str) -> str:
        """``text`` without the API key's characters."""
        return text.replace(self._key, "***") if self._key and self._key != "EMPTY" else text

    def warn(self, message: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.redact(message), file=sys.stderr)

    def retry_report(self) -> str | None:
        """One line on the 429/5xx answers that were retried, or None if there were none."""
        if not self.retried:
            return None
        parts = [f"{n} x {status} from {url}" for (url, status), n in sorted(self.retried.items())]
        return f"{self.what}: retried answers: {', '.join(parts)}"

    # ---- clients ------------------------------------------------------------------------
    def client(self, i: int) -> Any:
        if i not in self._clients:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            url = self.urls[i]

            async def count(response: Any) -> None:
                if response.status_code == 429 or response.status_code >= 500:
                    self.retried[(url, response.status_code)] += 1

            http = DefaultAsyncHttpxClient(verify=url not in self.options.unverified,
                                           event_hooks={"response": [count]})
            base = _root(url) if self.root else url
            self._clients[i] = AsyncOpenAI(base_url=base, api_key=self._key, timeout=self.options.timeout,
                                           max_retries=self.options.max_retries, http_client=http)
        return self._clients[i]

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()

    # ---- affinity and failover ----------------------------------------------------------
    def home(self, key: Hashable) -> int:
        """The server of ``key`` (a question): assigned on first sight to the live server with the fewest."""
        i = self._home.get(key)
        if i is None or i in self._down:
            live = [j for j in range(len(self.urls)) if j not in self._down]
            if not live:
                last = i if i is not None else next(iter(self._down))
                raise ServerError(self.redact(f"{self.what} {self.urls[last]}: {self._down[last]}"))
            i = min(live, key=lambda j: self._load[j])
            self._home[key] = i
            self._load[i] += 1
        return i

    async def call(self, key: Hashable, request: Callable[[Any], Awaitable[T]]) -> T:
        """``request(client)`` on ``key``'s server, bounded by ``max_concurrency``; a server that fails after
        the SDK's retries is marked down and the request moves to the next live one."""
        from openai import APIConnectionError, APIStatusError, APITimeoutError

        if self._limit is None:
            self._limit = asyncio.Semaphore(self.options.max_concurrency)
        async with self._limit:
            while True:
                i = self.home(key)
                try:
                    return await request(self.client(i))
                except APIStatusError as e:
                    if e.status_code != 429 and e.status_code < 500:  # the request is wrong, not the server
                        raise ServerError(self.redact(f"{self.what} {self.urls[i]} answered {e.status_code}: "
                                                      f"{first_line(e.message)}")) from None
                    self._mark_down(i, f"answered {e.status_code} after {self.options.max_retries} retries")
                except APITimeoutError:
                    self._mark_down(i, f"no answer within {self.options.timeout:g} s "
                                       f"({self.options.max_retries} retries)")
                except APIConnectionError as e:
                    cause = first_line(str(e.__cause__ or e))
                    self._mark_down(i, f"unreachable after {self.options.max_retries} retries ({cause})")

    def _mark_down(self, i: int, why: str) -> None:
        if i in self._down:
            return
        self._down[i] = why
        live = [u for j, u in enumerate(self.urls) if j not in self._down]
        if not live:
            raise ServerError(self.redact(f"{self.what} {self.urls[i]}: {why}"))
        self.warn(f"warning: {self.what} {self.urls[i]} {why}; its questions move to {', '.join(live)}")

    # ---- start-up check -----------------------------------------------------------------
    def served_model(self, model: str | None) -> str:
        """``model``, or the only one the first server lists; ServerError if a server is down or lacks it."""
        served = self.check_reachable()
        if model is None:
            if len(served[0]) != 1:
                raise ServerError(f"{self.what} {self.urls[0]} serves {served[0]}: name one in the option 'model'")
            model = served[0][0]
        for url, names in zip(self.urls, served):
            if model not in names:
                raise ServerError(f"{self.what} {url} serves {names}, not {model!r} (the option 'model')")
        return model

    def check_reachable(self, timeout: float = 10.0) -> list[list[str]]:
        """The model names each server lists (``GET /models``); ServerError naming the first URL that does not
        answer. Runs its own short-lived loop: for ``treesearch check`` and a backend's start."""
        return run_sync(self._models(timeout))

    async def _models(self, timeout: float) -> list[list[str]]:
        from openai import APIConnectionError, APIStatusError, APITimeoutError

        out = []
        try:
            for i, url in enumerate(self.urls):
                try:
                    client = self.client(i).with_options(timeout=timeout, max_retries=0)
                    page = await client.get("/v1/models" if self.root else "/models", cast_to=object)
                except (APIConnectionError, APITimeoutError) as e:
                    raise ServerError(self.redact(f"{self.what} {url} does not answer "
                                                  f"({first_line(str(e.__cause__ or e))})")) from None
                except APIStatusError as e:
                    raise ServerError(self.redact(f"{self.what} {url} answered {e.status_code} to GET /models: "
                                                  f"{first_line(e.message)}")) from None
                try:
                    out.append([str(m["id"]) for m in page["data"]])
                except (TypeError, KeyError):
                    raise ServerError(self.redact(f"{self.what} {url} answered GET /models with no model list: "
                                                  f"{str(page)[:80]}")) from None
        finally:
            await self.aclose()
        return out


def run_sync(coro: Awaitable[T]) -> T:
    """Run ``coro`` to its end from synchronous code (a fresh event loop, closed after)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class EventLoop:
    """One event loop kept for an object's life, so its HTTP clients keep their connections between calls."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_quiet_interrupts)

    def run(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` to its end. Ctrl-C cancels it (every request task is cancelled and awaited, so
        nothing half-sent is left for the garbage collector to warn about) and then raises
        KeyboardInterrupt, rather than landing inside whichever HTTP call happened to be running."""
        task = asyncio.ensure_future(coro, loop=self._loop)
        interrupted = []

        def interrupt() -> None:
            interrupted.append(True)
            task.cancel()

        try:
            self._loop.add_signal_handler(signal.SIGINT, interrupt)
            handled = True
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no signals here
            handled = False
        try:
            return self._loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            if handled:
                self._loop.remove_signal_handler(signal.SIGINT)

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def close(self, last: Awaitable[Any] | None = None) -> None:
        """Cancel what an interrupted ``run`` left pending (Ctrl-C), run ``last`` (closing clients), close.
        ``last`` is discarded unrun when the loop is closed already or the cancelling fails."""
        try:
            if self.closed:
                return
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            if last is not None:
                coro, last = last, None
                self._loop.run_until_complete(coro)
        finally:
            if asyncio.iscoroutine(last):
                last.close()
            self._loop.close()


def _quiet_interrupts(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Ctrl-C lands inside whichever request task is running; that task and the gather waiting on it
    end with the interrupt, which the CLI already reports in one line, so asyncio's "exception was
    never retrieved" for them is noise. Anything else goes to the default handler."""
    if isinstance(context.get("exception"), (KeyboardInterrupt, asyncio.CancelledError)):
        return
    loop.default_exception_handler(context)


def gather(coros: Sequence[Awaitable[T]]) -> Awaitable[list[T]]:
    """All at once; the first failure cancels the rest (nothing half-done is kept)."""

    async def run() -> list[T]:
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    return run()


def _root(url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000``: where vLLM serves ``/pooling`` and ``/tokenize``."""
    return url[:-3] if url.endswith("/v1") else url


def first_line(text: str) -> str:
    """The first line of an error's text (SDK errors carry the server's whole answer)."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "no detail"
