"""
chanserv.sessions: channel_session, http_session, channel_and_http_session
and session_for_reply_channel, on a real database and the in-memory layer.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from django.conf import settings
from django.contrib.sessions.backends import cache as cache_backend
from django.contrib.sessions.backends import db as db_backend
from django.contrib.sessions.models import Session
from django.test import override_settings

from chanserv import Group
from chanserv.message import Message
from chanserv.sessions import (
    channel_and_http_session,
    channel_session,
    http_session,
    session_for_reply_channel,
)
from tests import consumer_support
from tests.consumer_support import (  # noqa: F401
    db_fixture,
    layer_fixture,
    receive_all,
    replies,
    reply_channel_name,
    run_consumer,
)

pytestmark = pytest.mark.usefixtures("db")


def connect_message(reply: str, **extra: Any) -> dict[str, Any]:
    content = {
        "reply_channel": reply,
        "path": "/chat/",
        "headers": [[b"host", b"testserver"]],
        "query_string": b"",
        "order": 0,
    }
    content.update(extra)
    return content


def cookie_header(key: str) -> list[list[bytes]]:
    return [
        [b"host", b"testserver"],
        [b"cookie", ("%s=%s" % (settings.SESSION_COOKIE_NAME, key)).encode()],
    ]


# -- session_for_reply_channel ---------------------------------------------------


def test_key_is_derived_from_the_reply_channel() -> None:
    """A reply channel's session key is 'chn' + 29 hex digits of its name's SHA-1, unsaved."""
    name = "daphne.response.abcdefghij!klmnopqrstuv"
    session = session_for_reply_channel(name)
    expected = "chn" + hashlib.sha1(name.encode()).hexdigest()[:29]
    assert session.session_key == expected
    assert len(expected) == 32
    assert isinstance(session, db_backend.SessionStore)
    # Loaded already, and not written.
    assert session.accessed
    assert not Session.objects.filter(session_key=expected).exists()


def test_key_from_a_channel_object(layer: Any) -> None:
    """session_for_reply_channel gives a Channel object the same key as its name."""
    from chanserv import Channel

    name = reply_channel_name()
    session = session_for_reply_channel(Channel(name, channel_layer=layer))
    assert session.session_key == session_for_reply_channel(name).session_key


@override_settings(CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.cache")
def test_channel_session_engine_setting_wins() -> None:
    """CHANNEL_SESSION_ENGINE, when set, picks the channel session's backend."""
    assert isinstance(session_for_reply_channel("x!y"), cache_backend.SessionStore)


@override_settings(CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
def test_signed_cookies_refused_naming_channel_session_engine() -> None:
    """A signed-cookies CHANNEL_SESSION_ENGINE raises ValueError naming that setting."""
    with pytest.raises(ValueError, match=r"CHANNEL_SESSION_ENGINE = 'django\.contrib\.sessions"):
        session_for_reply_channel("x!y")


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
def test_signed_cookies_refused_naming_session_engine() -> None:
    """A signed-cookies SESSION_ENGINE (the fallback) raises ValueError naming that setting."""
    with pytest.raises(ValueError, match=r"SESSION_ENGINE = 'django[^\n]*signed_cookies"):
        session_for_reply_channel("x!y")


# -- channel_session -------------------------------------------------------------


def test_channel_session_persists_between_messages(layer: Any) -> None:
    """channel_session keeps values set by one consumer for later messages on the socket."""
    reply = reply_channel_name()
    seen = []

    @channel_session
    def first(message: Message) -> None:
        message.channel_session["room"] = "lobby"

    @channel_session
    def second(message: Message) -> None:
        seen.append(message.channel_session["room"])

    run_consumer(first, "websocket.connect", connect_message(reply), layer)
    run_consumer(second, "websocket.receive", {"reply_channel": reply, "text": "hi"}, layer)
    assert seen == ["lobby"]
    assert session_for_reply_channel(reply)["room"] == "lobby"


def test_channel_session_is_created_on_first_use(layer: Any) -> None:
    """channel_session creates the session in the store on a socket's first message."""
    reply = reply_channel_name()

    @channel_session
    def consumer(message: Message) -> None:
        pass

    run_consumer(consumer, "websocket.connect", connect_message(reply), layer)
    key = session_for_reply_channel(reply).session_key
    assert Session.objects.filter(session_key=key).exists()


def test_disconnect_of_a_socket_without_session_creates_none(layer: Any) -> None:
    """A disconnect on a socket with no channel session sees an empty one and creates none."""
    reply = reply_channel_name()
    seen = []

    @channel_session
    def disconnect(message: Message) -> None:
        seen.append(dict(message.channel_session))

    message = {"reply_channel": reply, "path": "/", "code": 1000, "order": 1}
    run_consumer(disconnect, "websocket.disconnect", message, layer)
    assert seen == [{}]
    key = session_for_reply_channel(reply).session_key
    assert not Session.objects.filter(session_key=key).exists()


def test_channel_session_needs_a_reply_channel(layer: Any) -> None:
    """channel_session raises ValueError for a message without a reply_channel."""

    @channel_session
    def consumer(message: Message) -> None:
        raise AssertionError("must not run")

    with pytest.raises(ValueError, match="No reply_channel"):
        run_consumer(consumer, "chat-messages", {"text": "x"}, layer)


def test_channel_session_needs_a_message() -> None:
    """channel_session raises ValueError when called without a Message."""

    @channel_session
    def consumer(something: Any) -> None:
        raise AssertionError("must not run")

    with pytest.raises(ValueError, match=r"^channel_session called without Message instance$"):
        consumer({"reply_channel": "x!y"})


def test_channel_session_on_a_method(layer: Any) -> None:
    """channel_session works on a consumer method, finding the message after self."""
    reply = reply_channel_name()

    class Consumer:
        @channel_session
        def connect(self, message: Message) -> None:
            message.channel_session["who"] = self.__class__.__name__

    run_consumer(Consumer().connect, "websocket.connect", connect_message(reply), layer)
    assert session_for_reply_channel(reply)["who"] == "Consumer"


def test_nested_channel_session_is_one_session_saved_once(layer: Any, monkeypatch: Any) -> None:
    """Nested channel_session decorators share one session, created then saved once."""
    reply = reply_channel_name()
    sessions = []
    saves = []
    original = db_backend.SessionStore.save

    def counting_save(self: Any, must_create: bool = False) -> None:
        saves.append(must_create)
        original(self, must_create=must_create)

    monkeypatch.setattr(db_backend.SessionStore, "save", counting_save)

    @channel_session
    @channel_session
    def consumer(message: Message) -> None:
        sessions.append(message.channel_session)
        message.channel_session["a"] = 1

    run_consumer(consumer, "websocket.connect", connect_message(reply), layer)
    assert len(sessions) == 1
    assert saves == [True, False]  # created, then saved once
    assert session_for_reply_channel(reply)["a"] == 1


def test_in_place_change_of_a_nested_value_is_saved(layer: Any) -> None:
    """In-place changes to nested values of the channel session are saved."""
    reply = reply_channel_name()

    @channel_session
    def connect(message: Message) -> None:
        message.channel_session["prefs"] = {"theme": "light", "tags": []}

    @channel_session
    def receive(message: Message) -> None:
        # Neither sets modified: Channels 1.x lost both changes (channels #724).
        message.channel_session["prefs"]["theme"] = "dark"
        message.channel_session["prefs"]["tags"].append("x")

    run_consumer(connect, "websocket.connect", connect_message(reply), layer)
    run_consumer(receive, "websocket.receive", {"reply_channel": reply, "text": ""}, layer)
    assert session_for_reply_channel(reply)["prefs"] == {"theme": "dark", "tags": ["x"]}


def test_unchanged_session_is_not_saved_again(layer: Any, monkeypatch: Any) -> None:
    """A channel session that was only read is not saved again."""
    reply = reply_channel_name()

    @channel_session
    def connect(message: Message) -> None:
        message.channel_session["n"] = {"deep": 1}

    run_consumer(connect, "websocket.connect", connect_message(reply), layer)
    saves = []
    monkeypatch.setattr(db_backend.SessionStore, "save", lambda self, **kw: saves.append(kw))

    @channel_session
    def reader(message: Message) -> None:
        assert message.channel_session["n"]["deep"] == 1

    run_consumer(reader, "websocket.receive", {"reply_channel": reply}, layer)
    assert saves == []


def test_channel_session_saved_when_the_consumer_raises(layer: Any) -> None:
    """The channel session is saved even when the consumer raises."""
    reply = reply_channel_name()

    @channel_session
    def consumer(message: Message) -> None:
        message.channel_session["before"] = "error"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_consumer(consumer, "websocket.connect", connect_message(reply), layer)
    assert session_for_reply_channel(reply)["before"] == "error"


@override_settings(CHANNEL_SESSION_ENGINE="tests.consumer_support")
def test_create_error_means_consume_later(layer: Any, monkeypatch: Any) -> None:
    """When the session cannot be created, the message is requeued with __retries__ set,
    and consumed once creation succeeds.
    """
    reply = reply_channel_name()
    monkeypatch.setattr(consumer_support.SessionStore, "fail_create", True)
    ran = []

    @channel_session
    def consumer(message: Message) -> None:
        ran.append(message)

    run_consumer(consumer, "websocket.connect", connect_message(reply), layer)
    assert ran == []
    [requeued] = receive_all(layer, "websocket.connect")
    assert requeued["__retries__"] == 1
    assert requeued["reply_channel"] == reply
    # Once the creation succeeds, the requeued message is consumed.
    monkeypatch.setattr(consumer_support.SessionStore, "fail_create", False)
    run_consumer(consumer, "websocket.connect", requeued, layer)
    assert len(ran) == 1


@override_settings(CHANNEL_SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
def test_channel_session_refuses_signed_cookies(layer: Any) -> None:
    """channel_session refuses a signed-cookies engine (ValueError); the consumer never runs."""

    @channel_session
    def consumer(message: Message) -> None:
        raise AssertionError("must not run")

    with pytest.raises(ValueError, match="CHANNEL_SESSION_ENGINE"):
        run_consumer(consumer, "websocket.connect", connect_message(reply_channel_name()), layer)


def test_flushed_channel_session_is_not_recreated_under_another_key(layer: Any) -> None:
    """A flushed channel session is deleted and not saved again under a new key."""
    reply = reply_channel_name()

    @channel_session
    def connect(message: Message) -> None:
        message.channel_session["x"] = 1

    @channel_session
    def logout(message: Message) -> None:
        message.channel_session.flush()

    run_consumer(connect, "websocket.connect", connect_message(reply), layer)
    run_consumer(logout, "websocket.receive", {"reply_channel": reply}, layer)
    assert Session.objects.count() == 0


# -- http_session ----------------------------------------------------------------


def http_session_with(**values: Any) -> str:
    session = db_backend.SessionStore()
    session.update(values)
    session.save()
    key: str = session.session_key
    return key


def test_http_session_from_the_cookie(layer: Any) -> None:
    """http_session loads the session named by the cookie and saves the consumer's changes."""
    key = http_session_with(species="horse")
    seen = []

    @http_session
    def consumer(message: Message) -> None:
        seen.append(message.http_session["species"])
        message.http_session["colour"] = "brown"

    content = connect_message(reply_channel_name(), headers=cookie_header(key))
    message = run_consumer(consumer, "websocket.connect", content, layer)
    assert seen == ["horse"]
    assert db_backend.SessionStore(session_key=key)["colour"] == "brown"
    # The message itself is not changed.
    assert "method" not in message.content


def test_http_session_from_the_query_string(layer: Any) -> None:
    """http_session loads the session named by session_key in the query string."""
    key = http_session_with(species="zebra")
    seen = []

    @http_session
    def consumer(message: Message) -> None:
        seen.append(message.http_session["species"])

    content = connect_message(reply_channel_name(), query_string=("session_key=%s" % key).encode())
    run_consumer(consumer, "websocket.connect", content, layer)
    assert seen == ["zebra"]


def test_http_session_cookie_wins_over_query_string(layer: Any) -> None:
    """http_session prefers the cookie's session key over one in the query string."""
    mine = http_session_with(owner="me")
    planted = http_session_with(owner="attacker")
    seen = []

    @http_session
    def consumer(message: Message) -> None:
        seen.append(message.http_session["owner"])

    content = connect_message(
        reply_channel_name(),
        headers=cookie_header(mine),
        query_string=("session_key=%s" % planted).encode(),
    )
    run_consumer(consumer, "websocket.connect", content, layer)
    assert seen == ["me"]


def test_http_session_is_none_without_a_key(layer: Any) -> None:
    """Without a session key, or without headers, http_session is None and none is created."""
    seen = []

    @http_session
    def consumer(message: Message) -> None:
        seen.append(message.http_session)

    run_consumer(consumer, "websocket.connect", connect_message(reply_channel_name()), layer)
    # A receive has no headers at all.
    run_consumer(
        consumer, "websocket.receive", {"reply_channel": "x!y", "path": "/", "text": "a"}, layer
    )
    assert seen == [None, None]
    assert Session.objects.count() == 0


def test_http_session_never_creates_a_session(layer: Any) -> None:
    """An unknown session key gives an empty http_session, and writing to it saves nothing."""

    @http_session
    def consumer(message: Message) -> None:
        assert len(message.http_session.keys()) == 0
        message.http_session["planted"] = True

    content = connect_message(reply_channel_name(), headers=cookie_header("nosuchsession123"))
    run_consumer(consumer, "websocket.connect", content, layer)
    assert Session.objects.count() == 0


def test_http_session_nested_change_saved_and_nesting_idempotent(layer: Any) -> None:
    """Nested http_session decorators share one session; in-place nested changes are saved."""
    key = http_session_with(cart={"items": []})
    sessions = []

    @http_session
    @http_session
    def consumer(message: Message) -> None:
        sessions.append(message.http_session)
        message.http_session["cart"]["items"].append("apple")

    run_consumer(
        consumer, "websocket.connect", connect_message("x!y", headers=cookie_header(key)), layer
    )
    assert len(sessions) == 1
    assert db_backend.SessionStore(session_key=key)["cart"] == {"items": ["apple"]}


def test_http_session_not_saved_when_the_consumer_raises(layer: Any) -> None:
    """The http session is not saved when the consumer raises."""
    key = http_session_with(state="old")

    @http_session
    def consumer(message: Message) -> None:
        message.http_session["state"] = "half-done"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_consumer(
            consumer, "websocket.connect", connect_message("x!y", headers=cookie_header(key)), layer
        )
    assert db_backend.SessionStore(session_key=key)["state"] == "old"


def test_http_session_does_not_drain_the_body_channel(layer: Any) -> None:
    """http_session on an http.request leaves the body channel's chunks unread."""
    key = http_session_with(a=1)
    layer.send("http.request.body?abc", {"content": b"data", "more_content": False})

    @http_session
    def consumer(message: Message) -> None:
        assert message.http_session["a"] == 1

    content = {
        "reply_channel": "x!y",
        "http_version": "1.1",
        "method": "POST",
        "path": "/upload",
        "headers": cookie_header(key),
        "body": b"",
        "body_channel": "http.request.body?abc",
    }
    run_consumer(consumer, "http.request", content, layer)
    assert receive_all(layer, "http.request.body?abc") == [
        {"content": b"data", "more_content": False}
    ]


def test_http_session_needs_an_http_like_message(layer: Any) -> None:
    """http_session raises ValueError on a message that is not HTTP-like."""

    @http_session
    def consumer(message: Message) -> None:
        raise AssertionError("must not run")

    with pytest.raises(ValueError, match="Cannot parse HTTP message"):
        run_consumer(consumer, "chat-messages", {"room": "a", "message": "b"}, layer)


# -- channel_and_http_session ------------------------------------------------------


def test_channel_and_http_session_rehydrates_later(layer: Any) -> None:
    """channel_and_http_session stores the HTTP session key on connect and reloads it later."""
    key = http_session_with(visits=0)
    reply = reply_channel_name()
    keys = []

    @channel_and_http_session
    def consumer(message: Message) -> None:
        keys.append(message.http_session.session_key)
        message.http_session["visits"] += 1

    run_consumer(
        consumer, "websocket.connect", connect_message(reply, headers=cookie_header(key)), layer
    )
    assert session_for_reply_channel(reply)[settings.SESSION_COOKIE_NAME] == key
    receive = {"reply_channel": reply, "path": "/chat/", "order": 1, "text": "x"}
    run_consumer(consumer, "websocket.receive", receive, layer)
    assert keys == [key, key]
    assert db_backend.SessionStore(session_key=key)["visits"] == 2


def test_channel_and_http_session_without_any_http_session(layer: Any) -> None:
    """channel_and_http_session gives None and stores no key when there is no HTTP session."""
    reply = reply_channel_name()
    seen = []

    @channel_and_http_session
    def consumer(message: Message) -> None:
        seen.append(message.http_session)

    run_consumer(consumer, "websocket.connect", connect_message(reply), layer)
    assert seen == [None]
    assert settings.SESSION_COOKIE_NAME not in session_for_reply_channel(reply)


# -- the tutorial's "Persisting Data" consumers ----------------------------------------


@channel_session
def ws_connect(message: Message, room_name: str) -> None:
    message.reply_channel.send({"accept": True})  # type: ignore[union-attr]
    params = parse_qs(message.content["query_string"])
    if b"username" in params:
        message.channel_session["username"] = params[b"username"][0].decode("utf8")  # type: ignore[attr-defined]
        Group("chat-%s" % room_name).add(message.reply_channel)  # type: ignore[arg-type]
    else:
        message.reply_channel.send({"close": True})  # type: ignore[union-attr]


@channel_session
def ws_message(message: Message, room_name: str) -> None:
    Group("chat-%s" % room_name).send(
        {
            "text": json.dumps(
                {
                    "text": message["text"],
                    "username": message.channel_session["username"],  # type: ignore[attr-defined]
                }
            ),
        }
    )


@channel_session
def ws_disconnect(message: Message, room_name: str) -> None:
    Group("chat-%s" % room_name).discard(message.reply_channel)  # type: ignore[arg-type]


def test_tutorial_persisting_data(layer: Any) -> None:
    """The tutorial's Persisting Data consumers keep usernames in the channel session
    and broadcast to the room group.
    """
    alice, bob = reply_channel_name(), reply_channel_name()
    for reply, name in ((alice, b"alice"), (bob, b"bob")):
        content = connect_message(reply, path="/lobby/", query_string=b"username=" + name)
        run_consumer(ws_connect, "websocket.connect", content, layer, room_name="lobby")
        assert replies(layer, reply) == [{"accept": True}]
    run_consumer(
        ws_message,
        "websocket.receive",
        {"reply_channel": alice, "path": "/lobby/", "order": 1, "text": "hello"},
        layer,
        room_name="lobby",
    )
    expected = {"text": json.dumps({"text": "hello", "username": "alice"})}
    assert replies(layer, bob) == [expected]
    assert replies(layer, alice) == [expected]
    run_consumer(
        ws_disconnect,
        "websocket.disconnect",
        {"reply_channel": bob, "path": "/lobby/", "order": 2, "code": 1000},
        layer,
        room_name="lobby",
    )
    assert layer.group_channels("chat-lobby") == [alice]
    # Without a username the socket is accepted, then closed.
    nobody = reply_channel_name()
    run_consumer(
        ws_connect,
        "websocket.connect",
        connect_message(nobody, path="/lobby/"),
        layer,
        room_name="lobby",
    )
    assert replies(layer, nobody) == [{"accept": True}, {"close": True}]


def test_unreadable_query_string_only_loses_the_query_key(layer: Any) -> None:
    """An undecodable query string does not stop http_session finding the cookie's session."""
    key = http_session_with(species="horse")
    seen = []

    @http_session
    def consumer(message: Message) -> None:
        seen.append(message.http_session["species"])

    content = connect_message("x!y", headers=cookie_header(key), query_string=b"a=\xff\xfe")
    run_consumer(consumer, "websocket.connect", content, layer)
    assert seen == ["horse"]
