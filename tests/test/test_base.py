"""
chanserv.test.base: ChannelTestCase / TransactionChannelTestCase (layer swap
and restore, run as inner test classes), Client (consumers run as the worker
runs them) and apply_routes (every alias honoured).
"""

from __future__ import annotations

import unittest
import weakref
from typing import Any

import pytest
from django.db import close_old_connections
from django.test import override_settings

from chanserv import Channel, Group, channel_layers, route
from chanserv.exceptions import ConsumeLater, DenyConnection, WebsocketCloseException
from chanserv.layers import InMemoryChannelLayer
from chanserv.routing import connect_consumer, null_consumer
from chanserv.signals import consumer_finished, consumer_started
from chanserv.test import (
    ChannelTestCase,
    Client,
    TransactionChannelTestCase,
    apply_routes,
)

TWO_LAYERS = {
    "default": {
        "BACKEND": "chanserv.layers.InMemoryChannelLayer",
        "ROUTING": "tests.routing.channel_routing",
    },
    "other": {
        "BACKEND": "asgiref.inmemory.ChannelLayer",
        "ROUTING": [],
    },
}


def run_tests(case: type[unittest.TestCase]) -> unittest.TestResult:
    """Run a test class, in name order; return the result."""
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    result = unittest.TestResult()
    suite.run(result)
    return result


def assert_passed(result: unittest.TestResult, count: int) -> None:
    problems = [text for _, text in result.errors + result.failures]
    assert problems == [], "\n".join(problems)
    assert result.testsRun == count


# -- ChannelTestCase -------------------------------------------------------------


@pytest.mark.parametrize("base", [ChannelTestCase, TransactionChannelTestCase])
def test_each_test_gets_a_fresh_layer_that_is_restored(base: Any) -> None:
    """Each test gets a fresh in-memory layer for the alias; the original comes back after."""
    original = channel_layers["default"]
    seen: list[Any] = []

    class Inner(base):  # type: ignore[misc, valid-type]
        def test_a(self) -> None:
            """Inside a test the alias is a new in-memory layer with the original routing."""
            wrapper = channel_layers["default"]
            seen.append(wrapper)
            self.assertIsNot(wrapper, original)
            self.assertIsInstance(wrapper.channel_layer, InMemoryChannelLayer)
            self.assertEqual(wrapper.routing, original.routing)
            self.assertEqual(wrapper.alias, "default")
            Channel("leak.test").send({"n": 1})
            self.assertEqual(self.get_next_message("leak.test")["n"], 1)
            Channel("leak.test").send({"n": 2})

        def test_b(self) -> None:
            """A message test_a left behind is not in this test's layer."""
            seen.append(channel_layers["default"])
            self.assertIsNone(self.get_next_message("leak.test"))

    assert_passed(run_tests(Inner), 2)
    assert channel_layers["default"] is original
    assert seen[0] is not seen[1]
    assert original.receive(["leak.test"]) == (None, None)


def test_get_next_message_require_fails_the_test() -> None:
    """get_next_message(require=True) on an empty channel fails the test, naming it."""

    class Inner(ChannelTestCase):
        def test_required(self) -> None:
            """Fails on purpose: nothing was sent to the channel required."""
            self.get_next_message("nothing.here", require=True)

    result = run_tests(Inner)
    assert len(result.failures) == 1
    assert "Expected a message on channel nothing.here" in result.failures[0][1]


@override_settings(CHANNEL_LAYERS=TWO_LAYERS)
def test_test_channel_aliases_swaps_each_alias() -> None:
    """test_channel_aliases gives each listed alias its own fresh layer, restored after."""
    originals = {alias: channel_layers[alias] for alias in ("default", "other")}

    class Inner(ChannelTestCase):
        test_channel_aliases = ["default", "other"]

        def test_both(self) -> None:
            """Both aliases are fresh layers; a send on one is not seen on the other."""
            for alias, original in originals.items():
                wrapper = channel_layers[alias]
                self.assertIsNot(wrapper, original)
                self.assertIsInstance(wrapper.channel_layer, InMemoryChannelLayer)
            Channel("x.y", alias="other").send({"on": "other"})
            self.assertIsNone(self.get_next_message("x.y"))
            self.assertEqual(self.get_next_message("x.y", alias="other")["on"], "other")

    assert_passed(run_tests(Inner), 1)
    for alias, original in originals.items():
        assert channel_layers[alias] is original


def test_a_test_layer_keeps_the_alias_routing() -> None:
    """A test's fresh layer keeps the routing of the alias it replaces."""

    def consumer(message: Any) -> None:
        message.reply_channel.send({"ok": True})

    original = channel_layers["default"]
    saved = original.routing
    original.routing = [route("kept.routing", consumer)]
    try:

        class Inner(ChannelTestCase):
            def test_routed(self) -> None:
                """A route set on the original alias reaches its consumer in the test."""
                client = Client()
                client.send_and_consume("kept.routing")
                self.assertEqual(client.receive(), {"ok": True})

        assert_passed(run_tests(Inner), 1)
    finally:
        original.routing = saved


# -- Client ----------------------------------------------------------------------


class ClientTests(ChannelTestCase):
    def test_reply_channel_is_alias_and_five_letters(self) -> None:
        """A Client's reply channel is its alias and five random letters, unique per client."""
        client = Client()
        self.assertRegex(client.reply_channel, r"^default[a-zA-Z]{5}$")
        self.assertNotEqual(client.reply_channel, Client().reply_channel)
        self.assertEqual(client.channel_layer.alias, "default")

    def test_send_copies_and_adds_reply_channel(self) -> None:
        """Client.send deep-copies the content, adding its reply channel unless given one."""
        client = Client()
        content = {"nested": {"a": 1}}
        client.send("some.channel", content)
        content["nested"]["a"] = 2
        message = self.get_next_message("some.channel", require=True)
        assert message is not None
        self.assertEqual(
            message.content, {"nested": {"a": 1}, "reply_channel": client.reply_channel}
        )
        client.send("some.channel", {"reply_channel": "elsewhere"})
        self.assertEqual(self.get_next_message("some.channel")["reply_channel"], "elsewhere")

    def test_consume_runs_the_routed_consumer_with_kwargs(self) -> None:
        """send_and_consume runs the routed consumer with route kwargs, returning its result."""

        def consumer(message: Any, name: str) -> str:
            message.reply_channel.send({"hello": name})
            return "result"

        client = Client()
        with apply_routes([route("greet", consumer, path=r"^/(?P<name>\w+)$")]):
            self.assertEqual(client.send_and_consume("greet", {"path": "/ann"}), "result")
        self.assertEqual(client.receive(), {"hello": "ann"})
        self.assertIsNone(client.receive())

    def test_signals_bracket_the_consumer_and_sends_wait_for_the_end(self) -> None:
        """The consumer signals bracket the consumer; its sends go out when it ends."""
        events: list[Any] = []

        def started(sender: Any, **kwargs: Any) -> None:
            events.append(("started", sender, kwargs))

        def finished(sender: Any, **kwargs: Any) -> None:
            events.append(("finished", sender))

        def consumer(message: Any) -> None:
            Channel("out").send({"n": 1})
            events.append(("pending", self.get_next_message("out")))

        consumer_started.connect(started, dispatch_uid="t-started")
        consumer_finished.connect(finished, dispatch_uid="t-finished")
        client = Client()
        try:
            with apply_routes(route("work", consumer)):
                client.send_and_consume("work")
        finally:
            consumer_started.disconnect(dispatch_uid="t-started")
            consumer_finished.disconnect(dispatch_uid="t-finished")
        self.assertEqual(
            events,
            [
                ("started", Client, {"signal": consumer_started, "environ": {}}),
                ("pending", None),
                ("finished", Client),
            ],
        )
        self.assertEqual(self.get_next_message("out")["n"], 1)

    def test_close_old_connections_is_off_while_consuming_only(self) -> None:
        """Client unhooks close_old_connections from the signals only while consuming."""
        connected: list[bool] = []

        def receivers(signal: Any) -> list[Any]:
            return [
                r() if isinstance(r, weakref.ReferenceType) else r for _, r, *_ in signal.receivers
            ]

        def consumer(message: Any) -> None:
            connected.append(close_old_connections in receivers(consumer_finished))
            connected.append(close_old_connections in receivers(consumer_started))

        with apply_routes(route("db.work", consumer)):
            Client().send_and_consume("db.work")
        self.assertEqual(connected, [False, False])
        self.assertIn(close_old_connections, receivers(consumer_finished))
        self.assertIn(close_old_connections, receivers(consumer_started))

    def test_consumer_errors_reach_the_test_after_consumer_finished(self) -> None:
        """A consumer's exception reaches the test after consumer_finished, its sends kept."""
        finished: list[bool] = []

        def consumer(message: Any) -> None:
            Channel("partial").send({"sent": "before the error"})
            raise KeyError("boom")

        consumer_finished.connect(
            lambda **kw: finished.append(True), dispatch_uid="t-f", weak=False
        )
        try:
            with apply_routes(route("fails", consumer)), self.assertRaises(KeyError):
                Client().send_and_consume("fails")
        finally:
            consumer_finished.disconnect(dispatch_uid="t-f")
        self.assertEqual(finished, [True])
        self.assertEqual(self.get_next_message("partial")["sent"], "before the error")

    def test_worker_exceptions_are_handled_as_the_worker_does(self) -> None:
        """Deny, close and ConsumeLater exceptions are handled as the worker handles them."""

        def deny(message: Any) -> None:
            raise DenyConnection()

        def close(message: Any) -> None:
            raise WebsocketCloseException(4000)

        attempts: list[int] = []

        def later(message: Any) -> None:
            attempts.append(message.get("__retries__", 0))
            if len(attempts) < 2:
                raise ConsumeLater()
            message.reply_channel.send({"done": True})

        client = Client()
        with apply_routes(
            [
                route("websocket.connect", deny),
                route("websocket.receive", close),
                route("later", later),
            ]
        ):
            client.send_and_consume("websocket.connect")
            self.assertEqual(client.receive(), {"close": True})
            client.send_and_consume("websocket.receive")
            self.assertEqual(client.receive(), {"close": 4000})
            self.assertIsNone(client.send_and_consume("later"))
            self.assertIsNone(client.receive())
            client.consume("later")
        self.assertEqual(attempts, [0, 1])
        self.assertEqual(client.receive(), {"done": True})

    def test_nothing_to_consume(self) -> None:
        """consume() of an empty or unrouted channel fails; fail_on_none=False: None."""
        client = Client()
        with self.assertRaisesRegex(AssertionError, "No message for channel empty"):
            client.consume("empty")
        self.assertIsNone(client.consume("empty", fail_on_none=False))
        client.send("unrouted.channel")
        with self.assertRaisesRegex(AssertionError, "Can't find consumer"):
            client.consume("unrouted.channel")
        client.send("unrouted.channel")
        self.assertIsNone(client.consume("unrouted.channel", fail_on_none=False))
        self.assertIsNone(self.get_next_message("unrouted.channel"))

    def test_default_routes_as_on_the_server(self) -> None:
        """Unrouted, Client uses the server's defaults: accept, no-op, Django's HTTP views."""
        client = Client()
        self.assertIs(client.get_consumer_by_channel("websocket.connect"), connect_consumer)
        self.assertIs(client.get_consumer_by_channel("websocket.receive"), null_consumer)
        self.assertIs(client.get_consumer_by_channel("websocket.disconnect"), null_consumer)
        self.assertIsNone(client.get_consumer_by_channel("custom.channel"))
        client.send_and_consume("websocket.connect", {"path": "/"})
        self.assertEqual(client.receive(), {"accept": True})
        client.send_and_consume(
            "http.request",
            {"method": "GET", "path": "/hello/", "query_string": b"", "headers": []},
        )
        response = client.receive()
        assert response is not None
        self.assertEqual(response["status"], 200)
        self.assertEqual(response["content"], b"Hello world")

    def test_user_routes_come_before_the_defaults(self) -> None:
        """A route given by apply_routes takes precedence over the default websocket.connect."""

        def mine(message: Any) -> None:
            pass

        client = Client()
        with apply_routes(route("websocket.connect", mine)):
            self.assertIs(client.get_consumer_by_channel("websocket.connect"), mine)
            client.send_and_consume("websocket.connect")
        self.assertIsNone(client.receive())

    def test_join_group(self) -> None:
        """join_group adds the client's reply channel to the group, so group sends reach it."""
        client = Client()
        client.join_group("watchers")
        Group("watchers").send({"news": 1})
        self.assertEqual(client.receive(), {"news": 1})
        self.assertIsNone(client.receive())


# -- apply_routes ------------------------------------------------------------------


def marker(message: Any) -> None:
    message.reply_channel.send({"marker": message.channel.name})


class ApplyRoutesTests(ChannelTestCase):
    def test_context_manager_swaps_and_restores_the_router(self) -> None:
        """As a context manager apply_routes swaps in the routes, then restores the router."""
        wrapper = channel_layers["default"]
        router, routing = wrapper.router, wrapper.routing
        with apply_routes([route("a.one", marker), route("a.two", marker)]) as applied:
            self.assertIsInstance(applied, apply_routes)
            self.assertEqual(wrapper.router.channels, {"a.one", "a.two"})
        self.assertIs(wrapper.router, router)
        self.assertIs(wrapper.routing, routing)

    def test_restored_when_the_block_raises(self) -> None:
        """apply_routes restores the router when its block raises."""
        wrapper = channel_layers["default"]
        router = wrapper.router
        with self.assertRaises(RuntimeError), apply_routes(route("a.one", marker)):
            raise RuntimeError()
        self.assertIs(wrapper.router, router)

    def test_routing_forms(self) -> None:
        """apply_routes takes a route, nested lists, a dict, a dotted path or an empty list."""
        wrapper = channel_layers["default"]
        with apply_routes(route("single", marker)):
            self.assertEqual(wrapper.router.channels, {"single"})
        with apply_routes([[route("l.one", marker)], [route("l.two", marker)]]):
            self.assertEqual(wrapper.router.channels, {"l.one", "l.two"})
        with apply_routes({"legacy.dict": marker}):
            self.assertEqual(wrapper.router.channels, {"legacy.dict"})
        with apply_routes("tests.routing.channel_routing"):
            self.assertEqual(wrapper.router.channels, set())
        with apply_routes([]):
            self.assertEqual(wrapper.router.channels, set())

    def test_nested_uses_of_one_instance(self) -> None:
        """One apply_routes can be entered inside itself; each exit restores a level."""
        wrapper = channel_layers["default"]
        router = wrapper.router
        outer = apply_routes(route("outer", marker))
        with outer:
            inner_router = wrapper.router
            with outer:
                self.assertIsNot(wrapper.router, inner_router)
            self.assertIs(wrapper.router, inner_router)
        self.assertIs(wrapper.router, router)

    @apply_routes(route("decorated", marker))
    def test_method_decorator(self) -> None:
        """apply_routes decorating a test method routes its consumers during the test."""
        client = Client()
        client.send_and_consume("decorated")
        self.assertEqual(client.receive(), {"marker": "decorated"})


def test_function_decorator_keeps_the_name_and_restores() -> None:
    """apply_routes on a function keeps its name and result and restores the router after."""
    wrapper = channel_layers["default"]
    router = wrapper.router

    @apply_routes(route("fn.decorated", marker))
    def check(value: int) -> int:
        assert channel_layers["default"].router.channels == {"fn.decorated"}
        return value + 1

    assert check.__name__ == "check"
    assert check(1) == 2
    assert wrapper.router is router


def test_class_decorator_covers_setup_and_test_and_restores() -> None:
    """apply_routes on a test class covers setUp and each test, and restores after a failure."""
    seen: list[set[str]] = []

    @apply_routes(route("cls.decorated", marker))
    class Inner(ChannelTestCase):
        def setUp(self) -> None:
            seen.append(set(channel_layers["default"].router.channels))

        def test_a(self) -> None:
            """The class's routes are in place during the test, and its consumer runs."""
            seen.append(set(channel_layers["default"].router.channels))
            client = Client()
            client.send_and_consume("cls.decorated")
            self.assertEqual(client.receive(), {"marker": "cls.decorated"})

        def test_b(self) -> None:
            """Fails on purpose: the routes must be restored after a failing test too."""
            raise AssertionError("a failing test still gets its routes back")

    before = channel_layers["default"].router
    result = run_tests(Inner)
    assert result.testsRun == 2 and len(result.failures) == 1 and not result.errors
    assert seen == [{"cls.decorated"}] * 3
    assert channel_layers["default"].router is before


def test_class_decorator_on_a_plain_class() -> None:
    """apply_routes on a plain class routes between its setUp and tearDown, then restores."""

    @apply_routes(route("plain", marker))
    class Plain:
        def setUp(self) -> None:
            pass

        def tearDown(self) -> None:
            pass

    before = channel_layers["default"].router
    instance = Plain()
    instance.setUp()
    assert channel_layers["default"].router.channels == {"plain"}
    instance.tearDown()
    assert channel_layers["default"].router is before


@override_settings(CHANNEL_LAYERS=TWO_LAYERS)
def test_aliases_are_honoured() -> None:
    """apply_routes changes only the routers of the aliases given, one alias as a string too."""
    default, other = channel_layers["default"], channel_layers["other"]
    default_router, other_router = default.router, other.router
    with apply_routes(route("only.other", marker), aliases=["other"]):
        assert other.router.channels == {"only.other"}
        assert default.router is default_router
    assert other.router is other_router
    with apply_routes(route("both", marker), aliases=["default", "other"]):
        assert default.router.channels == other.router.channels == {"both"}
        client = Client("other")
        client.send_and_consume("both")
        assert client.receive() == {"marker": "both"}
    assert (default.router, other.router) == (default_router, other_router)
    with apply_routes(route("str.alias", marker), aliases="other"):
        assert other.router.channels == {"str.alias"}
        assert default.router is default_router
