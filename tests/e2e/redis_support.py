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
sends ``{"text"}`` on to ``Group(message["group"])``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, TypeVar

from websockets.sync.client import ClientConnection, connect

from tests.e2e.harness import REPO, TwistdProcess, free_port
from tests.redisserver import RedisServer

PROJECT = Path(__file__).parent / "project"
SETTINGS = "e2eproj.settings"

#: Seconds any single network step may take before a test fails.
TIMEOUT = 10.0

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = TIMEOUT, what: str = "") -> T:
    """
    Call ``condition`` until it returns something true; return that.

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
        time.sleep(0.02)


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
