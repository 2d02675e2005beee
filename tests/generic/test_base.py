"""
chanserv.generic.base.BaseConsumer: per-message instantiation, dispatch by
method_mapping, the session flags and as_route, on a real in-memory layer
and database through the public test client.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from chanserv.generic import BaseConsumer
from chanserv.message import Message
from chanserv.routing import RouteClass, Router
from chanserv.sessions import session_for_reply_channel
from chanserv.test import ChannelTestCase, Client, apply_routes

calls: list[tuple[str, Any, dict[str, Any]]] = []


class Audit(BaseConsumer):
    method_mapping = {"audit.log": "log", "audit.count": "count"}

    def log(self, message: Message, **kwargs: Any) -> str:
        calls.append(("log", self, dict(kwargs)))
        assert self.message is message
        assert self.kwargs == kwargs
        return "logged"

    def count(self, message: Message, **kwargs: Any) -> None:
        calls.append(("count", self, dict(kwargs)))


class Counter(BaseConsumer):
    method_mapping = {"count.up": "up"}
    channel_session = True

    def up(self, message: Message, **kwargs: Any) -> None:
        session = self.message.channel_session  # type: ignore[attr-defined]
        session["n"] = session.get("n", 0) + 1
        self.message.reply_channel.send({"n": session["n"]})  # type: ignore[union-attr]


class WhoAmI(BaseConsumer):
    method_mapping = {"who.am.i": "who"}
    channel_session_user = True

    def who(self, message: Message, **kwargs: Any) -> None:
        user = message.user  # type: ignore[attr-defined]
        message.reply_channel.send(  # type: ignore[union-attr]
            {"user": user.username if user.is_authenticated else None}
        )


class BaseConsumerTests(ChannelTestCase):
    def setUp(self) -> None:
        calls.clear()

    def test_channel_names_are_the_mapped_channels(self) -> None:
        """channel_names() is the set of method_mapping's channels, empty on the base class."""
        self.assertEqual(Audit.channel_names(), {"audit.log", "audit.count"})
        self.assertEqual(BaseConsumer.channel_names(), set())

    def test_one_instance_per_message_dispatched_by_channel(self) -> None:
        """Each message gets a new instance, dispatched to its channel's mapped method."""
        client = Client()
        with apply_routes([Audit.as_route()]):
            client.send_and_consume("audit.log", {"x": 1})
            client.send_and_consume("audit.count", {"x": 2})
            client.send_and_consume("audit.log", {"x": 3})
        self.assertEqual([name for name, _, _ in calls], ["log", "count", "log"])
        instances = [instance for _, instance, _ in calls]
        self.assertEqual(len({id(i) for i in instances}), 3)
        self.assertTrue(all(isinstance(i, Audit) for i in instances))
        self.assertEqual(instances[2].message["x"], 3)

    def test_route_kwargs_reach_handler_and_self_kwargs(self) -> None:
        """Route kwargs reach the handler and self.kwargs; a filtered-out path finds none."""
        client = Client()
        with apply_routes([Audit.as_route(path=r"^/log/(?P<level>\w+)/")]):
            client.send_and_consume("audit.log", {"path": "/log/warn/"})
            # Filtered out: no route, and not a channel with a default route.
            client.send("audit.log", {"path": "/other/"})
            with self.assertRaisesRegex(AssertionError, "Can't find consumer"):
                client.consume("audit.log")
        self.assertEqual(calls[0][2], {"level": "warn"})
        self.assertEqual(calls[0][1].kwargs, {"level": "warn"})

    def test_dispatch_returns_the_handler_result(self) -> None:
        """dispatch() returns what the mapped handler returns."""
        client = Client()
        with apply_routes([Audit.as_route()]):
            consumer = client.get_consumer_by_channel("audit.log")
            self.assertIs(consumer, Audit)
        message = Message({"reply_channel": client.reply_channel}, "audit.log", None)
        instance = Audit(message)
        self.assertEqual(instance.dispatch(message), "logged")

    def test_unmapped_channel_is_a_clear_error(self) -> None:
        """A consumer made for a channel outside method_mapping raises ValueError naming it."""
        message = Message({}, "audit.unknown", None)
        with self.assertRaisesRegex(ValueError, "no handler for channel 'audit.unknown'"):
            Audit(message)

    def test_as_route_without_attrs_routes_the_class_itself(self) -> None:
        """as_route() without attrs routes the class itself on all its mapped channels."""
        r = Audit.as_route(path=r"^/a/")
        self.assertIsInstance(r, RouteClass)
        self.assertIs(r.consumer, Audit)
        self.assertEqual(r.channel_names(), {"audit.log", "audit.count"})
        self.assertEqual(Router([r]).channels, {"audit.log", "audit.count"})

    def test_as_route_with_attrs_makes_a_subclass(self) -> None:
        """as_route(attrs=dict) routes a same-named subclass with those attributes set."""
        r = Counter.as_route(attrs={"channel_session": False, "extra": 5})
        sub = r.consumer
        self.assertIsNot(sub, Counter)
        self.assertTrue(issubclass(sub, Counter))
        self.assertEqual(sub.__name__, "Counter")
        self.assertEqual(sub.__module__, Counter.__module__)
        self.assertFalse(sub.channel_session)
        self.assertEqual(sub.extra, 5)
        self.assertTrue(Counter.channel_session)
        self.assertFalse(hasattr(Counter, "extra"))
        with self.assertRaises(TypeError):
            Counter.as_route(attrs=[("channel_session", False)])  # type: ignore[arg-type]

    def test_channel_session_flag_persists_between_messages(self) -> None:
        """channel_session = True gives each reply channel a session kept between messages."""
        client = Client()
        other = Client()
        with apply_routes([Counter.as_route()]):
            client.send_and_consume("count.up")
            client.send_and_consume("count.up")
            other.send_and_consume("count.up")
        self.assertEqual(client.receive(), {"n": 1})
        self.assertEqual(client.receive(), {"n": 2})
        self.assertEqual(other.receive(), {"n": 1})
        self.assertEqual(session_for_reply_channel(client.reply_channel)["n"], 2)

    def test_channel_session_user_flag_gives_message_user(self) -> None:
        """channel_session_user = True sets message.user from the channel session's login."""
        client = Client()
        with apply_routes([WhoAmI.as_route()]):
            client.send_and_consume("who.am.i")
            self.assertEqual(client.receive(), {"user": None})
            user = User.objects.create(username="bea")
            session = session_for_reply_channel(client.reply_channel)
            session["_auth_user_id"] = str(user.pk)
            session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
            session["_auth_user_hash"] = user.get_session_auth_hash()
            session.save()
            client.send_and_consume("who.am.i")
            self.assertEqual(client.receive(), {"user": "bea"})

    def test_without_session_flags_no_session_is_made(self) -> None:
        """A consumer without session flags gets no channel_session and saves no session."""
        client = Client()
        with apply_routes([Audit.as_route()]):
            client.send_and_consume("audit.log")
        message = calls[0][1].message
        self.assertFalse(hasattr(message, "channel_session"))
        self.assertFalse(
            session_for_reply_channel(client.reply_channel).exists(
                session_for_reply_channel(client.reply_channel).session_key
            )
        )
