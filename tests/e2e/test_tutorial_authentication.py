"""
End-to-end: examples/authentication, the tutorial's "Authentication" chat,
under real ``twistd -n chanserv`` processes sharing one SQLite database.

The text: "a chat server where users can only chat to people with the same
first letter of their username"; the user comes from the session cookie,
or from a ``session_key`` GET parameter when the WebSocket is served by a
second server process on another domain.  Users sign up and log in through
the example's real forms (CSRF token included), then open WebSockets with
the session cookie those forms set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import TwistdProcess, free_port
from tests.e2e.tutorial_support import (
    Browser,
    drain,
    migrate,
    query,
    recv,
    refused_status,
    sign_up_and_log_in,
    start,
    stop_cleanly,
    ws,
)

EXAMPLE = "authentication"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp(EXAMPLE) / "db.sqlite3"
    migrate(EXAMPLE, db)
    return db


@pytest.fixture(scope="module")
def servers(db: Path) -> Iterator[tuple[TwistdProcess, TwistdProcess]]:
    """
    The site, whose chat page points its WebSocket at a second server, and
    that second server, on another port: both serve the same database.
    """
    ws_port = free_port()
    ws_url = "ws://sockets.localhost:%d/" % ws_port
    site = start(EXAMPLE, db, env={"CHANSERV_EXAMPLE_WS_URL": ws_url})
    sockets = TwistdProcess(
        site.project_dir,
        "%s.settings" % EXAMPLE,
        port=ws_port,
        env={"CHANSERV_EXAMPLE_DB": str(db)},
    )
    try:
        sockets.start()
        yield site, sockets
        stop_cleanly(site)
        stop_cleanly(sockets)
    finally:
        site.__exit__()
        sockets.__exit__()


@pytest.fixture(scope="module")
def site(servers: tuple[TwistdProcess, TwistdProcess]) -> TwistdProcess:
    return servers[0]


@pytest.fixture(scope="module")
def users(site: TwistdProcess) -> dict[str, Browser]:
    """alice and anna share a first letter; bob does not."""
    return {name: sign_up_and_log_in(site.port, name) for name in ("alice", "anna", "bob")}


def cookie(browser: Browser) -> dict[str, str]:
    return {"Cookie": "sessionid=%s" % browser.cookie("sessionid")}


def db_of(proc: TwistdProcess) -> Path:
    return Path(proc.env["CHANSERV_EXAMPLE_DB"])


def test_chat_page_needs_a_login(site: TwistdProcess) -> None:
    """The chat page sends anonymous visitors to the login form with ?next=/."""
    status, url, page = Browser(site.port).open("/")
    assert status == 200
    assert url.endswith("/login/?next=/")
    assert 'name="csrfmiddlewaretoken"' in page
    assert 'name="username"' in page and 'name="password"' in page


def test_wrong_password_is_refused_by_the_login_form(
    site: TwistdProcess, users: dict[str, Browser]
) -> None:
    """A wrong password shows the login form again with an error; no session, no socket."""
    browser = Browser(site.port)
    status, url, page = browser.submit("/login/", {"username": "alice", "password": "wrong"})
    assert status == 200 and url.endswith("/login/")
    assert "Please enter a correct username and password" in page
    assert browser.cookie("sessionid") is None
    assert refused_status(site.port, "/chat/", headers={"Cookie": browser.cookie_header()}) == 403


def test_chat_page_names_the_user_and_the_letter(
    site: TwistdProcess, users: dict[str, Browser]
) -> None:
    """The chat page names the logged-in user and the chat of their first letter."""
    status, url, page = users["anna"].open("/")
    assert status == 200 and url.endswith(":%d/" % site.port)
    assert '<strong id="username">anna</strong>' in page
    assert "Chat for &ldquo;a&rdquo;" in page
    assert "new WebSocket(" in page


def test_same_first_letter_chats_other_letters_do_not(
    site: TwistdProcess, users: dict[str, Browser]
) -> None:
    """Users chat only with those sharing their first letter; logins go to channel sessions."""
    port = site.port
    with (
        ws(port, "/chat/", headers=cookie(users["alice"])) as alice,
        ws(port, "/chat/", headers=cookie(users["anna"])) as anna,
        ws(port, "/chat/", headers=cookie(users["bob"])) as bob,
    ):
        alice.send("hi, a-people")
        assert recv(alice) == "hi, a-people"
        assert recv(anna) == "hi, a-people"

        # The user is found again from the channel session on each receive.
        anna.send("hello alice")
        assert recv(alice) == "hello alice"
        assert recv(anna) == "hello alice"

        bob.send("just me")
        assert recv(bob) == "just me"
        bob.send("still me")  # a round trip after the a-group's messages went out
        assert recv(bob) == "still me"
        assert drain(alice) == drain(anna) == []

        # The login was copied into the sockets' channel sessions.
        rows = query(
            db_of(site), "SELECT count(*) FROM django_session WHERE session_key LIKE 'chn%'"
        )
        assert rows[0][0] >= 3


def test_anonymous_sockets_are_refused(site: TwistdProcess) -> None:
    """Sockets with no session, an unknown one or only a CSRF cookie get 403."""
    assert refused_status(site.port, "/chat/") == 403
    assert refused_status(site.port, "/chat/", headers={"Cookie": "sessionid=nosuchsession"}) == 403
    # A visitor who only loaded the login page has cookies (the CSRF one)
    # but no login.
    visitor = Browser(site.port)
    visitor.open("/login/")
    assert refused_status(site.port, "/", headers={"Cookie": visitor.cookie_header()}) == 403


def test_after_logout_the_cookie_no_longer_opens_a_socket(site: TwistdProcess) -> None:
    """After logout by the page's form, a handshake with the old cookie gets 403."""
    browser = sign_up_and_log_in(site.port, "arthur")
    old = cookie(browser)
    with ws(site.port, "/chat/", headers=old) as socket_:
        socket_.send("bye")
        assert recv(socket_) == "bye"
    # The chat page's "Log out" button posts its form to /logout/.
    status, _, page = browser.open("/")
    assert status == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token
    status, url, _ = browser.open("/logout/", {"csrfmiddlewaretoken": token.group(1)})
    assert status == 200 and url.endswith("/login/")
    assert refused_status(site.port, "/chat/", headers=old) == 403


def test_session_key_query_parameter_on_another_host_and_port(
    servers: tuple[TwistdProcess, TwistdProcess], users: dict[str, Browser]
) -> None:
    """?session_key= logs a socket in on another host and port, without any cookie.

    A wrong or missing key is an anonymous user, refused with 403.
    """
    site, sockets = servers
    assert sockets.port != site.port
    # The page served by the site points its WebSocket at the other server,
    # with the session key in the URL (the tutorial's
    # ``{{ request.session.session_key }}``).
    status, _, page = users["alice"].open("/")
    assert status == 200
    url = re.search(r'var websocketUrl = ("[^"]*");', page)
    assert url, page
    assert json.loads(url.group(1)) == "ws://sockets.localhost:%d/" % sockets.port
    key = re.search(r"\?session_key=([a-z0-9]+)\"", page)
    assert key and key.group(1) == users["alice"].cookie("sessionid")

    # No cookie goes to the other host: the session key does the work.
    path = "/?session_key=%s" % key.group(1)
    anna_path = "/?session_key=%s" % users["anna"].cookie("sessionid")
    bob_path = "/?session_key=%s" % users["bob"].cookie("sessionid")
    host = "sockets.localhost"
    with (
        ws(sockets.port, path, host=host) as alice,
        ws(sockets.port, anna_path, host=host) as anna,
        ws(sockets.port, bob_path, host=host) as bob,
    ):
        alice.send("over here")
        assert recv(alice) == "over here"
        assert recv(anna) == "over here"
        bob.send("b only")
        assert recv(bob) == "b only"
        bob.send("b again")
        assert recv(bob) == "b again"
        assert drain(alice) == drain(anna) == []

    # A wrong or missing key is an anonymous user: refused.
    assert refused_status(sockets.port, "/?session_key=nosuchkey", host=host) == 403
    assert refused_status(sockets.port, "/", host=host) == 403
