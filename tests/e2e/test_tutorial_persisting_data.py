"""
End-to-end: examples/persisting_data, the tutorial's "Persisting Data"
chat, under a real ``twistd -n chanserv`` with its own SQLite database.

The text: "a chat server that expects you to pass a chatroom name in the
path of your WebSocket request and a query string with your username";
the username is kept in the channel session and messages are JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosedOK

from tests.e2e.harness import TwistdProcess
from tests.e2e.tutorial_support import (
    TIMEOUT,
    Browser,
    drain,
    migrate,
    query,
    recv,
    start,
    stop_cleanly,
    ws,
)

EXAMPLE = "persisting_data"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp(EXAMPLE) / "db.sqlite3"
    migrate(EXAMPLE, db)
    return db


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[TwistdProcess]:
    proc = start(EXAMPLE, db, args=["--threads", "4"])
    try:
        yield proc
        stop_cleanly(proc)
    finally:
        proc.__exit__()


def test_page_is_served_by_a_django_view(server: TwistdProcess) -> None:
    """The persisting_data example's page is a Django view with room, name and JSON chat."""
    status, _, page = Browser(server.port).open("/")
    assert status == 200
    for needle in ('id="room"', 'id="username"', 'id="messages"', "new WebSocket(", "JSON.parse"):
        assert needle in page


def test_room_from_path_username_from_query_string_json_messages(
    server: TwistdProcess, db: Path
) -> None:
    """Sockets join the room in their path; each message carries its sender's username.

    The username from the connect's query string is kept in the channel session.
    """
    port = server.port
    with (
        ws(port, "/lobby/?username=alice") as alice,
        ws(port, "/lobby/?username=b%6Fb+jr") as bob,
        ws(port, "/kitchen/?username=carol") as carol,
    ):
        alice.send("hello")
        expected = {"text": "hello", "username": "alice"}
        assert json.loads(recv(alice)) == expected
        assert json.loads(recv(bob)) == expected

        # The username of each socket is its own, from its channel session
        # (the query string is only in the connect message).
        bob.send("hi alice")
        expected = {"text": "hi alice", "username": "bob jr"}
        assert json.loads(recv(alice)) == expected
        assert json.loads(recv(bob)) == expected

        # Another room sees none of it: carol's first message is her own.
        carol.send("anyone?")
        assert json.loads(recv(carol)) == {"text": "anyone?", "username": "carol"}

        # The channel sessions are Django sessions in the database.
        keys = [k for (k,) in query(db, "SELECT session_key FROM django_session")]
        assert len([k for k in keys if k.startswith("chn")]) >= 3

        # After alice leaves (ws_disconnect), the room goes on without her.
        alice.close()
        with ws(port, "/lobby/?username=dave") as dave:
            dave.send("hi all")
            expected = {"text": "hi all", "username": "dave"}
            assert json.loads(recv(bob)) == expected
            assert json.loads(recv(dave)) == expected


def test_without_username_the_socket_is_accepted_then_closed(server: TwistdProcess) -> None:
    """A socket without ?username= is accepted, then closed with 1000."""
    with ws(server.port, "/lobby/?name=alice") as nameless:
        with pytest.raises(ConnectionClosedOK):
            nameless.recv(timeout=TIMEOUT)
        assert nameless.close_code == 1000


def test_a_path_that_is_no_room_joins_nothing(server: TwistdProcess) -> None:
    """A socket on a path that is no room is accepted but joins nothing; its messages drop."""
    port = server.port
    with (
        ws(port, "/lobby/?username=erin") as erin,
        ws(port, "/lobby/extra/?username=frank") as frank,
        ws(port, "/?username=grace") as grace,
    ):
        # Not routed to ws_connect: the default consumer accepts the socket
        # and the default receive consumer drops its messages.
        frank.send("lost")
        grace.send("lost too")
        erin.send("still here")
        assert json.loads(recv(erin)) == {"text": "still here", "username": "erin"}
        erin.send("again")  # a round trip after the first broadcast went out
        assert json.loads(recv(erin)) == {"text": "again", "username": "erin"}
        assert drain(frank) == []
        assert drain(grace) == []
