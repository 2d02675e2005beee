"""
Helpers of the end-to-end tests of the tutorial's later sections
(``tests/e2e/test_tutorial_*.py``): run an example's ``manage.py`` and
``twistd -n chanserv`` against a per-test SQLite file, talk to it over HTTP
like a browser (cookies, CSRF tokens, forms) and over WebSockets, and look
into the database with :mod:`sqlite3`.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.e2e.harness import REPO, TwistdProcess, free_port

EXAMPLES = REPO / "examples"

#: Seconds any single network step may take before the test fails.
TIMEOUT = 10.0


def manage(
    example: str,
    db: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the example's ``manage.py *args`` on ``db``; with ``check``, it must succeed."""
    full_env = dict(os.environ, CHANSERV_EXAMPLE_DB=str(db), PYTHONPATH=str(REPO))
    full_env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py must pick its own
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLES / example,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def migrate(example: str, db: Path) -> None:
    """``manage.py migrate`` into ``db``, as every example's README says."""
    manage(example, db, "migrate", "-v", "0", "--no-input")
    assert db.exists()


def start(
    example: str,
    db: Path,
    args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> TwistdProcess:
    """Start the (migrated) example on a free port, serving ``db``."""
    proc = TwistdProcess(
        EXAMPLES / example,
        "%s.settings" % example,
        args=list(args),
        port=free_port(),
        env=dict(env or {}, CHANSERV_EXAMPLE_DB=str(db)),
    )
    return proc.start()


def stop_cleanly(proc: TwistdProcess) -> None:
    """
    SIGTERM the process; it must stop in order and without a traceback
    (twistd re-raises the SIGTERM that stopped it: -SIGTERM is a clean exit).
    """
    code = proc.stop()
    out = proc.output()
    assert code in (0, -signal.SIGTERM), out
    assert "chanserv stopped" in out, out
    assert "Traceback" not in out, out


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the SQLite file ``db`` (a connection of its own)."""
    with sqlite3.connect(db, timeout=TIMEOUT) as conn:
        return list(conn.execute(sql, params))


# -- HTTP like a browser -------------------------------------------------------


class Browser:
    """
    An HTTP client with a cookie jar, following redirects, for one server:
    it fills in forms the way a browser does, CSRF token included.
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.base = "http://%s:%d" % (host, port)
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def open(self, path: str, data: Mapping[str, str] | None = None) -> tuple[int, str, str]:
        """GET (or POST ``data`` as a form): ``(status, final URL, body)``."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.base + path, data=body, timeout=TIMEOUT) as response:
                return response.status, response.geturl(), response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.geturl(), e.read().decode(errors="replace")

    def submit(
        self, path: str, fields: Mapping[str, str], action: str | None = None
    ) -> tuple[int, str, str]:
        """
        Load the page at ``path`` and post ``fields`` with its form's CSRF
        token, to ``action`` (default: ``path`` again).
        """
        status, _, page = self.open(path)
        assert status == 200, page
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, "no CSRF token in the form at %s" % path
        return self.open(action or path, dict(fields, csrfmiddlewaretoken=token.group(1)))

    def cookie(self, name: str) -> str | None:
        for cookie in self.jar:
            if cookie.name == name:
                return cookie.value
        return None

    def cookie_header(self) -> str:
        return "; ".join("%s=%s" % (c.name, c.value) for c in self.jar)


def sign_up_and_log_in(port: int, username: str, password: str = "s3cret-Passw0rd") -> Browser:
    """A new user, through the example's sign-up and login forms."""
    browser = Browser(port)
    status, url, page = browser.submit(
        "/signup/", {"username": username, "password1": password, "password2": password}
    )
    assert (status, urllib.parse.urlsplit(url).path) == (200, "/login/"), page
    status, url, page = browser.submit("/login/", {"username": username, "password": password})
    assert (status, urllib.parse.urlsplit(url).path) == (200, "/"), page
    assert browser.cookie("sessionid"), "logging in set no session cookie"
    return browser


# -- WebSockets ------------------------------------------------------------------


def ws(
    port: int,
    path: str = "/",
    *,
    origin: str | None = None,
    headers: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
) -> ClientConnection:
    """
    A WebSocket to the server on 127.0.0.1:``port``, with ``host`` as the
    host name the client asks for (the ``Host`` header), and the ``Origin``
    a browser on ``origin`` would send (none when None).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        return connect(
            "ws://%s:%d%s" % (host, port, path),
            sock=sock,
            origin=origin,  # type: ignore[arg-type]
            additional_headers=dict(headers or {}),
            proxy=None,
            open_timeout=TIMEOUT,
        )
    except BaseException:
        sock.close()
        raise


def refused_status(port: int, path: str = "/", **kwargs: Any) -> int:
    """The HTTP status of a WebSocket handshake that must not succeed."""
    try:
        socket_ = ws(port, path, **kwargs)
    except InvalidStatus as e:
        return e.response.status_code
    socket_.close()
    raise AssertionError("the WebSocket handshake to %s succeeded" % path)


def recv(socket_: ClientConnection) -> str:
    """The next message, which must be text, within :data:`TIMEOUT`."""
    message = socket_.recv(timeout=TIMEOUT)
    assert isinstance(message, str), message
    return message


def drain(socket_: ClientConnection) -> list[str | bytes]:
    """
    Close ``socket_`` and return the messages it had received and not read:
    everything the server sent before it answered the close.  A test shows
    that a socket was sent nothing by first making sure any such message
    would have been sent already (a later round trip on another socket).
    """
    socket_.close()
    left: list[str | bytes] = []
    while True:
        try:
            left.append(socket_.recv(timeout=TIMEOUT))
        except ConnectionClosed:
            return left


__all__ = [
    "EXAMPLES",
    "TIMEOUT",
    "Browser",
    "drain",
    "free_port",
    "manage",
    "migrate",
    "query",
    "recv",
    "refused_status",
    "sign_up_and_log_in",
    "start",
    "stop_cleanly",
    "ws",
]
