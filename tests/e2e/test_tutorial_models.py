"""
End-to-end: examples/models, the tutorial's "Models" chat, under a real
``twistd -n chanserv`` with its own SQLite database (read here with
:mod:`sqlite3`).

The text: every message goes through the ``chat-messages`` channel, whose
``msg_consumer`` saves it as a ``ChatMessage`` and broadcasts it to the
room, "no matter where it's saved from": a socket, a view, or a management
command run via cron -- the last one only over a layer that crosses
processes (Redis); with the in-memory layer the command refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import TwistdProcess
from tests.e2e.tutorial_support import (
    Browser,
    drain,
    manage,
    migrate,
    query,
    recv,
    start,
    stop_cleanly,
    ws,
)
from tests.redisserver import RedisServer

EXAMPLE = "models"


def saved(db: Path, room: str) -> list[str]:
    rows = query(db, "SELECT message FROM chatapp_chatmessage WHERE room = ? ORDER BY id", room)
    return [message for (message,) in rows]


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


def test_migration_creates_the_chatmessage_table(db: Path) -> None:
    """The models example's migration creates chatmessage: id, room, message, created."""
    columns = {row[1] for row in query(db, "PRAGMA table_info(chatapp_chatmessage)")}
    assert {"id", "room", "message", "created"} <= columns


def test_socket_messages_are_saved_then_broadcast(server: TwistdProcess, db: Path) -> None:
    """A socket message is saved before it is broadcast, and only to its own room."""
    port = server.port
    with ws(port, "/lobby/") as one, ws(port, "/lobby/") as two, ws(port, "/attic/") as other:
        one.send("first")
        assert recv(one) == recv(two) == "first"
        # msg_consumer saves before it broadcasts: the row is there already.
        assert saved(db, "lobby") == ["first"]
        two.send("second")
        assert recv(one) == recv(two) == "second"
        other.send("upstairs")
        assert recv(other) == "upstairs"
        one.send("third")
        assert recv(one) == recv(two) == "third"
        assert drain(other) == []
    assert saved(db, "lobby") == ["first", "second", "third"]
    assert saved(db, "attic") == ["upstairs"]


def test_a_view_sends_to_chat_messages_too(server: TwistdProcess, db: Path) -> None:
    """A message POSTed by the room's form reaches its sockets, is saved and listed.

    The view takes only POST (405 otherwise) and only with a CSRF token (403).
    """
    browser = Browser(server.port)
    with ws(server.port, "/kitchen/") as listener:
        status, url, page = browser.submit(
            "/rooms/kitchen/", {"message": "from a form"}, action="/rooms/kitchen/post/"
        )
        assert status == 200 and url.endswith("/rooms/kitchen/")
        assert recv(listener) == "from a form"
    assert saved(db, "kitchen") == ["from a form"]
    # The room page lists the stored messages.
    status, _, page = browser.open("/rooms/kitchen/")
    assert status == 200
    assert '<li class="history">from a form</li>' in page
    assert "new WebSocket(" in page
    # The view only takes POST, with the CSRF token.
    assert browser.open("/rooms/kitchen/post/")[0] == 405
    assert Browser(server.port).open("/rooms/kitchen/post/", {"message": "forged"})[0] == 403
    assert saved(db, "kitchen") == ["from a form"]


def test_management_command_refuses_the_in_memory_layer(db: Path) -> None:
    """post_message refuses the in-memory layer with a clear error and sends nothing."""
    result = manage(EXAMPLE, db, "post_message", "lobby", "from cron", check=False)
    assert result.returncode != 0
    assert "only carries messages inside one process" in result.stderr
    assert "CHANSERV_EXAMPLE_REDIS" in result.stderr
    assert "Traceback" not in result.stderr
    assert "from cron" not in saved(db, "lobby")
    help_text = manage(EXAMPLE, db, "help", "post_message").stdout
    assert "Redis" in help_text and "in-memory" in help_text


def test_management_command_reaches_the_server_over_redis(tmp_path: Path) -> None:
    """Over Redis, post_message from another process reaches the server's sockets, saved."""
    db = tmp_path / "db.sqlite3"
    migrate(EXAMPLE, db)
    redis = RedisServer()
    redis.start()
    try:
        env = {"CHANSERV_EXAMPLE_REDIS": redis.url}
        proc = start(EXAMPLE, db, env=env)
        try:
            assert "RedisChannelLayer" in proc.output()
            with ws(proc.port, "/lobby/") as listener:
                result = manage(EXAMPLE, db, "post_message", "lobby", "from cron", env=env)
                assert "Sent to chat-messages" in result.stdout
                assert recv(listener) == "from cron"
                assert saved(db, "lobby") == ["from cron"]
                # Sockets go through chat-messages over Redis as well.
                listener.send("from a socket")
                assert recv(listener) == "from a socket"
            assert saved(db, "lobby") == ["from cron", "from a socket"]
            stop_cleanly(proc)
        finally:
            proc.__exit__()
    finally:
        redis.stop()
