"""
A typical Channels 1.x application built from generic consumers -- a chat
WebsocketConsumer with groups and logged-in users, and a demultiplexed
socket of JsonWebsocketConsumers -- tested end to end with WSClient, the
way a 1.x project tests itself (imports renamed from channels to chanserv).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import User
from django.test import override_settings

from chanserv import Group, include, route
from chanserv.generic.websockets import (
    JsonWebsocketConsumer,
    WebsocketConsumer,
    WebsocketDemultiplexer,
    WebsocketMultiplexer,
)
from chanserv.test import ChannelTestCase, WSClient, apply_routes

# -- the application -----------------------------------------------------------


class ChatConsumer(WebsocketConsumer):
    http_user = True

    def connection_groups(self, room: str, **kwargs: Any) -> list[str]:
        return ["chat-%s" % room]

    def connect(self, message: Any, room: str, **kwargs: Any) -> None:
        if not message.user.is_authenticated:
            self.close()
            return
        message.reply_channel.send({"accept": True})
        self.group_send("chat-%s" % room, text=json.dumps({"joined": message.user.username}))

    def receive(
        self, text: str | None = None, bytes: bytes | None = None, room: str = "", **kwargs: Any
    ) -> None:
        Group("chat-%s" % room).send(
            {"text": json.dumps({"user": self.message.user.username, "says": text})}
        )

    def disconnect(self, message: Any, room: str, **kwargs: Any) -> None:
        self.group_send("chat-%s" % room, text=json.dumps({"left": message.user.username}))


class PresenceBinding(JsonWebsocketConsumer):
    def connect(self, message: Any, multiplexer: WebsocketMultiplexer, **kwargs: Any) -> None:
        Group("presence").add(message.reply_channel)
        WebsocketMultiplexer.group_send("presence", "presence", {"online": message.user.username})

    def receive(self, content: Any, multiplexer: WebsocketMultiplexer, **kwargs: Any) -> None:
        multiplexer.send({"you": self.message.user.username, "asked": content})

    def disconnect(self, message: Any, multiplexer: WebsocketMultiplexer, **kwargs: Any) -> None:
        Group("presence").discard(message.reply_channel)


class UserCount(JsonWebsocketConsumer):
    channel_session = True

    def receive(self, content: Any, multiplexer: WebsocketMultiplexer, **kwargs: Any) -> None:
        session = self.message.channel_session
        session["asked"] = session.get("asked", 0) + 1
        multiplexer.send({"users": User.objects.count(), "asked": session["asked"]})


class AppDemultiplexer(WebsocketDemultiplexer):
    http_user = True
    consumers = {"presence": PresenceBinding, "count": UserCount}


chat_routing = [ChatConsumer.as_route(path=r"^/(?P<room>[a-z]+)/$")]

channel_routing = [
    include(chat_routing, path=r"^/chat"),
    AppDemultiplexer.as_route(path=r"^/app/$"),
    route("websocket.connect", lambda message: message.reply_channel.send({"close": True})),
]


# -- its tests -----------------------------------------------------------------


@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
@apply_routes(channel_routing)
class ChatAppTests(ChannelTestCase):
    def setUp(self) -> None:
        User.objects.create_user("ann", password="ann-pw")
        User.objects.create_user("bob", password="bob-pw")

    def client_for(self, username: str) -> WSClient:
        client = WSClient()
        self.assertTrue(client.login(username=username, password=username + "-pw"))
        return client

    def test_chat_room(self) -> None:
        """Chat members get each other's joins, messages and leaves through the room group."""
        ann, bob = self.client_for("ann"), self.client_for("bob")
        ann.send_and_consume("websocket.connect", path="/chat/lobby/")
        self.assertEqual(ann.receive(), {"joined": "ann"})
        bob.send_and_consume("websocket.connect", path="/chat/lobby/")
        self.assertEqual(ann.receive(), {"joined": "bob"})
        self.assertEqual(bob.receive(), {"joined": "bob"})

        bob.send_and_consume("websocket.receive", text="hello", path="/chat/lobby/")
        for client in (ann, bob):
            self.assertEqual(client.receive(), {"user": "bob", "says": "hello"})

        bob.send_and_consume("websocket.disconnect", path="/chat/lobby/")
        self.assertEqual(ann.receive(), {"left": "bob"})
        self.assertIsNone(bob.receive())
        ann.send_and_consume("websocket.receive", text="alone?", path="/chat/lobby/")
        self.assertEqual(ann.receive(), {"user": "ann", "says": "alone?"})
        self.assertIsNone(bob.receive())

    def test_rooms_are_separate_and_anonymous_users_are_refused(self) -> None:
        """A room's messages reach only its members; an anonymous user is closed."""
        ann, bob = self.client_for("ann"), self.client_for("bob")
        ann.send_and_consume("websocket.connect", path="/chat/red/")
        bob.send_and_consume("websocket.connect", path="/chat/blue/")
        ann.receive()
        bob.receive()
        ann.send_and_consume("websocket.receive", text="red only", path="/chat/red/")
        self.assertEqual(ann.receive(), {"user": "ann", "says": "red only"})
        self.assertIsNone(bob.receive())

        stranger = WSClient()
        stranger.send_and_consume("websocket.connect", path="/chat/red/", check_accept=False)
        self.assertEqual(stranger.receive(), {"close": True})

    def test_unrouted_path_falls_to_the_last_route(self) -> None:
        """A connect on a path no consumer takes falls to the catch-all route, which closes."""
        client = self.client_for("ann")
        client.send_and_consume("websocket.connect", path="/nowhere/", check_accept=False)
        self.assertEqual(client.receive(), {"close": True})

    def test_demultiplexed_streams(self) -> None:
        """The demultiplexer sends each stream to its consumer; replies keep the stream name."""
        ann, bob = self.client_for("ann"), self.client_for("bob")
        ann.send_and_consume("websocket.connect", path="/app/")
        self.assertEqual(ann.receive(), {"stream": "presence", "payload": {"online": "ann"}})
        bob.send_and_consume("websocket.connect", path="/app/")
        for client in (ann, bob):
            self.assertEqual(client.receive(), {"stream": "presence", "payload": {"online": "bob"}})

        ann.send_and_consume(
            "websocket.receive", text={"stream": "presence", "payload": {"q": 1}}, path="/app/"
        )
        self.assertEqual(
            ann.receive(), {"stream": "presence", "payload": {"you": "ann", "asked": {"q": 1}}}
        )
        for expected in (1, 2):
            bob.send_and_consume(
                "websocket.receive", text={"stream": "count", "payload": {}}, path="/app/"
            )
            self.assertEqual(
                bob.receive(), {"stream": "count", "payload": {"users": 2, "asked": expected}}
            )
        self.assertIsNone(ann.receive())

        ann.send_and_consume("websocket.disconnect", path="/app/")
        WebsocketMultiplexer.group_send("presence", "presence", {"ping": True})
        self.assertEqual(bob.receive(), {"stream": "presence", "payload": {"ping": True}})
        self.assertIsNone(ann.receive())
