"""
End-to-end tests of examples/multichat, the Channels 1.x application: a
real ``twistd -n chanserv`` per test on a real SQLite database (migrated
once per module by the example's ``manage.py``, copied for each test) and,
where a management command must reach the server, a real ``redis-server``.

HTTP goes through urllib with a cookie jar and the real login form;
WebSockets through the ``websockets`` client with the session cookie, as a
browser sends them.  The protocol is the example's: one socket, frames
``{"stream", "payload"}``, the ``rooms`` stream (join, leave, send) and the
``messages`` stream (the data binding of the ``Message`` model).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.e2e.multichat_support import (
    USERS,
    Site,
    chanserv_project,
    copy_database,
    frame,
    make_database,
    manage,
    room_ids,
    running_site,
    saved_messages,
)
from tests.e2e.redis_support import wait_for
from tests.e2e.test_chatroom import Browser, refused, socket
from tests.e2e.test_examples import TIMEOUT

PATH = "/chat/stream/"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("multichat") / "template.sqlite3"
    make_database(chanserv_project(), db)
    return db


@pytest.fixture
def site(template_db: Path, tmp_path: Path) -> Iterator[Site]:
    with running_site(chanserv_project(), template_db, tmp_path) as running:
        yield running


def logged_in(site: Site, username: str) -> Browser:
    browser = Browser(site.port)
    browser.login(username, USERS[username])
    return browser


def connect(site: Site, username: str) -> ClientConnection:
    """A socket of ``username``'s page."""
    return socket(site.port, PATH, browser=logged_in(site, username))


def receive(ws: ClientConnection, timeout: float = TIMEOUT) -> tuple[str, dict[str, Any]]:
    """The next frame: (stream, payload)."""
    data = json.loads(ws.recv(timeout=timeout))
    return data["stream"], data["payload"]


def quiet(ws: ClientConnection, seconds: float = 0.5) -> bool:
    """True if nothing arrives on ``ws`` for ``seconds``."""
    try:
        ws.recv(timeout=seconds)
    except TimeoutError:
        return True
    return False


def rooms(ws: ClientConnection, command: str, room: Any, **more: Any) -> dict[str, Any]:
    """Send a command on the ``rooms`` stream; its answer."""
    ws.send(frame("rooms", {"command": command, "room": room, **more}))
    stream, payload = receive(ws)
    assert stream == "rooms", payload
    return payload


def binding(ws: ClientConnection, action: str, **fields: Any) -> None:
    ws.send(frame("messages", {"action": action, **fields}))


def change(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, which must be on the ``messages`` stream."""
    stream, payload = receive(ws)
    assert stream == "messages", payload
    return payload


def test_pages_need_a_login_and_list_the_rooms_the_user_may_enter(site: Site) -> None:
    """Anonymous pages redirect to login; a user sees the open rooms, staff see all.

    The socket is refused (403) without a login and on any other path.
    """
    anonymous = Browser(site.port)
    response = anonymous.get("/")
    assert response.status == 302
    assert response.headers["location"] == "/accounts/login/?next=/"
    assert refused(site.port, PATH) == 403

    alice = logged_in(site, "alice")
    page = alice.get("/").text
    assert 'data-socket-path="/chat/stream/"' in page
    titles = [t for t in ("Lobby", "Attic", "Staff room") if ">%s</button>" % t in page]
    assert titles == ["Lobby", "Attic"]
    root = logged_in(site, "root")
    assert ">Staff room</button>" in root.get("/").text
    script = alice.get("/static/chat/multichat.js")
    assert script.status == 200 and "new WebSocket(" in script.text
    for path in ("/", "/chat/", "/chat/stream/extra/"):
        assert refused(site.port, path, browser=alice) == 403, path


def test_rooms_join_with_history_leave_and_refuse(site: Site) -> None:
    """Join answers with the title and history; staff-only and unknown rooms are refused.

    After a leave, the room's changes no longer reach the socket.
    """
    ids = room_ids(site.db)
    site.manage("post_message", "Lobby", "welcome", "--user", "bob")
    with connect(site, "alice") as ws:
        joined = rooms(ws, "join", ids["Lobby"])
        assert joined["join"] == ids["Lobby"] and joined["title"] == "Lobby"
        assert [(m["data"]["username"], m["data"]["text"]) for m in joined["messages"]] == [
            ("bob", "welcome")
        ]
        assert rooms(ws, "join", ids["Staff room"])["error"] == "ROOM_ACCESS_DENIED"
        assert rooms(ws, "join", 9999)["error"] == "ROOM_INVALID"
        assert rooms(ws, "join", "Lobby")["error"] == "ROOM_INVALID"
        assert rooms(ws, "dance", ids["Lobby"])["error"] == "UNKNOWN_COMMAND"
        assert rooms(ws, "leave", ids["Lobby"]) == {"leave": ids["Lobby"]}
        # Left: writing there is refused, and nothing of the room arrives.
        binding(ws, "create", data={"room": ids["Lobby"], "text": "gone"})
        assert change(ws)["error"] == "Join the room before you write in it."
        site.manage("post_message", "Lobby", "not for alice")
        assert quiet(ws)
    with connect(site, "root") as ws:
        assert rooms(ws, "join", ids["Staff room"])["title"] == "Staff room"


def test_binding_carries_changes_and_has_permission_guards_them(site: Site) -> None:
    """A create reaches every socket in the room; has_permission refuses the rest.

    A non-member's create, an edit or delete of another's message and bad
    text are refused to the sender alone; the author's own edit and delete
    go out as update and delete.
    """
    ids = room_ids(site.db)
    with connect(site, "alice") as alice, connect(site, "bob") as bob:
        rooms(alice, "join", ids["Lobby"])
        rooms(bob, "join", ids["Lobby"])
        rooms(bob, "join", ids["Attic"])

        binding(alice, "create", data={"room": ids["Lobby"], "text": " hello <b>bob</b> "})
        created = change(bob)
        assert created == change(alice)
        assert created["action"] == "create" and created["model"] == "chat.message"
        assert {k: created["data"][k] for k in ("room", "username", "text")} == {
            "room": ids["Lobby"],
            "username": "alice",
            "text": "hello <b>bob</b>",
        }
        pk = created["pk"]

        # Refused, to the sender only: alice is not in the Attic; bob may
        # not edit or delete alice's message; empty text; unknown pk.
        for sender, action, fields, error in (
            (alice, "create", {"data": {"room": ids["Attic"], "text": "x"}}, "Join the room"),
            (alice, "create", {"data": {"room": "nope", "text": "x"}}, "Join the room"),
            (bob, "update", {"pk": pk, "data": {"text": "bob was here"}}, "your own"),
            (bob, "delete", {"pk": pk}, "your own"),
            (alice, "delete", {"pk": 9999}, "your own"),
            (alice, "create", {"data": {"room": ids["Lobby"], "text": "  "}}, "empty"),
            (alice, "create", {"data": {"room": ids["Lobby"], "text": "x" * 1001}}, "at most"),
        ):
            binding(sender, action, **fields)
            refusal = change(sender)
            assert error in refusal["error"], (action, fields, refusal)
            assert refusal["action"] == action
        assert quiet(alice, 0.2) and quiet(bob, 0.2)

        # The author edits, then deletes: both sockets see each.
        binding(alice, "update", pk=pk, data={"text": "hello again", "user": None})
        for ws in (alice, bob):
            updated = change(ws)
            assert (updated["action"], updated["pk"]) == ("update", pk)
            assert updated["data"]["text"] == "hello again"
            assert updated["data"]["username"] == "alice"  # the user is not the client's to set
        binding(alice, "delete", pk=pk)
        assert change(alice)["action"] == change(bob)["action"] == "delete"
        # The rooms stream's send saves at once, as the 1.x multichat did.
        rooms_send = frame("rooms", {"command": "send", "room": ids["Attic"], "message": "up here"})
        bob.send(rooms_send)
        assert change(bob)["data"]["text"] == "up here"
        assert quiet(alice)
    assert saved_messages(site.db) == [("Attic", "bob", "up here")]


def test_management_command_and_shell_changes_reach_the_sockets(site: Site) -> None:
    """Changes made in other processes (post_message, the ORM in a shell) reach the room.

    They go through the binding over Redis; a bad room or user is a clear error.
    """
    ids = room_ids(site.db)
    with connect(site, "alice") as alice:
        rooms(alice, "join", ids["Lobby"])
        result = site.manage("post_message", "Lobby", "maintenance at noon")
        assert "Saved message" in result.stdout and result.stderr == ""
        announcement = change(alice)
        assert announcement["action"] == "create"
        assert announcement["data"]["user"] is None
        assert announcement["data"]["text"] == "maintenance at noon"

        site.manage("post_message", str(ids["Lobby"]), "by id, as bob", "--user", "bob")
        assert change(alice)["data"]["username"] == "bob"
        site.manage(
            "shell",
            "-v",
            "0",
            "-c",
            "from chat.models import Message\n"
            "m = Message.objects.get(text='maintenance at noon')\n"
            "m.text = 'maintenance at one'\n"
            "m.save()\n",
        )
        updated = change(alice)
        assert (updated["action"], updated["data"]["text"]) == ("update", "maintenance at one")

        for args, error in (
            (["Cellar", "x"], "no room 'Cellar'"),
            (["Lobby", "x", "--user", "nobody"], "no user 'nobody'"),
        ):
            result = site.manage("post_message", *args, check=False)
            assert result.returncode != 0 and error in result.stderr
            assert "Traceback" not in result.stderr
        assert quiet(alice)
    assert [text for _, _, text in saved_messages(site.db)] == [
        "maintenance at one",
        "by id, as bob",
    ]


def test_a_delayed_message_arrives_after_its_delay(site: Site) -> None:
    """send with delay goes through asgi.delay and arrives in the room after the delay.

    A bad delay is refused; nothing is saved before the time; a message
    whose room is deleted meanwhile is dropped with a warning in the log.
    """
    ids = room_ids(site.db)
    with connect(site, "alice") as alice, connect(site, "bob") as bob:
        rooms(alice, "join", ids["Lobby"])
        rooms(bob, "join", ids["Lobby"])
        for delay in (0, -1, "2", True, 3601):
            answer = rooms(alice, "send", ids["Lobby"], message="x", delay=delay)
            assert answer["error"] == "DELAY_INVALID", delay
        start = time.monotonic()
        answer = rooms(alice, "send", ids["Lobby"], message="tea time", delay=2)
        assert answer == {"scheduled": ids["Lobby"], "delay": 2}
        assert quiet(bob, 1.5)
        assert saved_messages(site.db) == []
        arrived = change(bob)
        elapsed = time.monotonic() - start
        assert arrived["action"] == "create"
        assert (arrived["data"]["username"], arrived["data"]["text"]) == ("alice", "tea time")
        assert 1.9 <= elapsed < 2 + TIMEOUT, elapsed
        assert change(alice)["pk"] == arrived["pk"]

        # The room goes away while a message waits for it: when its time
        # comes the message is dropped, and the log says so.
        rooms(alice, "join", ids["Attic"])
        answer = rooms(alice, "send", ids["Attic"], message="too late", delay=2)
        assert answer == {"scheduled": ids["Attic"], "delay": 2}
        site.manage(
            "shell",
            "-v",
            "0",
            "-c",
            "from chat.models import Room\nRoom.objects.filter(title='Attic').delete()",
        )
        wait_for(lambda: "Delayed message dropped" in site.server.output(), what="the drop")
        assert quiet(alice, 0.2)
    assert saved_messages(site.db) == [("Lobby", "alice", "tea time")]


def test_post_message_with_the_in_memory_layer_saves_and_warns(
    template_db: Path, tmp_path: Path
) -> None:
    """With the in-memory layer, post_message saves the message and says open pages miss it."""
    db = tmp_path / "db.sqlite3"
    copy_database(template_db, db)
    result = manage(chanserv_project(), db, "post_message", "Attic", "quiet news")
    assert "Saved message" in result.stdout
    assert "in-memory channel layer cannot reach the server" in result.stderr
    assert saved_messages(db) == [("Attic", None, "quiet news")]


def test_migrations_match_the_models(tmp_path: Path) -> None:
    """The example's migrations match its models: makemigrations --check finds nothing."""
    manage(chanserv_project(), tmp_path / "check.sqlite3", "makemigrations", "--check", "--dry-run")
