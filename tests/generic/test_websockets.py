"""
chanserv.generic.websockets: WebsocketConsumer, JsonWebsocketConsumer, the
multiplexer and the demultiplexer, run by WSClient on the real in-memory
layer and database.
"""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

from django.contrib.auth.models import User
from django.test import override_settings

from chanserv import Channel, channel_layers
from chanserv.exceptions import ConsumeLater, DenyConnection, SendNotAvailableOnDemultiplexer
from chanserv.generic import (
    JsonWebsocketConsumer,
    WebsocketConsumer,
    WebsocketDemultiplexer,
    WebsocketMultiplexer,
)
from chanserv.message import Message
from chanserv.sessions import session_for_reply_channel
from chanserv.test import ChannelTestCase, WSClient, apply_routes

FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]

log: list[Any] = []


class Chat(WebsocketConsumer):
    groups = ["lobby"]

    def connection_groups(self, room: str | None = None, **kwargs: Any) -> list[str]:
        return list(super().connection_groups()) + (["room-" + room] if room else [])

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        log.append(("receive", self.path, text, bytes, kwargs))
        if text == "close":
            self.close()
        elif text == "close-code":
            self.close(4001)
        elif text == "bye":
            self.send(text="BYE", close=True)
        elif text is not None:
            self.send(text=text.upper())
        else:
            assert bytes is not None
            self.send(bytes=bytes[::-1])

    def disconnect(self, message: Message, **kwargs: Any) -> None:
        log.append(("disconnect", message["code"], kwargs))


class Refuser(WebsocketConsumer):
    def connect(self, message: Message, **kwargs: Any) -> None:
        self.close()


class Denier(WebsocketConsumer):
    def connect(self, message: Message, **kwargs: Any) -> None:
        raise DenyConnection()


class Users(WebsocketConsumer):
    http_user = True

    def connect(self, message: Message, **kwargs: Any) -> None:
        super().connect(message, **kwargs)
        self.send(text="hello %s" % (message.user.username or "?"))  # type: ignore[attr-defined]

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        self.send(text="%s said %s" % (self.message.user.username or "?", text))  # type: ignore[attr-defined]


class UsersAndSessions(WebsocketConsumer):
    http_user_and_session = True

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        http = self.message.http_session  # type: ignore[attr-defined]
        self.send(text="%s %s" % (self.message.user.username, http.session_key))  # type: ignore[attr-defined]


class Ordered(WebsocketConsumer):
    strict_ordering = True

    def receive(self, text: str | None = None, bytes: bytes | None = None, **kwargs: Any) -> None:
        self.send(text=text)


class Slight(WebsocketConsumer):
    slight_ordering = True


class JsonEcho(JsonWebsocketConsumer):
    def receive(self, content: Any, **kwargs: Any) -> None:
        self.send({"got": content, "kwargs": kwargs})


class Tagged(JsonWebsocketConsumer):
    @classmethod
    def decode_json(cls, text: str) -> Any:
        return {"decoded": json.loads(text)}

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return "tagged:" + json.dumps(content)

    def receive(self, content: Any, **kwargs: Any) -> None:
        self.send(content)


class Echoer(JsonWebsocketConsumer):
    def connect(self, message: Message, multiplexer: Any = None, **kwargs: Any) -> None:
        super().connect(message, **kwargs)
        if multiplexer is not None:
            multiplexer.send({"status": "connected"})

    def receive(self, content: Any, multiplexer: Any = None, **kwargs: Any) -> None:
        log.append(("echo", content, sorted(kwargs)))
        if content.get("try_send"):
            self.send({"raw": True})
        if content.get("later") and "__retries__" not in self.message:
            raise ConsumeLater()
        if multiplexer is not None:
            multiplexer.send({"original": content})

    def disconnect(self, message: Message, multiplexer: Any = None, **kwargs: Any) -> None:
        log.append(("echo-disconnect", multiplexer.stream))


def fn_consumer(message: Message, multiplexer: WebsocketMultiplexer, **kwargs: Any) -> None:
    log.append(("fn", message.channel.name, multiplexer.stream))
    if message.channel.name == "websocket.receive":
        multiplexer.send({"fn": json.loads(message["text"])})


class Demux(WebsocketDemultiplexer):
    consumers = {"echo": Echoer, "fn": fn_consumer}


class LoudMultiplexer(WebsocketMultiplexer):
    @classmethod
    def encode(cls, stream: str, payload: Any) -> dict[str, Any]:
        return {"text": json.dumps({"stream": stream.upper(), "payload": payload})}


class LoudDemux(WebsocketDemultiplexer):
    consumers = {"echo": Echoer}
    multiplexer_class = LoudMultiplexer


def members(group: str) -> set[str]:
    return set(channel_layers["default"].group_channels(group))


class WebsocketConsumerTests(ChannelTestCase):
    def setUp(self) -> None:
        log.clear()

    @apply_routes([Chat.as_route(path=r"^/chat/(?P<room>\w+)/")])
    def test_connect_accepts_and_joins_groups_disconnect_leaves(self) -> None:
        """Connect joins connection_groups(), disconnect leaves them; both get route kwargs."""
        client = WSClient()
        client.send_and_consume("websocket.connect", path="/chat/blue/")
        self.assertEqual(members("lobby"), {client.reply_channel})
        self.assertEqual(members("room-blue"), {client.reply_channel})
        client.send_and_consume("websocket.disconnect", path="/chat/blue/")
        self.assertEqual(members("lobby"), set())
        self.assertEqual(members("room-blue"), set())
        self.assertEqual(log, [("disconnect", 1000, {"room": "blue"})])

    @apply_routes([Chat.as_route(path=r"^/chat/(?P<room>\w+)/")])
    def test_receive_text_and_bytes_and_path(self) -> None:
        """receive() gets text or bytes and the route kwargs; self.path is the socket's."""
        client = WSClient()
        client.send_and_consume("websocket.receive", text="hi", path="/chat/red/")
        self.assertEqual(client.receive(json=False), "HI")
        client.send_and_consume("websocket.receive", {"bytes": b"abc"}, path="/chat/red/")
        self.assertEqual(client.receive(), {"bytes": b"cba"})
        self.assertEqual(
            log,
            [
                ("receive", "/chat/red/", "hi", None, {"room": "red"}),
                ("receive", "/chat/red/", None, b"abc", {"room": "red"}),
            ],
        )

    @apply_routes([Chat.as_route()])
    def test_send_with_close_and_close_codes(self) -> None:
        """send(close=True) sends then closes; close() sends close True, or the code given."""
        client = WSClient()
        client.send_and_consume("websocket.receive", text="bye")
        self.assertEqual(client.receive(json=False), "BYE")
        client.send_and_consume("websocket.receive", text="close")
        self.assertEqual(client.receive(), {"close": True})
        client.send_and_consume("websocket.receive", text="close-code")
        self.assertEqual(client.receive(), {"close": 4001})
        self.assertIsNone(client.receive())

    def test_send_needs_text_or_bytes(self) -> None:
        """WebsocketConsumer.send() with neither text nor bytes raises ValueError."""
        message = Message({"reply_channel": "x", "path": "/"}, "websocket.disconnect", None)
        consumer = WebsocketConsumer(message)
        with self.assertRaisesRegex(ValueError, "text or bytes"):
            consumer.send()

    @apply_routes([Chat.as_route()])
    def test_group_send_reaches_every_member(self) -> None:
        """group_send reaches every member of the group; it needs text or bytes."""
        ann, bob = WSClient(), WSClient()
        ann.send_and_consume("websocket.connect")
        bob.send_and_consume("websocket.connect")
        WebsocketConsumer.group_send("lobby", text="news")
        WebsocketConsumer.group_send("lobby", bytes=b"\x00", close=True)
        for client in (ann, bob):
            self.assertEqual(client.receive(json=False), "news")
            self.assertEqual(client.receive(), {"bytes": b"\x00", "close": True})
        with self.assertRaises(ValueError):
            WebsocketConsumer.group_send("lobby")

    def test_refusing_and_denying_connections(self) -> None:
        """Closing in connect() rejects the socket; DenyConnection replies close True."""
        with apply_routes([Refuser.as_route()]):
            client = WSClient()
            with self.assertRaisesRegex(AssertionError, "Connection rejected"):
                client.send_and_consume("websocket.connect")
        with apply_routes([Denier.as_route()]):
            client = WSClient()
            client.send_and_consume("websocket.connect", check_accept=False)
            self.assertEqual(client.receive(), {"close": True})

    @override_settings(PASSWORD_HASHERS=FAST_HASHER)
    @apply_routes([Users.as_route()])
    def test_http_user_on_connect_and_later_messages(self) -> None:
        """http_user = True gives message.user on connect and later frames, anonymous too."""
        User.objects.create_user("ann", password="pw")
        client = WSClient()
        self.assertTrue(client.login(username="ann", password="pw"))
        client.send_and_consume("websocket.connect")
        self.assertEqual(client.receive(json=False), "hello ann")
        client.send_and_consume("websocket.receive", text="hi")
        self.assertEqual(client.receive(json=False), "ann said hi")
        anonymous = WSClient()
        anonymous.send_and_consume("websocket.connect")
        self.assertEqual(anonymous.receive(json=False), "hello ?")

    @apply_routes([UsersAndSessions.as_route()])
    def test_http_user_and_session_on_later_messages(self) -> None:
        """http_user_and_session = True gives message.user and http_session on later frames."""
        client = WSClient()
        client.force_login(User.objects.create(username="cy"))
        key = client.session.session_key
        client.send_and_consume("websocket.connect")
        client.send_and_consume("websocket.receive", text="x")
        self.assertEqual(client.receive(json=False), "cy %s" % (key,))

    @apply_routes([Ordered.as_route()])
    def test_strict_ordering_enforces_order(self) -> None:
        """strict_ordering handles frames in order and refuses a frame with no order."""
        client = WSClient(ordered=True)
        client.send_and_consume("websocket.connect")
        for text in ("1", "2"):
            client.send_and_consume("websocket.receive", text=text)
        self.assertEqual([client.receive(), client.receive()], [1, 2])
        session = session_for_reply_channel(client.reply_channel)
        self.assertEqual(session["__channels_next_order"], 3)
        unordered = WSClient()
        with self.assertRaisesRegex(ValueError, "order"):
            unordered.send_and_consume("websocket.receive", text="3")

    @apply_routes([Slight.as_route()])
    def test_slight_ordering_is_refused(self) -> None:
        """slight_ordering is not supported: a consumer using it raises ValueError."""
        with self.assertRaisesRegex(ValueError, "Slight ordering"):
            WSClient().send_and_consume("websocket.connect")


class JsonWebsocketConsumerTests(ChannelTestCase):
    @apply_routes([JsonEcho.as_route(path=r"^/(?P<name>\w+)$")])
    def test_json_in_and_out(self) -> None:
        """JsonWebsocketConsumer decodes text frames as JSON and encodes what it sends."""
        client = WSClient()
        client.send_and_consume("websocket.connect", path="/j")
        client.send_and_consume("websocket.receive", text={"a": [1, 2]}, path="/j")
        self.assertEqual(client.receive(), {"got": {"a": [1, 2]}, "kwargs": {"name": "j"}})

    @apply_routes([JsonEcho.as_route()])
    def test_binary_and_invalid_frames_raise(self) -> None:
        """A binary or non-JSON frame to a JsonWebsocketConsumer raises ValueError."""
        client = WSClient()
        with self.assertRaisesRegex(ValueError, "No text section"):
            client.send_and_consume("websocket.receive", {"bytes": b"{}"})
        with self.assertRaises(ValueError):
            client.send_and_consume("websocket.receive", text="{not json")
        self.assertIsNone(client.receive())

    @apply_routes([Tagged.as_route()])
    def test_encode_and_decode_can_be_overridden(self) -> None:
        """Overridden decode_json and encode_json are used on receive and send."""
        client = WSClient()
        client.send_and_consume("websocket.receive", text=[1])
        self.assertEqual(client.receive(json=False), 'tagged:{"decoded": [1]}')

    @apply_routes([JsonEcho.as_route()])
    def test_group_send_encodes(self) -> None:
        """JsonWebsocketConsumer.group_send encodes with the class's own encode_json."""
        client = WSClient()
        client.join_group("news")
        JsonWebsocketConsumer.group_send("news", {"n": 1}, close=True)
        self.assertEqual(client.receive(json=False), '{"n": 1}')
        client.join_group("tags")
        Tagged.group_send("tags", {"n": 2})
        self.assertEqual(client.receive(json=False), 'tagged:{"n": 2}')


class MultiplexerTests(ChannelTestCase):
    def test_encode_uses_the_django_encoder(self) -> None:
        """WebsocketMultiplexer.encode serialises datetimes and decimals as Django does."""
        when = datetime.datetime(2024, 5, 6, 7, 8, 9)
        message = WebsocketMultiplexer.encode("s", {"at": when, "price": decimal.Decimal("1.5")})
        self.assertEqual(list(message), ["text"])
        self.assertEqual(
            json.loads(message["text"]),
            {"stream": "s", "payload": {"at": "2024-05-06T07:08:09", "price": "1.5"}},
        )

    def test_send_and_group_send(self) -> None:
        """A multiplexer tags payloads with its stream, to a channel or group, close kept."""
        client = WSClient()
        client.join_group("g")
        WebsocketMultiplexer("one", Channel(client.reply_channel)).send({"a": 1})
        self.assertEqual(client.receive(), {"stream": "one", "payload": {"a": 1}})
        WebsocketMultiplexer.group_send("g", "two", {"b": 2})
        self.assertEqual(client.receive(), {"stream": "two", "payload": {"b": 2}})
        WebsocketMultiplexer.group_send("g", "two", {}, close=True)
        WebsocketMultiplexer.group_send("g", "two", {}, close=4002)
        first = client.get_next_message(client.reply_channel)
        second = client.get_next_message(client.reply_channel)
        assert first is not None and second is not None
        self.assertEqual(first["close"], True)
        self.assertEqual(second["close"], 4002)


class DemultiplexerTests(ChannelTestCase):
    def setUp(self) -> None:
        log.clear()

    @apply_routes([Demux.as_route(path=r"^/mux/(?P<id>\d+)/")])
    def test_connect_accepts_once_then_every_sub_consumer(self) -> None:
        """Connect is accepted once, then every sub-consumer's connect runs with its stream."""
        client = WSClient()
        client.send_and_consume("websocket.connect", path="/mux/7/")
        self.assertEqual(client.receive(), {"stream": "echo", "payload": {"status": "connected"}})
        self.assertIsNone(client.receive())
        self.assertEqual(log, [("fn", "websocket.connect", "fn")])

    @apply_routes([Demux.as_route(path=r"^/mux/(?P<id>\d+)/")])
    def test_frames_go_to_their_stream(self) -> None:
        """Each frame goes to its stream's consumer with route kwargs; replies are tagged."""
        client = WSClient()
        client.send_and_consume("websocket.connect", path="/mux/7/")
        client.receive()
        log.clear()
        frame = {"stream": "echo", "payload": {"x": 1}}
        client.send_and_consume("websocket.receive", text=frame, path="/mux/7/")
        self.assertEqual(client.receive(), {"stream": "echo", "payload": {"original": {"x": 1}}})
        client.send_and_consume(
            "websocket.receive", text={"stream": "fn", "payload": {"y": 2}}, path="/mux/7/"
        )
        self.assertEqual(client.receive(), {"stream": "fn", "payload": {"fn": {"y": 2}}})
        self.assertEqual(
            log,
            [("echo", {"x": 1}, ["id"]), ("fn", "websocket.receive", "fn")],
        )

    @apply_routes([Demux.as_route()])
    def test_invalid_frames_raise_value_error(self) -> None:
        """A frame without stream and payload, unmapped, or with a non-dict payload raises."""
        client = WSClient()
        for bad, text in [
            ({"payload": {}}, "no stream/payload"),
            ({"stream": "echo"}, "no stream/payload"),
            ([1, 2], "no stream/payload"),
            ({"stream": "nope", "payload": {}}, "not mapped"),
            ({"stream": ["echo"], "payload": {}}, "not mapped"),
            ({"stream": "echo", "payload": [1]}, "not a dict"),
        ]:
            with self.assertRaisesRegex(ValueError, text):
                client.send_and_consume("websocket.receive", text=bad)
        self.assertEqual(log, [])

    @apply_routes([Demux.as_route()])
    def test_sending_directly_is_refused(self) -> None:
        """Sending on a demultiplexer or from its sub-consumers raises, group_send too."""
        client = WSClient()
        with self.assertRaises(SendNotAvailableOnDemultiplexer):
            client.send_and_consume(
                "websocket.receive", text={"stream": "echo", "payload": {"try_send": True}}
            )
        with self.assertRaises(SendNotAvailableOnDemultiplexer):
            Demux.group_send("g", "echo", {})
        message = Message({"reply_channel": client.reply_channel}, "websocket.disconnect", None)
        demux = Demux(message)
        with self.assertRaises(SendNotAvailableOnDemultiplexer):
            demux.send({"a": 1})

    def test_sub_consumer_class_is_left_untouched(self) -> None:
        """Demultiplexing leaves the sub-consumer class unpatched: alone it sends plainly."""
        client = WSClient()
        with apply_routes([Demux.as_route()]):
            client.send_and_consume(
                "websocket.receive", text={"stream": "echo", "payload": {"n": 1}}
            )
            client.receive()
        self.assertNotIn("send", Echoer.__dict__)
        # The same class routed on its own still sends plain frames.
        with apply_routes([Echoer.as_route()]):
            client.send_and_consume("websocket.receive", text={"try_send": True, "n": 2})
        self.assertEqual(client.receive(), {"raw": True})

    @apply_routes([Demux.as_route()])
    def test_consume_later_requeues_the_frame_as_sent(self) -> None:
        """ConsumeLater in a sub-consumer requeues the original frame, counting a retry."""
        client = WSClient()
        frame = json.dumps({"stream": "echo", "payload": {"later": True}})
        client.send_and_consume("websocket.receive", text=frame)
        self.assertIsNone(client.receive())
        requeued = client.get_next_message("websocket.receive")
        assert requeued is not None
        self.assertEqual(requeued["text"], frame)
        self.assertEqual(requeued["__retries__"], 1)
        client.send("websocket.receive", requeued.content)
        client.consume("websocket.receive")
        self.assertEqual(
            client.receive(), {"stream": "echo", "payload": {"original": {"later": True}}}
        )

    @apply_routes([Demux.as_route()])
    def test_disconnect_goes_to_every_sub_consumer(self) -> None:
        """websocket.disconnect reaches every sub-consumer and sends nothing to the client."""
        client = WSClient()
        client.send_and_consume("websocket.disconnect")
        self.assertEqual(log, [("echo-disconnect", "echo"), ("fn", "websocket.disconnect", "fn")])
        self.assertIsNone(client.receive())

    @apply_routes([LoudDemux.as_route()])
    def test_multiplexer_class_is_used(self) -> None:
        """A demultiplexer wraps its streams with its multiplexer_class."""
        client = WSClient()
        client.send_and_consume("websocket.connect")
        self.assertEqual(client.receive(), {"stream": "ECHO", "payload": {"status": "connected"}})
