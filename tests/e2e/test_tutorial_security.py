"""
End-to-end: examples/security, the tutorial's "Security" section, under a
real ``twistd -n chanserv`` with its own SQLite database.

The text: with ``allowed_hosts_only`` on the connect consumer, "requests
from other hosts or requests with missing or invalid origin header are now
rejected".  Every refused handshake here carries a logged-in user's real
session cookie -- what a hijacking page would have -- and must get a 403
with no consumer side effect: no channel session holding the login.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core import signing

from tests.e2e.harness import TwistdProcess
from tests.e2e.tutorial_support import (
    Browser,
    migrate,
    query,
    recv,
    refused_status,
    sign_up_and_log_in,
    start,
    stop_cleanly,
    ws,
)

EXAMPLE = "security"
SECRET_KEY = "chanserv-example-security-not-secret"  # examples/security/security/settings.py
ALLOWED = "chat.example.com"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp(EXAMPLE) / "db.sqlite3"
    migrate(EXAMPLE, db)
    return db


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[TwistdProcess]:
    proc = start(EXAMPLE, db, env={"CHANSERV_EXAMPLE_ALLOWED_HOSTS": ALLOWED})
    try:
        yield proc
        stop_cleanly(proc)
    finally:
        proc.__exit__()


@pytest.fixture(scope="module")
def alice(server: TwistdProcess) -> Browser:
    return sign_up_and_log_in(server.port, "alice")


@pytest.fixture
def cookie(alice: Browser) -> dict[str, str]:
    return {"Cookie": "sessionid=%s" % alice.cookie("sessionid")}


def logged_in_channel_sessions(db: Path) -> int:
    """How many channel sessions (key ``chn...``) hold a login."""
    count = 0
    for (data,) in query(
        db, "SELECT session_data FROM django_session WHERE session_key LIKE 'chn%'"
    ):
        content: dict[str, Any] = signing.loads(
            data, key=SECRET_KEY, salt="django.contrib.sessions.SessionStore"
        )
        count += "_auth_user_id" in content
    return count


def accepted(port: int, path: str, origin: str, cookie: dict[str, str]) -> bool:
    """Whether the handshake is accepted, and the chat then works on it."""
    with ws(port, path, origin=origin, headers=cookie) as socket_:
        socket_.send("from %s" % origin)
        assert recv(socket_) == "from %s" % origin
    return True


def test_the_chat_page_works_from_an_allowed_host(
    server: TwistdProcess, alice: Browser, db: Path
) -> None:
    """From the page's own allowed origin, sockets chat and their sessions hold the login."""
    status, _, page = alice.open("/")
    assert status == 200 and "new WebSocket(" in page
    origin = "http://127.0.0.1:%d" % server.port  # the page's own origin
    before = logged_in_channel_sessions(db)
    with (
        ws(server.port, "/chat/", origin=origin, headers={"Cookie": alice.cookie_header()}) as a1,
        ws(server.port, "/chat/", origin=origin, headers={"Cookie": alice.cookie_header()}) as a2,
    ):
        a1.send("hi me")
        assert recv(a1) == recv(a2) == "hi me"
    # The consumers ran: each socket's channel session holds the login.
    assert logged_in_channel_sessions(db) == before + 2


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:1234",  # ALLOWED_HOSTS has no ports: any port passes
        "http://localhost",
        "https://chat.example.com",
        "HTTPS://Chat.Example.COM",  # case-insensitive
        "https://chat.example.com.",  # the same name, as for Django's Host
        "https://chat.example.com:8443",
    ],
)
def test_allowed_origins_are_accepted(
    server: TwistdProcess, cookie: dict[str, str], origin: str
) -> None:
    """Origins whose host is in ALLOWED_HOSTS, in any case and on any port, are accepted."""
    assert accepted(server.port, "/chat/", origin, cookie)


REFUSED = [
    "http://evil.example",  # foreign
    "null",  # sandboxed frame, file: page
    None,  # missing
    "",
    "https://chat.example.com.evil.com",  # look-alikes
    "https://evilchat.example.com",
    "https://evil-chat.example.com",
    "https://sub.chat.example.com",  # not listed as .chat.example.com
    "http://127.0.0.1.evil.com",
    "http://localhost.evil.com.",
    "http://127.0.0.2",
    "https://chat.example.com..",
    "https://chat.example.com/path",  # not a serialised origin
    "https://user@chat.example.com",
    "chat.example.com",
    "https://chat.example.com, https://evil.example",
    "https://chat.example.com https://evil.example",
    "https://chat.example.com:99999",
]


@pytest.mark.parametrize("origin", REFUSED)
def test_other_origins_get_403_and_no_consumer_runs(
    server: TwistdProcess, cookie: dict[str, str], db: Path, origin: str | None
) -> None:
    """Origins not allowed, malformed or absent get 403 before the session decorators run."""
    before = logged_in_channel_sessions(db)
    assert refused_status(server.port, "/chat/", origin=origin, headers=cookie) == 403
    # The 403 is the consumer's answer: had the session decorators run, the
    # login would be in a channel session by now.
    assert logged_in_channel_sessions(db) == before


def test_two_origin_headers_are_a_bad_request(
    server: TwistdProcess, cookie: dict[str, str], db: Path
) -> None:
    """Two Origin headers get 400 from the server itself; no consumer runs."""
    # Refused by the server itself, before the application hears of it.
    before = logged_in_channel_sessions(db)
    headers = dict(cookie, Origin="https://chat.example.com")
    status = refused_status(server.port, "/chat/", origin="https://evil.example", headers=headers)
    assert status == 400
    assert logged_in_channel_sessions(db) == before


def test_refusals_are_logged_without_a_traceback(
    server: TwistdProcess, cookie: dict[str, str]
) -> None:
    """A refused Origin is logged as a denied handshake naming the path and the Origin."""
    origin = "https://refused.example"
    assert refused_status(server.port, "/logged/", origin=origin, headers=cookie) == 403
    assert (
        "WebSocket handshake for '/logged/' denied: Origin '%s' is not allowed" % origin
        in server.output()
    )
    # (stop_cleanly checks, at the end, that the log has no traceback.)


# -- the subclass: SameOriginOnly on /same-origin/ ----------------------------


def test_same_origin_route_accepts_only_its_own_origin(
    server: TwistdProcess, cookie: dict[str, str]
) -> None:
    """A same-origin route accepts only its page's scheme, host and port (any case)."""
    port = server.port
    assert accepted(port, "/same-origin/", "http://127.0.0.1:%d" % port, cookie)
    assert accepted(port, "/same-origin/", "HTTP://127.0.0.1:%d" % port, cookie)
    for origin in [
        "http://127.0.0.1:%d" % (port + 1),  # port mismatch
        "http://127.0.0.1",  # port 80
        "https://127.0.0.1:%d" % port,  # scheme mismatch
        "http://localhost:%d" % port,  # another host name
        "https://chat.example.com",  # allowed host, another origin
        "null",
        None,
    ]:
        assert refused_status(port, "/same-origin/", origin=origin, headers=cookie) == 403, origin


def test_same_origin_on_an_allowed_host_name(server: TwistdProcess, cookie: dict[str, str]) -> None:
    """A same-origin route works on an allowed host name; on a host not allowed, 403."""
    port = server.port
    origin = "http://chat.example.com:%d" % port
    with ws(port, "/same-origin/", origin=origin, headers=cookie, host=ALLOWED) as socket_:
        socket_.send("hi")
        assert recv(socket_) == "hi"
    # The same origin, but a host that is not allowed: ws_add's check refuses.
    assert (
        refused_status(
            port,
            "/same-origin/",
            origin="http://evil.example:%d" % port,
            headers=cookie,
            host="evil.example",
        )
        == 403
    )
