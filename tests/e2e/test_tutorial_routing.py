"""
End-to-end: examples/routing, the tutorial's "Routing" section, under a
real ``twistd -n chanserv`` with its own SQLite database.

The text: ``include(chat_routing, path=r"^/chat")`` chops ``/chat`` off the
path before its routes match, ``room_name`` comes to the consumer as a
keyword argument, and ``http_routing`` takes only ``POST /poll/``: the rest
of HTTP falls through to the views.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.harness import TwistdProcess
from tests.e2e.tutorial_support import Browser, drain, migrate, recv, start, stop_cleanly, ws

EXAMPLE = "routing"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwistdProcess]:
    db = tmp_path_factory.mktemp(EXAMPLE) / "db.sqlite3"
    migrate(EXAMPLE, db)
    proc = start(EXAMPLE, db)
    try:
        yield proc
        stop_cleanly(proc)
    finally:
        proc.__exit__()


def post(port: int, path: str, fields: dict[str, str]) -> tuple[int, str]:
    status, _, body = Browser(port).open(path, fields)
    return status, body


def test_chat_rooms_come_from_the_path_under_chat(server: TwistdProcess) -> None:
    """Sockets on /chat/<room>/ join that room only; the room goes on after one leaves."""
    port = server.port
    with (
        ws(port, "/chat/lobby/") as one,
        ws(port, "/chat/lobby/") as two,
        ws(port, "/chat/Room_2/") as other,
    ):
        one.send("hello lobby")
        assert recv(one) == recv(two) == "hello lobby"
        other.send("hello room 2")
        assert recv(other) == "hello room 2"
        two.send("lobby again")  # a round trip after room 2's message went out
        assert recv(one) == recv(two) == "lobby again"
        assert drain(other) == []

        # chat_disconnect: the room goes on without the socket that left.
        one.close()
        with ws(port, "/chat/lobby/") as three:
            three.send("who is here?")
            assert recv(two) == recv(three) == "who is here?"


@pytest.mark.parametrize(
    "path",
    [
        "/lobby/",  # no /chat prefix
        "/chat/lobby",  # the routes want the final slash
        "/chat/a/b/",
        "/chat/lo-bby/",  # not [a-zA-Z0-9_]
        "/chatlobby/",
        "/chatty/",
        "/chat/",
        "/poll/",
    ],
)
def test_other_paths_join_no_room(server: TwistdProcess, path: str) -> None:
    """A socket on a path other than /chat/<room>/ is accepted but is in no room."""
    port = server.port
    with ws(port, "/chat/lobby/") as member, ws(port, path) as outsider:
        # Accepted by the default consumer; its messages go nowhere and it
        # hears nothing of the rooms.
        outsider.send("hello?")
        member.send("members only")
        assert recv(member) == "members only"
        assert post(port, "/poll/", {"room": "lobby", "text": "posted"})[0] == 200
        assert recv(member) == "posted"
        member.send("once more")
        assert recv(member) == "once more"
        assert drain(outsider) == []


def test_post_poll_sends_to_the_room(server: TwistdProcess) -> None:
    """POST /poll/ sends its text to the named room only; a bad room name gets 400."""
    port = server.port
    with ws(port, "/chat/lobby/") as lobby, ws(port, "/chat/kitchen/") as kitchen:
        status, body = post(port, "/poll/", {"room": "lobby", "text": "no socket needed"})
        assert status == 200
        assert json.loads(body) == {"room": "lobby", "sent": "no socket needed"}
        assert recv(lobby) == "no socket needed"
        kitchen.send("kitchen only")
        assert recv(kitchen) == "kitchen only"
        assert drain(kitchen) == []

    status, body = post(port, "/poll/", {"room": "no room!", "text": "x"})
    assert status == 400 and "error" in json.loads(body)


def test_other_http_requests_fall_through_to_the_views(server: TwistdProcess) -> None:
    """HTTP other than POST /poll/ falls through to the Django views (404 where none)."""
    browser = Browser(server.port)
    status, _, page = browser.open("/")
    assert status == 200 and "new WebSocket(" in page and "/chat/" in page
    # GET /poll/: not POST, so not poll_consumer; the views have no /poll/.
    assert browser.open("/poll/")[0] == 404
    # POST elsewhere: not /poll/, so the views (no such page).
    assert browser.open("/poll/more/", {"room": "lobby", "text": "x"})[0] == 404
    assert browser.open("/chat/lobby/")[0] == 404
