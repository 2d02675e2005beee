"""
WSClient against the behaviour Channels 1.1.8's own WSClient tests pinned
(its ``tests/test_wsclient.py``): the cookie header, the content it builds
(``_get_content``), order numbers, query strings, and a consumer's
``ChannelSocketException``.  Our own tests of the same behaviours; the
test's thread, no reactor.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http.cookie import parse_cookie

from chanserv import route
from chanserv.exceptions import ChannelSocketException
from chanserv.handler import AsgiRequest
from chanserv.sessions import enforce_ordering
from chanserv.test import ChannelTestCase, WSClient, apply_routes


class WSClientParityTests(ChannelTestCase):
    def test_cookie_header_is_what_django_parses(self) -> None:
        """The cookie header parses back to get_cookies(): last value wins, ';' quoted, session cookie in."""
        client = WSClient()
        client.set_cookie("lang", "fr")
        client.set_cookie("lang", "en")
        client.set_cookie("odd", "a;b c")
        cookie = client.headers["cookie"]
        assert isinstance(cookie, bytes)
        parsed = parse_cookie(cookie.decode("ascii"))
        self.assertEqual(parsed, client.get_cookies())
        self.assertEqual(
            parsed,
            {
                "lang": "en",
                "odd": "a;b c",
                settings.SESSION_COOKIE_NAME: client.get_cookies()[settings.SESSION_COOKIE_NAME],
            },
        )

    def test_get_content_with_text_and_path(self) -> None:
        """_get_content(text=..., path=...) gives JSON text, the path, reply_channel and headers."""
        client = WSClient()
        content = client._get_content(text={"k": ["v"]}, path="/a/b")
        self.assertEqual(content["text"], '{"k": ["v"]}')
        self.assertEqual(content["path"], "/a/b")
        self.assertEqual(content["reply_channel"], client.reply_channel)
        self.assertIsInstance(content["headers"], dict)
        self.assertNotIn("query_string", content)

    def test_path_in_content_wins(self) -> None:
        """A path in the content wins over the path argument; text stays the caller's."""
        client = WSClient()
        content = client._get_content(content={"path": "/mine"}, text={"path": "x"}, path="/theirs")
        self.assertEqual(content["path"], "/mine")
        self.assertEqual(content["text"], '{"path": "x"}')

    def test_default_content_has_root_path_and_session_cookie(self) -> None:
        """_get_content() alone: path "/" and a cookie header naming the session."""
        content = WSClient()._get_content()
        self.assertEqual(content["path"], "/")
        self.assertIn(settings.SESSION_COOKIE_NAME.encode(), content["headers"]["cookie"])

    def test_order_follows_the_counter(self) -> None:
        """An ordered client's content takes order from its counter, which a test may set."""
        client = WSClient(ordered=True)
        self.assertEqual(client._get_content()["order"], 0)
        client.order = 5
        self.assertEqual(client._get_content()["order"], 5)
        self.assertEqual(client._get_content()["order"], 6)
        self.assertNotIn("order", WSClient()._get_content())

    def test_ordered_client_satisfies_enforce_ordering(self) -> None:
        """Messages of an ordered client run, in order, under enforce_ordering."""
        client = WSClient(ordered=True)

        @enforce_ordering
        def consumer(message: Any) -> None:
            message.reply_channel.send({"text": message["text"]})

        with apply_routes(route("websocket.receive", consumer)):
            for text in ("1", "2", "3"):
                client.send_and_consume("websocket.receive", text=text)
            self.assertEqual([client.receive() for _ in range(3)], [1, 2, 3])
            self.assertIsNone(client.receive())

    def test_query_string_is_split_off_the_path(self) -> None:
        """_get_content with path "?query" gives path and a str query_string."""
        content = WSClient()._get_content(path="/p?a=1&b=2")
        self.assertEqual((content["path"], content["query_string"]), ("/p", "a=1&b=2"))

    def test_query_reaches_connect_but_not_receive(self) -> None:
        """AsgiRequest sees the query on websocket.connect; send drops it from websocket.receive."""

        def consumer(message: Any) -> None:
            message.content["method"] = "FAKE"
            message.reply_channel.send({"text": dict(AsgiRequest(message).GET)})

        client = WSClient()
        routes = [
            route("websocket.connect", consumer, path=r"^/q"),
            route("websocket.receive", consumer, path=r"^/q"),
        ]
        with apply_routes(routes):
            path = "/q?x=1&y=2&x=3"
            client.send_and_consume("websocket.connect", path=path, check_accept=False)
            self.assertEqual(client.receive(), {"x": ["1", "3"], "y": ["2"]})
            client.send_and_consume("websocket.receive", path=path)
            self.assertEqual(client.receive(), {})

    def test_channel_socket_exception_runs(self) -> None:
        """A ChannelSocketException raised by the consumer runs against the message."""

        class Answered(ChannelSocketException):
            def run(self, message: Any) -> None:
                message.reply_channel.send({"text": "answered"})

        def consumer(message: Any) -> None:
            raise Answered

        client = WSClient()
        with apply_routes(route("websocket.receive", consumer)):
            client.send_and_consume("websocket.receive")
            self.assertEqual(client.receive(json=False), "answered")

    def test_empty_reply_is_none(self) -> None:
        """receive() of an empty message gives None, as in 1.x."""
        client = WSClient()
        client.channel_layer.send(client.reply_channel, {})
        self.assertIsNone(client.receive())


#: Channels 1.1.8's parameters of each method, in order, with their defaults
#: (``content={}`` there is ``content=None`` here: the same message is sent).
SIGNATURES_1X: dict[str, list[tuple[str, Any]]] = {
    "Client.__init__": [("alias", "default")],
    "Client.send": [("to", None), ("content", None)],
    "Client.consume": [("channel", None), ("fail_on_none", True)],
    "Client.send_and_consume": [("channel", None), ("content", None), ("fail_on_none", True)],
    "Client.receive": [],
    "Client.get_next_message": [("channel", None)],
    "Client.get_consumer_by_channel": [("channel", None)],
    "Client.join_group": [("group_name", None)],
    "WSClient.send": [("to", None), ("content", None), ("text", None), ("path", "/")],
    "WSClient._get_content": [("content", None), ("text", None), ("path", "/")],
    "WSClient.send_and_consume": [
        ("channel", None),
        ("content", None),
        ("text", None),
        ("path", "/"),
        ("fail_on_none", True),
        ("check_accept", True),
    ],
    "WSClient.consume": [("channel", None), ("fail_on_none", True), ("check_accept", True)],
    "WSClient.receive": [("json", True)],
    "WSClient.set_cookie": [("key", None), ("value", None)],
    "WSClient.set_header": [("key", None), ("value", None)],
    "WSClient.get_cookies": [],
    "WSClient.force_login": [("user", None), ("backend", None)],
    "ChannelTestCase.get_next_message": [
        ("channel", None),
        ("alias", "default"),
        ("require", False),
    ],
}


def test_signatures_match_channels_1x() -> None:
    """Every 1.x test-helper method takes the same parameters, in order, with the same defaults."""
    import inspect

    from chanserv.test import ChannelTestCase, Client

    owners = {"Client": Client, "WSClient": WSClient, "ChannelTestCase": ChannelTestCase}
    for qualified, expected in SIGNATURES_1X.items():
        owner, name = qualified.split(".")
        parameters = list(inspect.signature(getattr(owners[owner], name)).parameters.values())[1:]
        positional = [
            (p.name, None if p.default is inspect.Parameter.empty else p.default)
            for p in parameters
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        assert positional == expected, qualified
    login = inspect.signature(WSClient.login).parameters["credentials"]
    assert login.kind is inspect.Parameter.VAR_KEYWORD
    assert inspect.signature(WSClient).parameters["ordered"].default is False
