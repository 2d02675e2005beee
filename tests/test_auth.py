"""
chanserv.auth: the user decorators and transfer_user, with real users and
sessions in the database, and the tutorial's Authentication and Enforcing
Ordering consumers.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends import db as db_backend

from chanserv import Group
from chanserv.auth import (
    channel_and_http_session_user_from_http,
    channel_session_user,
    channel_session_user_from_http,
    http_session_user,
    transfer_user,
)
from chanserv.message import Message
from chanserv.sessions import enforce_ordering, session_for_reply_channel
from tests.consumer_support import (  # noqa: F401
    db_fixture,
    layer_fixture,
    login_session,
    replies,
    reply_channel_name,
    run_consumer,
)

pytestmark = pytest.mark.usefixtures("db")


def make_user(username: str) -> Any:
    # No password hashing: a raw value is enough for the session hash.
    return User.objects.create(username=username, password="raw$" + username)


def connect(reply: str, key: str | None = None, query: bytes = b"", **extra: Any) -> dict[str, Any]:
    headers = [[b"host", b"testserver"]]
    if key is not None:
        headers.append([b"cookie", ("%s=%s" % (settings.SESSION_COOKIE_NAME, key)).encode()])
    content = {
        "reply_channel": reply,
        "path": "/",
        "headers": headers,
        "query_string": query,
        "order": 0,
    }
    content.update(extra)
    return content


def receive(reply: str, order: int, text: str = "") -> dict[str, Any]:
    return {"reply_channel": reply, "path": "/", "order": order, "text": text}


# -- transfer_user -----------------------------------------------------------------


def test_transfer_user_copies_the_three_keys() -> None:
    """transfer_user copies the user id, backend and hash keys, and nothing else."""
    source = {SESSION_KEY: "1", BACKEND_SESSION_KEY: "b", HASH_SESSION_KEY: "h", "other": 1}
    target: dict[str, Any] = {}
    transfer_user(source, target)
    assert target == {SESSION_KEY: "1", BACKEND_SESSION_KEY: "b", HASH_SESSION_KEY: "h"}


@pytest.mark.parametrize("missing", [SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY])
def test_transfer_user_copies_nothing_from_a_partial_login(missing: str) -> None:
    """transfer_user copies nothing when any of the three login keys is missing."""
    source = {SESSION_KEY: "1", BACKEND_SESSION_KEY: "b", HASH_SESSION_KEY: "h"}
    del source[missing]
    target: dict[str, Any] = {"kept": True}
    transfer_user(source, target)
    assert target == {"kept": True}


# -- http_session_user ---------------------------------------------------------------


def run_http_user(layer: Any, content: dict[str, Any]) -> Message:
    @http_session_user
    def consumer(message: Message) -> None:
        pass

    return run_consumer(consumer, "websocket.connect", content, layer)


def test_http_session_user_from_the_cookie(layer: Any) -> None:
    """http_session_user sets message.user from the session named by the cookie."""
    alice = make_user("alice")
    message = run_http_user(layer, connect(reply_channel_name(), login_session(alice)))
    assert message.user == alice  # type: ignore[attr-defined]


def test_http_session_user_from_the_session_key_parameter(layer: Any) -> None:
    """http_session_user sets message.user from a session_key query parameter."""
    alice = make_user("alice")
    query = ("session_key=%s" % login_session(alice)).encode()
    message = run_http_user(layer, connect(reply_channel_name(), query=query))
    assert message.user == alice  # type: ignore[attr-defined]


def test_http_session_user_anonymous_without_a_session(layer: Any) -> None:
    """Without a session, http_session_user gives no session and an AnonymousUser."""
    message = run_http_user(layer, connect(reply_channel_name()))
    assert message.http_session is None  # type: ignore[attr-defined]
    assert isinstance(message.user, AnonymousUser)  # type: ignore[attr-defined]


def test_http_session_user_anonymous_when_not_logged_in(layer: Any) -> None:
    """A session without a login gives http_session_user an AnonymousUser."""
    session = db_backend.SessionStore()
    session["cart"] = []
    session.save()
    message = run_http_user(layer, connect(reply_channel_name(), session.session_key))
    assert isinstance(message.user, AnonymousUser)  # type: ignore[attr-defined]


def test_http_session_user_anonymous_after_a_password_change(layer: Any) -> None:
    """A login whose password hash no longer matches gives an AnonymousUser."""
    alice = make_user("alice")
    key = login_session(alice)
    alice.password = "raw$changed"
    alice.save()
    message = run_http_user(layer, connect(reply_channel_name(), key))
    assert isinstance(message.user, AnonymousUser)  # type: ignore[attr-defined]


# -- channel_session_user and the *_from_http decorators ----------------------------------


def test_channel_session_user_anonymous_without_a_login(layer: Any) -> None:
    """channel_session_user gives an AnonymousUser when the channel session has no login."""

    @channel_session_user
    def consumer(message: Message) -> None:
        pass

    message = run_consumer(consumer, "websocket.receive", receive(reply_channel_name(), 1), layer)
    assert isinstance(message.user, AnonymousUser)  # type: ignore[attr-defined]


def test_user_follows_the_socket_from_connect_to_disconnect(layer: Any) -> None:
    """The login copied on connect gives the same user on later messages of the socket."""
    alice = make_user("alice")
    reply = reply_channel_name()
    users = []

    @channel_session_user_from_http
    def ws_connect(message: Message) -> None:
        users.append(message.user)  # type: ignore[attr-defined]

    @channel_session_user
    def ws_other(message: Message) -> None:
        users.append(message.user)  # type: ignore[attr-defined]

    run_consumer(ws_connect, "websocket.connect", connect(reply, login_session(alice)), layer)
    channel = session_for_reply_channel(reply)
    assert channel[SESSION_KEY] == str(alice.pk)
    run_consumer(ws_other, "websocket.receive", receive(reply, 1), layer)
    run_consumer(ws_other, "websocket.disconnect", receive(reply, 2), layer)
    assert users == [alice, alice, alice]


def test_from_http_on_a_later_message_uses_the_channel_login(layer: Any) -> None:
    """channel_session_user_from_http on a later message uses the login stored on connect."""
    alice = make_user("alice")
    reply = reply_channel_name()
    users = []

    @channel_session_user_from_http
    def consumer(message: Message) -> None:
        users.append(message.user)  # type: ignore[attr-defined]

    run_consumer(consumer, "websocket.connect", connect(reply, login_session(alice)), layer)
    run_consumer(consumer, "websocket.receive", receive(reply, 1), layer)
    assert users == [alice, alice]


def test_channel_and_http_session_user_from_http(layer: Any) -> None:
    """channel_and_http_session_user_from_http gives user and HTTP session on every message."""
    alice = make_user("alice")
    key = login_session(alice)
    reply = reply_channel_name()
    seen = []

    @channel_and_http_session_user_from_http
    def consumer(message: Message) -> None:
        seen.append((message.user, message.http_session.session_key))  # type: ignore[attr-defined]

    run_consumer(consumer, "websocket.connect", connect(reply, key), layer)
    run_consumer(consumer, "websocket.receive", receive(reply, 1), layer)
    assert seen == [(alice, key), (alice, key)]


def test_user_decorators_on_methods(layer: Any) -> None:
    """The user decorators work on consumer methods."""
    alice = make_user("alice")
    reply = reply_channel_name()

    class Consumer:
        def __init__(self) -> None:
            self.users: list[Any] = []

        @channel_session_user_from_http
        def connect(self, message: Message) -> None:
            self.users.append(message.user)  # type: ignore[attr-defined]

        @channel_session_user
        def receive(self, message: Message) -> None:
            self.users.append(message.user)  # type: ignore[attr-defined]

    consumer = Consumer()
    run_consumer(consumer.connect, "websocket.connect", connect(reply, login_session(alice)), layer)
    run_consumer(consumer.receive, "websocket.receive", receive(reply, 1), layer)
    assert consumer.users == [alice, alice]


# -- the tutorial: Authentication ---------------------------------------------------------


@channel_session_user_from_http
def ws_add(message: Message) -> None:
    message.reply_channel.send({"accept": True})  # type: ignore[union-attr]
    Group("chat-%s" % message.user.username[0]).add(message.reply_channel)  # type: ignore[attr-defined,arg-type]


@channel_session_user
def ws_message(message: Message) -> None:
    Group("chat-%s" % message.user.username[0]).send({"text": message["text"]})  # type: ignore[attr-defined]


@channel_session_user
def ws_disconnect(message: Message) -> None:
    Group("chat-%s" % message.user.username[0]).discard(message.reply_channel)  # type: ignore[attr-defined,arg-type]


def test_tutorial_authentication(layer: Any) -> None:
    """The tutorial's Authentication consumers group sockets by the user's first letter."""
    sockets = {}
    for name in ("alice", "adam", "bob"):
        reply = sockets[name] = reply_channel_name()
        run_consumer(
            ws_add, "websocket.connect", connect(reply, login_session(make_user(name))), layer
        )
        assert replies(layer, reply) == [{"accept": True}]
    run_consumer(ws_message, "websocket.receive", receive(sockets["alice"], 1, "hi"), layer)
    assert replies(layer, sockets["adam"]) == [{"text": "hi"}]
    assert replies(layer, sockets["alice"]) == [{"text": "hi"}]
    assert replies(layer, sockets["bob"]) == []
    run_consumer(ws_disconnect, "websocket.disconnect", receive(sockets["adam"], 2), layer)
    assert sorted(layer.group_channels("chat-a")) == [sockets["alice"]]


# -- the tutorial: Enforcing Ordering ------------------------------------------------------


@enforce_ordering
@channel_session_user_from_http
def ordered_add(message: Message) -> None:
    message.channel_session["sent"] = 0  # type: ignore[attr-defined]
    Group("chat").add(message.reply_channel)  # type: ignore[arg-type]
    message.reply_channel.send({"accept": True})  # type: ignore[union-attr]


@enforce_ordering
@channel_session_user
def ordered_message(message: Message) -> None:
    message.channel_session["sent"] = message.channel_session["sent"] + 1  # type: ignore[attr-defined]
    Group("chat").send(
        {"text": "%s: %s" % (message.channel_session["sent"], message["text"])}  # type: ignore[attr-defined]
    )


@channel_session_user
def ordered_disconnect(message: Message) -> None:
    Group("chat").discard(message.reply_channel)  # type: ignore[arg-type]


def test_tutorial_enforcing_ordering(layer: Any, monkeypatch: Any) -> None:
    """The tutorial's Enforcing Ordering consumers run an overtaking message after its
    predecessor and keep the login.
    """
    from chanserv import locks, ordering

    monkeypatch.setattr(ordering, "LOCAL_WAIT", 0.0)
    monkeypatch.setattr(locks, "MAX_GAP_WATCHERS", 0)
    alice = make_user("alice")
    reply = reply_channel_name()
    run_consumer(ordered_add, "websocket.connect", connect(reply, login_session(alice)), layer)
    assert replies(layer, reply) == [{"accept": True}]
    # 2 overtakes 1: it waits, then runs after 1.
    run_consumer(ordered_message, "websocket.receive", receive(reply, 2, "second"), layer)
    run_consumer(ordered_message, "websocket.receive", receive(reply, 1, "first"), layer)
    name, requeued = layer.receive(["websocket.receive"])
    run_consumer(ordered_message, name, requeued, layer)
    assert replies(layer, reply) == [{"text": "1: first"}, {"text": "2: second"}]
    run_consumer(ordered_disconnect, "websocket.disconnect", receive(reply, 3), layer)
    assert layer.group_channels("chat") == []
    assert session_for_reply_channel(reply)[SESSION_KEY] == str(alice.pk)
