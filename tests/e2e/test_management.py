"""
``manage.py runserver`` (and its refusals) as real processes.  The
Redis-backed ``runserver --noworker`` + ``runworker`` pair is tested with the
Redis layer in tests/e2e/test_redis_nodes.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.e2e.harness import REPO, free_port
from tests.support import default_signals

PROJECT = Path(__file__).parent / "project"


def manage(*args: str, env: dict[str, str], **kw: object) -> subprocess.Popen[bytes]:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **env)
    full_env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=default_signals,  # stopped with SIGINT, however the run was started
        **kw,  # type: ignore[arg-type]
    )


def wait_http(port: int, path: str = "/hello/", timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
                return r.read()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {"E2E_DB": str(tmp_path / "db.sqlite3"), "E2E_DEBUG": "1"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=PROJECT,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), **e),
    )
    return e


@pytest.fixture
def runserver(env: dict[str, str]) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = manage("runserver", "--noreload", "127.0.0.1:%d" % port, env=env)
    try:
        wait_http(port)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_runserver_serves_http_websockets_and_static(
    runserver: tuple[int, subprocess.Popen[bytes]],
) -> None:
    """manage.py runserver serves HTTP, WebSockets and static files; SIGINT exits 0."""
    port, proc = runserver
    assert wait_http(port) == b"Hello world"
    # DEBUG on + staticfiles installed: served like Django's runserver.
    assert wait_http(port, "/static/e2e.css") == b"body { color: #123456; }\n"
    with connect("ws://127.0.0.1:%d/anything/" % port, open_timeout=10) as ws:
        ws.send("ignored by the default routes")  # accepted, consumed, no reply
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert "Starting chanserv development server" in out
    assert "Traceback" not in out


def test_runserver_with_autoreload_starts_and_serves(env: dict[str, str]) -> None:
    """runserver with its autoreloader (the default) starts chanserv and serves HTTP."""
    port = free_port()
    proc = manage("runserver", "127.0.0.1:%d" % port, env=env, start_new_session=True)
    try:
        assert wait_http(port) == b"Hello world"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_runserver_noworker_refuses_the_in_process_layer(env: dict[str, str]) -> None:
    """runserver --noworker with the in-process layer exits non-zero, saying why."""
    proc = manage("runserver", "--noreload", "--noworker", "127.0.0.1:%d" % free_port(), env=env)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode != 0
    assert "--noworker needs a channel layer that crosses processes" in out


def test_runworker_refuses_the_in_process_layer(env: dict[str, str]) -> None:
    """runworker with the in-process layer exits non-zero, saying it needs a shared one."""
    proc = manage("runworker", env=env)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode != 0
    assert "runworker needs a channel layer that crosses processes" in out


def test_children_stopped_with_sigint_get_its_default_even_when_the_run_ignores_it() -> None:
    """A test run started with SIGINT ignored still gives its children a SIGINT that stops them."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a backgrounded `make test`
    try:
        child = subprocess.run(
            [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT))"],
            preexec_fn=default_signals,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "default_int_handler" in child.stdout, child.stdout + child.stderr
