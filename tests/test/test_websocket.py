"""
chanserv.test.websocket.WSClient (and the deprecated HttpClient): the
messages it sends, cookies and the session, logging in, order numbers and
JSON, against real consumers, the in-memory layer and the database.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.test import override_settings

from chanserv import Group, route
from chanserv.auth import channel_session_user_from_http
from chanserv.exceptions import DenyConnection
from chanserv.sessions import channel_session, enforce_ordering, session_for_reply_channel
from chanserv.test import ChannelTestCase, HttpClient, WSClient, apply_routes

FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def headers_of(message: Any) -> dict[str, str | bytes]:
    headers = message["headers"]
    assert isinstance(headers, dict) and all(isinstance(n, str) for n in headers)
    assert isinstance(headers["cookie"], bytes)
    return headers


class MessageFormatTests(ChannelTestCase):
    def test_connect_message(self) -> None:
        """websocket.connect carries path, str query, a dict of headers as set and cookies, session's too."""
        client = WSClient()
        client.set_header("Origin", "http://testserver")
        client.set_header("x-bytes", b"\xff")
        client.set_cookie("theme", "dark")
        client.send("websocket.connect", path="/chat/?room=1&x=%20")
        message = self.get_next_message("websocket.connect", require=True)
        assert message is not None
        self.assertEqual(message["reply_channel"], client.reply_channel)
        self.assertEqual(message["path"], "/chat/")
        self.assertEqual(message["query_string"], "room=1&x=%20")
        self.assertNotIn("order", message)
        headers = headers_of(message)
        self.assertEqual(headers["Origin"], "http://testserver")
        self.assertEqual(headers["x-bytes"], b"\xff")
        cookie = headers["cookie"]
        assert isinstance(cookie, bytes)
        cookies = dict(c.split("=", 1) for c in cookie.decode().split("; "))
        self.assertEqual(cookies["theme"], "dark")
        self.assertEqual(
            cookies[settings.SESSION_COOKIE_NAME],
            session_for_reply_channel(client.reply_channel).session_key,
        )

    def test_later_messages(self) -> None:
        """Later messages carry no query_string, only non-session cookies; text is JSON."""
        client = WSClient()
        client.set_cookie("theme", "dark")
        client.send("websocket.connect")
        client.send("websocket.receive", text="hi", path="/chat/?ignored=1")
        client.send("websocket.receive", text={"a": [1, None]})
        client.send("websocket.receive", {"text": "from content"})
        client.send("websocket.receive", {"bytes": b"\x00\x01"})
        client.send("websocket.disconnect")
        client.send("websocket.disconnect", {"code": 4001})
        self.get_next_message("websocket.connect", require=True)
        texts = []
        for _ in range(4):
            message = self.get_next_message("websocket.receive", require=True)
            assert message is not None
            self.assertNotIn("query_string", message)
            self.assertEqual(headers_of(message)["cookie"], b"theme=dark")
            texts.append(message.get("text", message.get("bytes")))
        self.assertEqual(texts, ["hi", '{"a": [1, null]}', "from content", b"\x00\x01"])
        first = self.get_next_message("websocket.disconnect", require=True)
        second = self.get_next_message("websocket.disconnect", require=True)
        assert first is not None and second is not None
        self.assertEqual((first["code"], second["code"]), (1000, 4001))
        self.assertEqual(first["path"], "/")

    def test_no_cookie_header_without_cookies(self) -> None:
        """With no cookies set, messages after the first carry an empty cookie header only."""
        client = WSClient()
        client.send("websocket.connect")
        client.send("websocket.receive", text="x")
        self.get_next_message("websocket.connect", require=True)
        message = self.get_next_message("websocket.receive", require=True)
        assert message is not None
        self.assertEqual(message["headers"], {"cookie": b""})

    def test_content_keys_win(self) -> None:
        """path, headers and query_string in the content win over the path argument."""
        client = WSClient()
        client.send(
            "websocket.connect",
            {"path": "/mine", "headers": [[b"host", b"h"]], "query_string": b"q"},
            path="/other?x",
        )
        message = self.get_next_message("websocket.connect", require=True)
        assert message is not None
        self.assertEqual(
            (message["path"], message["headers"], message["query_string"]),
            ("/mine", [[b"host", b"h"]], b"q"),
        )

    def test_cookie_header_is_refused(self) -> None:
        """set_header refuses Cookie and points to set_cookie instead."""
        with self.assertRaisesRegex(ValueError, "set_cookie"):
            WSClient().set_header("Cookie", "a=b")

    def test_ordered_numbers_every_message(self) -> None:
        """An ordered client numbers every message from 0 and refuses a caller's order."""
        client = WSClient(ordered=True)
        client.send("websocket.connect")
        client.send("websocket.receive", text="a")
        client.send("websocket.receive", text="b")
        client.send("websocket.disconnect")
        orders = [self.get_next_message("websocket.connect")["order"]]
        orders += [self.get_next_message("websocket.receive")["order"] for _ in range(2)]
        orders.append(self.get_next_message("websocket.disconnect")["order"])
        self.assertEqual(orders, [0, 1, 2, 3])
        with self.assertRaisesRegex(ValueError, "order"):
            client.send("websocket.receive", {"order": 9, "text": "x"})

    def test_alias_and_keyword_only_ordered(self) -> None:
        """WSClient takes the alias positionally, and ordered only as a keyword."""
        client = WSClient("default", ordered=True)
        self.assertTrue(client.reply_channel.startswith("default"))
        with self.assertRaises(TypeError):
            WSClient("default", True)  # type: ignore[misc]


def echo(message: Any) -> None:
    message.reply_channel.send({"text": message["text"]})


class ReceiveAndConsumeTests(ChannelTestCase):
    @apply_routes(route("websocket.receive", echo))
    def test_receive_decodes_json_text(self) -> None:
        """receive() decodes text as JSON, returns it raw with json=False, None when empty."""
        client = WSClient()
        client.send_and_consume("websocket.receive", text={"a": 1})
        self.assertEqual(client.receive(), {"a": 1})
        client.send_and_consume("websocket.receive", text={"a": 1})
        self.assertEqual(client.receive(json=False), '{"a": 1}')
        self.assertIsNone(client.receive())

    def test_receive_returns_messages_without_text_whole(self) -> None:
        """receive() returns a message with no text as the whole dict, close included."""
        client = WSClient()
        client.join_group("g")
        Group("g").send({"bytes": b"\x01", "close": True})
        self.assertEqual(client.receive(), {"bytes": b"\x01", "close": True})

    def test_connect_is_checked_for_accept(self) -> None:
        """send_and_consume of a connect asserts an accept unless check_accept=False."""
        client = WSClient()
        client.send_and_consume("websocket.connect")  # the default route accepts
        self.assertIsNone(client.receive())

        def deny(message: Any) -> None:
            raise DenyConnection()

        with apply_routes(route("websocket.connect", deny)):
            with self.assertRaisesRegex(AssertionError, "Connection rejected"):
                client.send_and_consume("websocket.connect")
            client.send_and_consume("websocket.connect", check_accept=False)
            self.assertEqual(client.receive(), {"close": True})

    @apply_routes(route("websocket.receive", enforce_ordering(echo)))
    def test_ordered_client_with_enforce_ordering(self) -> None:
        """An ordered client's messages pass enforce_ordering in the order sent."""
        client = WSClient(ordered=True)
        for text in ("1", "2", "3"):
            client.send_and_consume("websocket.receive", text=text)
        self.assertEqual([client.receive() for _ in range(3)], [1, 2, 3])


@channel_session_user_from_http
def who(message: Any) -> None:
    user = message.user
    message.reply_channel.send({"accept": True})
    message.reply_channel.send(
        {"text": json.dumps(user.username if user.is_authenticated else None)}
    )


@override_settings(PASSWORD_HASHERS=FAST_HASHER)
@apply_routes(route("websocket.connect", who))
class SessionAndLoginTests(ChannelTestCase):
    def test_session_is_the_reply_channels_until_login(self) -> None:
        """Before login client.session is the reply channel's channel session."""
        client = WSClient()
        self.assertEqual(
            client.session.session_key, session_for_reply_channel(client.reply_channel).session_key
        )
        client.session["k"] = "v"
        client.session.save()
        self.assertEqual(session_for_reply_channel(client.reply_channel)["k"], "v")

        @channel_session
        def read(message: Any) -> None:
            message.reply_channel.send({"text": message.channel_session["k"]})

        with apply_routes(route("websocket.receive", read)):
            client.send_and_consume("websocket.receive", text="?")
        self.assertEqual(client.receive(json=False), "v")

    def test_login(self) -> None:
        """login() makes a new logged-in HTTP session that the http_user decorators see."""
        User.objects.create_user("ann", password="pw")
        client = WSClient()
        self.assertTrue(client.login(username="ann", password="pw"))
        client.send_and_consume("websocket.connect")
        self.assertEqual(client.receive(), "ann")
        cookie = client.session.session_key
        self.assertEqual(client.session["_auth_user_id"], str(User.objects.get().pk))
        self.assertNotEqual(cookie, session_for_reply_channel(client.reply_channel).session_key)

    def test_bad_credentials_and_inactive_users(self) -> None:
        """login() fails for a wrong password or an inactive user, who stays anonymous."""
        User.objects.create_user("ann", password="pw")
        User.objects.create_user("old", password="pw", is_active=False)
        client = WSClient()
        self.assertFalse(client.login(username="ann", password="wrong"))
        self.assertFalse(client.login(username="old", password="pw"))
        client.send_and_consume("websocket.connect")
        self.assertEqual(client.receive(json=False), "null")

    def test_force_login(self) -> None:
        """force_login logs a user in without a password, with the first auth backend."""
        user = User.objects.create(username="bea")
        client = WSClient()
        client.force_login(user)
        self.assertEqual(user.backend, settings.AUTHENTICATION_BACKENDS[0])
        client.send_and_consume("websocket.connect")
        self.assertEqual(client.receive(), "bea")

    def test_session_cookie_only_on_the_first_message(self) -> None:
        """The session cookie is sent only on the client's first message."""
        client = WSClient()
        client.force_login(User.objects.create(username="cy"))
        client.send("websocket.connect")
        client.send("websocket.connect")
        first, second = (self.get_next_message("websocket.connect") for _ in range(2))
        self.assertIn(settings.SESSION_COOKIE_NAME.encode(), headers_of(first)["cookie"])
        self.assertEqual(headers_of(second)["cookie"], b"")

    @override_settings(INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"])
    def test_without_sessions_installed(self) -> None:
        """Without django.contrib.sessions: an empty cookie header, no session, and login fails."""
        client = WSClient()
        client.send("websocket.connect")
        self.assertEqual(self.get_next_message("websocket.connect")["headers"], {"cookie": b""})
        with self.assertRaises(OSError):
            client.session  # noqa: B018
        self.assertFalse(client.login(username="x", password="y"))


class HttpClientTests(ChannelTestCase):
    def test_deprecated_alias(self) -> None:
        """HttpClient is a deprecated WSClient alias that warns and still takes ordered."""
        with self.assertWarns(DeprecationWarning):
            client = HttpClient(ordered=True)
        self.assertIsInstance(client, WSClient)
        client.send("websocket.receive", text="x")
        self.assertEqual(self.get_next_message("websocket.receive")["order"], 0)
