"""
End-to-end tests of the complete chat application (examples/chatroom): a
real ``twistd -n chanserv`` process per test, over real sockets, with its
own SQLite file.

The database is made once per module by the example's own ``manage.py
migrate`` (plus two users and a room, created with ``manage.py shell -c``)
and copied for every test, so each test starts from the same state.  HTTP
goes through urllib with a cookie jar, logging in through the real login
form with its CSRF token; WebSockets through the ``websockets`` client, with
the session cookie and an ``Origin`` header as a browser sends them.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, NamedTuple
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, HTTPRedirectHandler, Request, build_opener

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from tests.e2e.harness import REPO, TwistdProcess, free_port
from tests.e2e.test_examples import TIMEOUT, stop_cleanly

EXAMPLE = REPO / "examples" / "chatroom"
USERS = {"alice": "alice-secret-passphrase", "bob": "bob-secret-passphrase"}
HISTORY_LENGTH = 50  # rooms.models.HISTORY_LENGTH


# -- the example's manage.py and database -------------------------------------


def manage(db: Path, *args: str) -> str:
    """Run the example's ``manage.py`` on database ``db``; return its output."""
    env = dict(os.environ, CHANSERV_EXAMPLE_DB=str(db), PYTHONPATH=str(REPO))
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py picks its own
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def shell(db: Path, code: str) -> str:
    """``manage.py shell -c code``: Python run with the example's Django."""
    return manage(db, "shell", "-v", "0", "-c", code)


def make_database(db: Path) -> None:
    """Migrate ``db`` and add the users of :data:`USERS` and the room "Lobby"."""
    manage(db, "migrate", "-v", "0", "--no-input")
    shell(
        db,
        "from django.contrib.auth.models import User\n"
        "from rooms.models import Room\n"
        "for name, password in %r.items():\n"
        "    User.objects.create_user(name, password=password)\n"
        "Room.objects.create(name='Lobby', slug='lobby')\n" % (USERS,),
    )


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (WAL included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=TIMEOUT) as conn:
        rows = conn.execute(sql, params).fetchall()
    conn.close()
    return rows


def saved_messages(db: Path) -> list[tuple[str, str, str]]:
    """Every message in the database: (room slug, username, text), by id."""
    return [
        (slug, user, text)
        for slug, user, text in query(
            db,
            "SELECT r.slug, u.username, m.text FROM rooms_message m "
            "JOIN rooms_room r ON m.room_id = r.id JOIN auth_user u ON m.user_id = u.id "
            "ORDER BY m.id",
        )
    ]


def add_messages(db: Path, room: str, user: str, texts: list[str]) -> None:
    """Save messages straight into the database, as another process would."""
    shell(
        db,
        "from django.contrib.auth.models import User\n"
        "from rooms.models import Message, Room\n"
        "room = Room.objects.get(slug=%r)\n"
        "user = User.objects.get(username=%r)\n"
        "for text in %r:\n"
        "    Message.objects.create(room=room, user=user, text=text)\n" % (room, user, texts),
    )


class Site(NamedTuple):
    server: TwistdProcess
    db: Path

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("chatroom") / "template.sqlite3"
    make_database(db)
    return db


def start_site(template: Path, workdir: Path, port: int | None = None) -> Site:
    """A copy of ``template`` in ``workdir`` and the example serving it."""
    db = workdir / "chatroom.sqlite3"
    if not db.exists():
        copy_database(template, db)
    server = TwistdProcess(
        EXAMPLE,
        "chatroom.settings",
        port=port or free_port(),
        env={"CHANSERV_EXAMPLE_DB": str(db)},
    )
    return Site(server.start(), db)


@pytest.fixture
def site(template_db: Path, tmp_path: Path) -> Iterator[Site]:
    running = start_site(template_db, tmp_path)
    try:
        yield running
        stop_cleanly(running.server)
    finally:
        running.server.__exit__()


# -- an HTTP client with cookies, and WebSockets -------------------------------


class Response(NamedTuple):
    status: int
    headers: dict[str, str]
    text: str


def csrf_token(html: str) -> str:
    """The CSRF token of the (first) form in ``html``."""
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx itself is the response


class Browser:
    """Cookies kept, redirects not followed, CSRF tokens taken from forms."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = "http://127.0.0.1:%d" % port
        self.jar = CookieJar()
        self.opener = build_opener(HTTPCookieProcessor(self.jar), _NoRedirect())

    def request(self, path: str, fields: dict[str, str] | None = None) -> Response:
        data = urlencode(fields).encode() if fields is not None else None
        req = Request(self.origin + path, data=data)
        try:
            with self.opener.open(req, timeout=TIMEOUT) as response:
                return Response(
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    response.read().decode("utf-8"),
                )
        except HTTPError as e:
            with e:
                return Response(
                    e.code,
                    {k.lower(): v for k, v in e.headers.items()},
                    e.read().decode("utf-8", "replace"),
                )

    def get(self, path: str) -> Response:
        return self.request(path)

    def submit(self, path: str, fields: dict[str, str]) -> Response:
        """GET the form at ``path``, then POST ``fields`` with its CSRF token."""
        page = self.get(path)
        assert page.status == 200, page
        return self.request(path, dict(fields, csrfmiddlewaretoken=csrf_token(page.text)))

    def login(self, username: str, password: str | None = None) -> Response:
        response = self.submit(
            "/accounts/login/",
            {"username": username, "password": password or USERS[username]},
        )
        assert response.status == 302, response
        return response

    def cookie_header(self) -> str:
        return "; ".join("%s=%s" % (c.name, c.value) for c in self.jar)


def socket(
    port: int,
    path: str = "/rooms/lobby/",
    browser: Browser | None = None,
    origin: str | None = "",
) -> ClientConnection:
    """A WebSocket to ``path``, with ``browser``'s cookies; ``origin`` "" is the site's."""
    headers = {"Cookie": browser.cookie_header()} if browser else {}
    if origin == "":
        origin = "http://127.0.0.1:%d" % port
    return connect(
        "ws://127.0.0.1:%d%s" % (port, path),
        origin=Origin(origin) if origin is not None else None,
        additional_headers=headers,
        open_timeout=TIMEOUT,
    )


def refused(port: int, path: str = "/rooms/lobby/", **kwargs: Any) -> int:
    """The HTTP status of a WebSocket handshake the server must refuse."""
    with pytest.raises(InvalidStatus) as info:
        socket(port, path, **kwargs).close()
    return info.value.response.status_code


def receive(ws: ClientConnection) -> dict[str, Any]:
    data = json.loads(ws.recv(timeout=TIMEOUT))
    assert isinstance(data, dict)
    return data


def say(ws: ClientConnection, text: str) -> None:
    ws.send(json.dumps({"text": text}))


def logged_in(site: Site, username: str) -> Browser:
    browser = Browser(site.port)
    browser.login(username)
    return browser


# -- pages ---------------------------------------------------------------------


def test_pages_need_a_login_and_static_files_are_served(site: Site) -> None:
    """Every page sends anonymous users to the login form with ?next= set.

    With DEBUG, chanserv serves the apps' static files; chat.js uses no HTML sink.
    """
    browser = Browser(site.port)
    for path in ("/", "/rooms/lobby/", "/rooms/no-such-room/"):
        response = browser.get(path)
        assert response.status == 302, path
        assert response.headers["location"] == "/accounts/login/?next=" + path

    # DEBUG is on and django.contrib.staticfiles installed: chanserv serves
    # the apps' static files itself, no collectstatic needed.
    script = browser.get("/static/rooms/chat.js")
    assert script.status == 200
    assert "javascript" in script.headers["content-type"]
    assert "new WebSocket(" in script.text
    for html_sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert html_sink not in script.text
    style = browser.get("/static/rooms/chatroom.css")
    assert style.status == 200
    assert style.headers["content-type"].startswith("text/css")
    assert browser.get("/static/rooms/missing.js").status == 404


def test_login_and_logout_with_csrf(site: Site) -> None:
    """Login needs the CSRF token and the right password, then sockets open as that user.

    Logging out by POST ends the session: its old cookie no longer opens a socket.
    """
    browser = Browser(site.port)
    page = browser.get("/accounts/login/")
    assert page.status == 200
    assert 'id="login-form"' in page.text
    # No CSRF token: refused.
    response = browser.request("/accounts/login/", {"username": "alice", "password": "x"})
    assert response.status == 403
    # A wrong password: the form again, with an error.
    response = browser.submit("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status == 200
    assert "didn't match" in response.text

    response = browser.login("alice")
    assert response.headers["location"] == "/"
    home = browser.get("/")
    assert home.status == 200
    assert 'id="username">alice<' in home.text
    assert ">Lobby</a>" in home.text

    with socket(site.port, browser=browser) as ws:
        say(ws, "logged in")
        assert receive(ws)["user"] == "alice"
    cookies_before_logout = Browser(site.port)
    for cookie in browser.jar:
        cookies_before_logout.jar.set_cookie(cookie)

    # Log out with the form every page has: a POST with the page's token.
    token = csrf_token(browser.get("/").text)
    response = browser.request("/accounts/logout/", {"csrfmiddlewaretoken": token})
    assert response.status == 302
    assert response.headers["location"] == "/accounts/login/"
    assert browser.get("/").status == 302
    # The old session cookie no longer opens a socket.
    assert refused(site.port, browser=cookies_before_logout) == 403


def test_signup_creates_an_account_and_logs_in(site: Site) -> None:
    """Sign-up with matching passwords makes the account and logs in; a mismatch makes none."""
    browser = Browser(site.port)
    password = "carol-secret-passphrase"
    response = browser.submit(
        "/accounts/signup/",
        {"username": "carol", "password1": password, "password2": password + "x"},
    )
    assert response.status == 200  # the passwords differ
    assert query(site.db, "SELECT COUNT(*) FROM auth_user WHERE username = 'carol'") == [(0,)]

    response = browser.submit(
        "/accounts/signup/",
        {"username": "carol", "password1": password, "password2": password},
    )
    assert response.status == 302
    assert response.headers["location"] == "/"
    assert 'id="username">carol<' in browser.get("/").text
    assert query(site.db, "SELECT COUNT(*) FROM auth_user WHERE username = 'carol'") == [(1,)]
    # And the new account logs in through the login form.
    other = Browser(site.port)
    assert other.login("carol", password).headers["location"] == "/"
    assert 'id="username">carol<' in other.get("/").text


def test_create_and_join_a_room(site: Site) -> None:
    """A room created from the home page gets a slug, is listed for all and can be joined.

    A name already taken, or without a letter or digit, is refused.
    """
    alice = logged_in(site, "alice")
    response = alice.submit("/", {"name": "  Tea &  Biscuits "})
    assert response.status == 302
    assert response.headers["location"] == "/rooms/tea-biscuits/"
    assert query(site.db, "SELECT name, slug FROM rooms_room ORDER BY id") == [
        ("Lobby", "lobby"),
        ("Tea & Biscuits", "tea-biscuits"),
    ]

    page = alice.get("/rooms/tea-biscuits/")
    assert page.status == 200
    assert "<h1>Tea &amp; Biscuits</h1>" in page.text
    assert 'data-socket-path="/rooms/tea-biscuits/"' in page.text
    assert '<script src="/static/rooms/chat.js"></script>' in page.text

    # Bob finds it in the list and joins it.
    bob = logged_in(site, "bob")
    assert 'href="/rooms/tea-biscuits/">Tea &amp; Biscuits</a>' in bob.get("/").text
    assert bob.get("/rooms/tea-biscuits/").status == 200

    # The same name again, or one without a letter or digit: refused.
    for name, error in (("tea & biscuits", "already"), ("!!!", "letter or digit")):
        response = bob.submit("/", {"name": name})
        assert response.status == 200
        assert error in response.text
    assert query(site.db, "SELECT COUNT(*) FROM rooms_room") == [(2,)]


def test_unknown_room_is_404_and_its_socket_refused(site: Site) -> None:
    """An unknown room's page is 404; its socket, like any path outside a room, gets 403."""
    alice = logged_in(site, "alice")
    assert alice.get("/rooms/no-such-room/").status == 404
    assert refused(site.port, "/rooms/no-such-room/", browser=alice) == 403
    # Paths outside /rooms/<slug>/ are refused too.
    for path in ("/", "/chat/", "/rooms/", "/rooms/lobby/extra/", "/rooms/lob%20by/"):
        assert refused(site.port, path, browser=alice) == 403, path
    # The room itself is fine.
    with socket(site.port, browser=alice) as ws:
        say(ws, "here")
        assert receive(ws)["text"] == "here"


# -- who may connect -------------------------------------------------------------


def test_anonymous_websocket_is_refused(site: Site) -> None:
    """A socket without a valid session (none, only a CSRF cookie, forged) gets 403."""
    assert refused(site.port) == 403
    anonymous = Browser(site.port)
    assert anonymous.get("/accounts/login/").status == 200  # a CSRF cookie, no session
    assert refused(site.port, browser=anonymous) == 403
    forged = Browser(site.port)
    forged.jar.set_cookie(_cookie("sessionid", "x" * 32))
    assert refused(site.port, browser=forged) == 403
    assert saved_messages(site.db) == []


def _cookie(name: str, value: str) -> Any:
    from http.cookiejar import Cookie

    return Cookie(
        0, name, value, None, False, "127.0.0.1", False, False, "/", True, False,
        None, False, None, None, {},
    )  # fmt: skip


def test_foreign_origin_is_refused_before_any_session_is_written(site: Site) -> None:
    """Sockets from a foreign, null or missing Origin get 403 before a session is saved."""
    alice = logged_in(site, "alice")
    channel_sessions = "SELECT COUNT(*) FROM django_session WHERE session_key LIKE 'chn%'"
    assert query(site.db, channel_sessions) == [(0,)]
    port = site.port
    for origin in (
        "http://evil.example",
        "http://evil.example:%d" % port,
        "http://127.0.0.1.evil.example:%d" % port,
        "null",
        None,  # no Origin header at all
    ):
        assert refused(port, browser=alice, origin=origin) == 403, origin
    # Denied before the consumer ran: no channel session was created.
    assert query(site.db, channel_sessions) == [(0,)]

    # The site's own origin (any of the DEBUG hosts) is accepted, and that
    # does create the socket's channel session.
    for origin in ("http://127.0.0.1:%d" % port, "http://localhost:%d" % port):
        with socket(port, browser=alice, origin=origin) as ws:
            say(ws, "from %s" % origin)
            assert receive(ws)["user"] == "alice"
    assert query(site.db, channel_sessions) == [(2,)]


# -- chatting ----------------------------------------------------------------------


def test_two_users_exchange_messages_and_they_are_saved(site: Site) -> None:
    """A message reaches everyone in the room with user, text, time and id, and is saved."""
    alice, bob = logged_in(site, "alice"), logged_in(site, "bob")
    with socket(site.port, browser=alice) as a, socket(site.port, browser=bob) as b:
        say(a, "hello bob")
        first = receive(b)
        assert receive(a) == first
        assert first["user"] == "alice"
        assert first["text"] == "hello bob"
        sent_at = datetime.fromisoformat(first["time"])
        assert sent_at.tzinfo is not None

        say(b, "  <b>hi</b> alice ✓  ")
        second = receive(a)
        assert receive(b) == second
        assert (second["user"], second["text"]) == ("bob", "<b>hi</b> alice ✓")
        assert second["id"] > first["id"]

    assert saved_messages(site.db) == [
        ("lobby", "alice", "hello bob"),
        ("lobby", "bob", "<b>hi</b> alice ✓"),
    ]
    assert query(site.db, "SELECT id FROM rooms_message ORDER BY id") == [
        (first["id"],),
        (second["id"],),
    ]


def test_rooms_do_not_hear_each_other(site: Site) -> None:
    """A message goes only to the sockets of its own room."""
    add_room = "from rooms.models import Room; Room.objects.create(name='Attic', slug='attic')"
    shell(site.db, add_room)
    alice, bob = logged_in(site, "alice"), logged_in(site, "bob")
    with (
        socket(site.port, "/rooms/lobby/", browser=alice) as lobby,
        socket(site.port, "/rooms/attic/", browser=bob) as attic,
    ):
        say(attic, "up here")
        assert receive(attic)["text"] == "up here"
        say(lobby, "down here")
        assert receive(lobby)["text"] == "down here"
        # Had "down here" reached the attic, it would come before this.
        say(attic, "anyone?")
        assert receive(attic)["text"] == "anyone?"
    assert saved_messages(site.db) == [
        ("attic", "bob", "up here"),
        ("lobby", "alice", "down here"),
        ("attic", "bob", "anyone?"),
    ]


def test_one_persons_messages_keep_their_order(site: Site) -> None:
    """One person's 40 quick messages reach everyone and the database in the order sent."""
    alice, bob = logged_in(site, "alice"), logged_in(site, "bob")
    texts = ["message %d" % i for i in range(40)]
    with socket(site.port, browser=alice) as a, socket(site.port, browser=bob) as b:
        for text in texts:
            say(a, text)
        assert [receive(b)["text"] for _ in texts] == texts
        assert [receive(a)["text"] for _ in texts] == texts
    assert [text for _, _, text in saved_messages(site.db)] == texts


def test_bad_messages_get_an_error_and_are_not_saved(site: Site) -> None:
    """A malformed, empty or over-long message gets an error to its sender only; none saved."""
    alice, bob = logged_in(site, "alice"), logged_in(site, "bob")
    with socket(site.port, browser=alice) as a, socket(site.port, browser=bob) as b:
        for frame, error in (
            ("not json", "Send JSON"),
            ('"just a string"', "Send JSON"),
            ('{"message": "wrong key"}', "Send JSON"),
            ('{"text": 42}', "Send JSON"),
            ('{"text": "\\ud800"}', "Send JSON"),  # a lone surrogate
            (b"\x00binary", "Send JSON"),
            ('{"text": "   "}', "empty"),
            (json.dumps({"text": "x" * 2001}), "at most 2000"),
        ):
            a.send(frame)
            assert error in receive(a)["error"], frame
        say(a, "x" * 2000)
        # Bob got none of the errors: the first thing he hears is this.
        assert receive(b)["text"] == "x" * 2000
        assert receive(a)["text"] == "x" * 2000
    assert saved_messages(site.db) == [("lobby", "alice", "x" * 2000)]


# -- history -----------------------------------------------------------------------


def test_room_page_shows_the_last_messages_from_the_database(site: Site) -> None:
    """A room page renders the last HISTORY_LENGTH saved messages, escaped, oldest first.

    A room without messages shows its no-messages hint.
    """
    texts = ["old %d" % i for i in range(HISTORY_LENGTH + 5)]
    texts[-1] = "<script>alert('x')</script> & more"
    add_messages(site.db, "lobby", "bob", texts)
    alice = logged_in(site, "alice")
    page = alice.get("/rooms/lobby/")
    assert page.status == 200
    shown = re.findall(r'<span class="text">(.*?)</span>', page.text, re.S)
    assert len(shown) == HISTORY_LENGTH
    assert shown[:-1] == texts[-HISTORY_LENGTH:-1]
    # User text is escaped.
    assert shown[-1] == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more"
    assert "<script>alert" not in page.text
    assert re.findall(r'<span class="user">(.*?)</span>', page.text) == ["bob"] * HISTORY_LENGTH
    ids = [int(i) for i in re.findall(r'data-id="(\d+)"', page.text)]
    assert ids == sorted(ids) and len(ids) == HISTORY_LENGTH
    assert 'id="no-messages" class="hint" hidden' in page.text

    # A room without messages says so.
    shell(site.db, "from rooms.models import Room; Room.objects.create(name='Empty', slug='empty')")
    empty = alice.get("/rooms/empty/")
    assert 'id="no-messages" class="hint">' in empty.text
    assert '<li class="message' not in empty.text


def test_a_reconnecting_client_gets_what_it_missed(site: Site) -> None:
    """A socket opened with ?after=<id> first gets the messages saved after it, in order.

    At most the newest HISTORY_LENGTH are replayed; without a valid ?after, none are.
    """
    add_messages(site.db, "lobby", "bob", ["one", "two", "three"])
    ids = [row[0] for row in query(site.db, "SELECT id FROM rooms_message ORDER BY id")]
    alice = logged_in(site, "alice")

    # ?after=<id>: the messages saved after that one, oldest first.
    with socket(site.port, "/rooms/lobby/?after=0", browser=alice) as ws:
        got = [receive(ws) for _ in range(3)]
        assert [(m["user"], m["text"]) for m in got] == [
            ("bob", t) for t in ("one", "two", "three")
        ]
        assert [m["id"] for m in got] == ids
        # Nothing more: the next message is the one sent now.
        say(ws, "and now")
        assert receive(ws)["text"] == "and now"
    with socket(site.port, "/rooms/lobby/?after=%d" % ids[1], browser=alice) as ws:
        assert [receive(ws)["text"] for _ in range(2)] == ["three", "and now"]
        say(ws, "again")
        assert receive(ws)["text"] == "again"

    # Without ?after (or with nonsense), nothing is replayed.
    for path in ("/rooms/lobby/", "/rooms/lobby/?after=-1", "/rooms/lobby/?after=x"):
        with socket(site.port, path, browser=alice) as ws:
            say(ws, "fresh")
            assert receive(ws)["text"] == "fresh"
    # Many missed: the newest HISTORY_LENGTH of them, oldest first.
    add_messages(site.db, "lobby", "bob", ["burst %d" % i for i in range(HISTORY_LENGTH + 2)])
    with socket(site.port, "/rooms/lobby/?after=0", browser=alice) as ws:
        got = [receive(ws)["text"] for _ in range(HISTORY_LENGTH)]
        assert got == ["burst %d" % i for i in range(2, HISTORY_LENGTH + 2)]
        say(ws, "caught up")
        assert receive(ws)["text"] == "caught up"


def test_migrations_match_the_models(tmp_path: Path) -> None:
    """The chatroom's migrations match its models: makemigrations --check finds nothing."""
    manage(tmp_path / "check.sqlite3", "makemigrations", "--check", "--dry-run", "-v", "0")
