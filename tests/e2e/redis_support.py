"""
Helpers of the multi-process end-to-end tests over a real Redis
(``tests/e2e/test_redis_*.py``): a :class:`Cluster` owning one
``redis-server`` and any number of chanserv nodes of the e2e project
(``E2E_LAYER=redis``), started together and always cleaned up; HTTP that
never raises on a status; WebSocket reads bounded by a deadline; and
``wait_for``, which polls a condition until a deadline instead of sleeping.

The project's consumers (tests/e2e/project/e2eproj/nodes.py): ``/chat/`` is
the tutorial's Groups chat (text ``x`` -> ``[user] x`` to everyone),
``/echo/`` sends ``<text> <worker pid>`` back to the sender, ``/whoami/``
answers ``<query string> <worker pid>``, and the ``e2e.forward`` channel
sends ``{"text"}`` on to ``Group(message["group"])``; a WebSocket on
``/group/<name>/`` is a member of ``Group(<name>)`` while it is open (what it
says goes to the group) and ``/groupsize/<name>/`` answers the group's size.

For many sockets at once (hundreds, thousands), :class:`ManySockets` runs
asyncio clients on one thread; :func:`sync_layer` gives the test process
the Redis layer's synchronous face (group members, statistics, sends).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chanserv.layers.redis import RedisChannelLayer
from tests.e2e.harness import REPO, TwistdProcess, free_port
from tests.redisserver import RedisServer
from tests.support import default_signals, in_reactor, reactor_thread

PROJECT = Path(__file__).parent / "project"
SETTINGS = "e2eproj.settings"

#: Seconds any single network step may take before a test fails.
TIMEOUT = 10.0

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout: float = TIMEOUT, what: str = "", interval: float = 0.02
) -> T:
    """
    Call ``condition`` (every ``interval`` seconds) until it returns
    something true; return that.

    :raises AssertionError: still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                "timed out after %ss waiting for %s" % (timeout, what or condition)
            )
        time.sleep(interval)


class Reply(NamedTuple):
    status: int
    body: str
    seconds: float


def http_get(port: int, path: str, timeout: float = TIMEOUT) -> Reply:
    """GET ``path``; the status (HTTP errors included), body and duration."""
    started = time.monotonic()
    url = "http://127.0.0.1:%d%s" % (port, path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    return Reply(status, body.decode("utf-8", "replace"), time.monotonic() - started)


def ws_connect(port: int, path: str) -> ClientConnection:
    return connect("ws://127.0.0.1:%d%s" % (port, path), open_timeout=TIMEOUT, close_timeout=5)


def recv_until(ws: ClientConnection, last: str, timeout: float = TIMEOUT) -> list[str]:
    """Every text received up to and including ``last`` (a sentinel)."""
    deadline = time.monotonic() + timeout
    received: list[str] = []
    while not received or received[-1] != last:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no %r within %ss; got %r" % (last, timeout, received))
        try:
            message = ws.recv(remaining)
        except TimeoutError:
            continue
        assert isinstance(message, str), message
        received.append(message)
    return received


def node_env(redis_urls: Iterable[str], db: Path, **more: str) -> dict[str, str]:
    """The environment of an e2e-project process on the Redis layer."""
    return {"E2E_LAYER": "redis", "E2E_REDIS_URLS": ",".join(redis_urls), "E2E_DB": str(db), **more}


class Cluster:
    """
    One ``redis-server`` (started unless ``start_redis`` is false) and the
    chanserv nodes added with :meth:`node`.  :meth:`close` kills whatever
    still runs and removes the Redis data directory; use it in a ``finally``.
    """

    def __init__(self, workdir: Path, start_redis: bool = True) -> None:
        self.workdir = workdir
        self.redis = RedisServer()
        self.nodes: list[TwistdProcess] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        if start_redis:
            self.redis.start()

    def env(self, **more: str) -> dict[str, str]:
        return node_env([self.redis.url], self.workdir / "db.sqlite3", **more)

    def node(
        self, mode: str, *args: str, env: dict[str, str] | None = None, http: bool | None = None
    ) -> TwistdProcess:
        """
        A (not yet started) ``twistd -n chanserv --mode=<mode>`` process;
        interface and all nodes listen on a free port.
        """
        listens = mode != "worker" if http is None else http
        proc = TwistdProcess(
            PROJECT,
            SETTINGS,
            args=["--mode=" + mode, *args],
            port=free_port() if listens else None,
            env=self.env(**(env or {})),
        )
        self.nodes.append(proc)
        return proc

    def manage(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``python manage.py *args`` of the e2e project, logging to a file, running."""
        full_env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        full_env.pop("DJANGO_SETTINGS_MODULE", None)
        full_env.update(self.env(**(env or {})))
        log = open(self.workdir / ("manage-%d.log" % len(self.others)), "wb")
        try:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=PROJECT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=default_signals,  # stopped with SIGINT
            )
        finally:
            log.close()
        self.others.append(proc)
        self._logs[proc.pid] = Path(log.name)
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        """The output so far of a process started with :meth:`manage`."""
        return self._logs[proc.pid].read_text(errors="replace")

    def close(self) -> None:
        for proc in self.nodes:
            proc.__exit__()
        for other in self.others:
            if other.poll() is None:
                other.kill()
                other.wait(10)
        self.redis.cleanup()


def start_all(procs: Sequence[TwistdProcess]) -> None:
    """Start the processes side by side; each is ready (or raises) on return."""
    with ThreadPoolExecutor(len(procs)) as pool:
        for future in [pool.submit(p.start) for p in procs]:
            future.result()


def stop_cleanly(proc: TwistdProcess) -> str:
    """
    SIGTERM; the process must exit 0 (an orderly stop after SIGTERM is a
    normal exit, see chanserv.service) without a traceback.  Its log.
    """
    code = proc.stop()
    out = proc.output()
    assert code == 0, out
    assert "chanserv stopped" in out, out
    assert "Traceback" not in out, out
    return out


def interrupt(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    """SIGINT (Control-C) a management command; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    return proc.wait(timeout)


def chat_round(clients: Sequence[ClientConnection], tag: str) -> None:
    """
    Every client of ``/chat/`` says something; every client must receive
    every line exactly once, nothing else (checked up to a sentinel that
    travels the same group after all of them).
    """
    lines = ["%s from client %d" % (tag, i) for i in range(len(clients))]
    for client, line in zip(clients, lines, strict=True):
        client.send(line)
    expected = sorted("[user] " + line for line in lines)
    # Wait until everyone has all the lines, then send the sentinel: a late
    # duplicate would then arrive before it.
    got: list[list[str]] = [[] for _ in clients]
    for i, client in enumerate(clients):
        deadline = time.monotonic() + TIMEOUT
        while len(got[i]) < len(lines):
            message = client.recv(max(0.0, deadline - time.monotonic()))
            assert isinstance(message, str)
            got[i].append(message)
    sentinel = "%s sentinel" % tag
    clients[0].send(sentinel)
    for i, client in enumerate(clients):
        got[i] += recv_until(client, "[user] " + sentinel)[:-1]
        assert sorted(got[i]) == expected, (i, got[i])


def raise_fd_limit(wanted: int) -> None:
    """
    Raise this process's soft RLIMIT_NOFILE to ``wanted`` (at most the hard
    limit), so that it -- and the nodes it starts, which inherit it -- can
    hold that many sockets.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def sync_layer(redis_url: str, **config: Any) -> RedisChannelLayer:
    """
    The e2e project's Redis layer (same prefix) in the test process, attached
    to the test reactor (tests.support): its synchronous face works from the
    test's thread.  :func:`close_layer` it when done.
    """
    config.setdefault("connection_kwargs", {"socket_timeout": 2, "reconnect_max_delay": 0.5})
    layer = RedisChannelLayer(hosts=[redis_url], prefix="e2e:", blpop_timeout=1, **config)
    in_reactor(layer.attach_reactor, reactor_thread())
    return layer


def close_layer(layer: RedisChannelLayer) -> None:
    in_reactor(layer.detach_reactor, timeout=30)


class Member:
    """One client socket of :class:`ManySockets`: what it received, how it ended."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ws: AsyncClientConnection | None = None
        #: Texts received, in order (appended on the clients' thread).
        self.received: list[str] = []
        self.closed = False
        #: The close code the server sent (None: no close frame came).
        self.close_code: int | None = None
        #: time.monotonic() when the connection ended.
        self.closed_at: float | None = None

    def got(self, text: str) -> bool:
        """``text`` is the last message received so far."""
        received = self.received
        return bool(received) and received[-1] == text

    def __repr__(self) -> str:
        return "<Member %d: %d received, closed=%s code=%s>" % (
            self.index,
            len(self.received),
            self.closed,
            self.close_code,
        )


class ManySockets:
    """
    Many WebSocket clients in one asyncio event loop, on a daemon thread of
    its own; the test's thread opens and closes them and watches what each
    received.  :meth:`stop` closes whatever is still open; use it in a
    ``finally``.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.members: list[Member] = []
        self._readers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="websocket-clients", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coroutine`` on the clients' loop; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _open_one(self, uri: str, member: Member) -> None:
        member.ws = await async_connect(
            uri,
            open_timeout=TIMEOUT,
            close_timeout=5,
            ping_interval=None,
            compression=None,
            proxy=None,
            max_queue=None,
        )
        reader = asyncio.get_running_loop().create_task(self._read(member))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)

    @staticmethod
    async def _read(member: Member) -> None:
        ws = member.ws
        assert ws is not None
        try:
            async for message in ws:
                assert isinstance(message, str), message
                member.received.append(message)
        except ConnectionClosed:
            pass
        finally:
            member.close_code = ws.close_code
            member.closed_at = time.monotonic()
            member.closed = True

    def open(
        self, port: int, path: str, count: int, concurrency: int = 50, timeout: float = 60.0
    ) -> list[Member]:
        """
        Open ``count`` sockets to ``path``, at most ``concurrency`` handshakes
        at a time (within the layer's capacity for ``websocket.connect``);
        they are open (accepted) on return.
        """
        uri = "ws://127.0.0.1:%d%s" % (port, path)
        members = [Member(len(self.members) + i) for i in range(count)]
        self.members += members

        async def open_all() -> None:
            gate = asyncio.Semaphore(concurrency)

            async def one(member: Member) -> None:
                async with gate:
                    await self._open_one(uri, member)

            await asyncio.gather(*(one(m) for m in members))

        self.run(open_all(), timeout)
        return members

    def churn(
        self, port: int, path: str, count: int, concurrency: int = 50, timeout: float = 60.0
    ) -> None:
        """
        ``count`` sockets to ``path`` that each close as soon as they are
        open, ``concurrency`` of them at a time: connects and disconnects
        interleaved.  Returns once all are closed.
        """
        uri = "ws://127.0.0.1:%d%s" % (port, path)
        members = [Member(len(self.members) + i) for i in range(count)]
        self.members += members

        async def churn_all() -> None:
            gate = asyncio.Semaphore(concurrency)

            async def one(member: Member) -> None:
                async with gate:
                    await self._open_one(uri, member)
                    assert member.ws is not None
                    await member.ws.close()

            await asyncio.gather(*(one(m) for m in members))

        self.run(churn_all(), timeout)

    def close(self, members: Sequence[Member], timeout: float = 60.0) -> None:
        """Close ``members`` all at once (closing handshakes in parallel)."""

        async def close_all() -> None:
            await asyncio.gather(*(m.ws.close() for m in members if m.ws is not None))

        self.run(close_all(), timeout)

    def _wait_readers(self, timeout: float = 10.0) -> None:
        async def readers_done() -> None:
            await asyncio.gather(*self._readers, return_exceptions=True)

        self.run(readers_done(), timeout)

    def stop(self) -> None:
        """Close every socket still open, then end the loop and its thread."""
        try:
            self.close(self.members)
            self._wait_readers()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
