"""
Test cases and clients for testing consumers without a server, as in
Channels 1.x's ``channels.test``: a fresh in-memory layer per test, a
client that runs consumers as the worker does, and :func:`apply_routes`.
Everything runs in the test's own thread (any thread), with no reactor.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from django.db import close_old_connections
from django.test.testcases import TestCase, TransactionTestCase

from chanserv._compat.django import TestCaseHooks
from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.channel import DEFAULT_CHANNEL_LAYER, Group
from chanserv.layers import InMemoryChannelLayer
from chanserv.layers.base import random_string
from chanserv.message import Message
from chanserv.routing import Match, Router, include
from chanserv.signals import consumer_finished, consumer_started
from chanserv.staticfiles import default_http_consumer
from chanserv.types import Content, ContentMapping
from chanserv.worker import run_consumer

__all__ = [
    "ChannelTestCase",
    "ChannelTestCaseMixin",
    "Client",
    "TransactionChannelTestCase",
    "apply_routes",
]

# chanserv.signals connects close_old_connections under these ids.
_CLOSE_OLD_CONNECTIONS = (
    (consumer_started, "chanserv.close_old_connections.started"),
    (consumer_finished, "chanserv.close_old_connections.finished"),
)


@contextmanager
def _database_connections_kept() -> Iterator[None]:
    """
    Run consumers without ``close_old_connections``, as Django's test client
    runs views: closing the connection would end the test's transaction.
    The signals are process-wide, so a server running in this process (a
    live-server test) closes no stale connection meanwhile either.
    """
    disconnected = [
        (signal, uid)
        for signal, uid in _CLOSE_OLD_CONNECTIONS
        if signal.disconnect(close_old_connections, dispatch_uid=uid)
    ]
    try:
        yield
    finally:
        for signal, uid in disconnected:
            signal.connect(close_old_connections, dispatch_uid=uid)


def _restore_layers(saved: Mapping[str, ChannelLayerWrapper | None]) -> None:
    for alias, old in saved.items():
        channel_layers.set(alias, old)


def _restore_saved_layers(owner: Any) -> None:
    saved = owner.__dict__.get("_chanserv_saved_layers")
    if saved is not None:
        del owner._chanserv_saved_layers
        _restore_layers(saved)


class ChannelTestCaseMixin(TestCaseHooks):
    """
    Swaps, for each test, every alias of :attr:`test_channel_aliases` for a
    new :class:`~chanserv.layers.InMemoryChannelLayer` with the alias's
    routing (so nothing leaks between tests, whatever layer the settings
    name), and puts the original layers back afterwards.
    """

    #: The layers to replace; customise to test several layers.
    test_channel_aliases: Sequence[str] = [DEFAULT_CHANNEL_LAYER]

    @classmethod
    def before_test_setup(cls) -> None:
        # Before Django's own per-test setup, so fixtures and setUp already
        # see the test layers.
        saved: dict[str, ChannelLayerWrapper | None] = {}
        try:
            for alias in cls.test_channel_aliases:
                routing = channel_layers[alias].routing
                if isinstance(routing, list):
                    routing = routing[:]
                wrapper = ChannelLayerWrapper(InMemoryChannelLayer(), alias, routing)
                saved[alias] = channel_layers.set(alias, wrapper)
        except BaseException:
            _restore_layers(saved)
            raise
        cls._chanserv_saved_layers = saved  # type: ignore[attr-defined]

    @classmethod
    def undo_before_test_setup(cls) -> None:
        _restore_saved_layers(cls)

    def before_test_teardown(self) -> None:
        _restore_saved_layers(type(self))

    def get_next_message(
        self, channel: str, alias: str = DEFAULT_CHANNEL_LAYER, require: bool = False
    ) -> Message | None:
        """
        The next message sent to ``channel`` (a ``prefix!`` for process-local
        channels) on layer ``alias``, or None when there is none -- or, with
        ``require``, the test fails.
        """
        layer = channel_layers[alias]
        received, content = layer.receive([channel], block=False)
        if received is None:
            if require:
                self.fail("Expected a message on channel %s, got none" % (channel,))  # type: ignore[attr-defined]
            return None
        return Message(content, received, layer)


class ChannelTestCase(ChannelTestCaseMixin, TestCase):
    """A Django ``TestCase`` (each test in a transaction) with fresh layers."""


class TransactionChannelTestCase(ChannelTestCaseMixin, TransactionTestCase):
    """A Django ``TransactionTestCase`` with fresh layers."""


class Client:
    """
    Plays the interface server for one connection: its messages carry
    :attr:`reply_channel` (the alias and five random letters, a normal
    channel), and :meth:`consume` runs the routed consumer in the test's
    thread.

    :param alias: the channel layer to use.
    """

    def __init__(self, alias: str = DEFAULT_CHANNEL_LAYER) -> None:
        self.alias = alias
        self.reply_channel = alias + random_string(5)
        self._default_router: Router | None = None

    @property
    def channel_layer(self) -> ChannelLayerWrapper:
        """The layer of :attr:`alias`, looked up on each use (tests swap it)."""
        return channel_layers[self.alias]

    def get_next_message(self, channel: str) -> Message | None:
        """The next message on ``channel``, or None."""
        layer = self.channel_layer
        received, content = layer.receive([channel], block=False)
        if received is None:
            return None
        return Message(content, received, layer)

    def _match(self, message: Message) -> Match | None:
        match = self.channel_layer.router.match(message)
        if match is None:
            if self._default_router is None:
                router = Router([])
                router.check_default(default_http_consumer())
                self._default_router = router
            match = self._default_router.match(message)
        return match

    def get_consumer_by_channel(self, channel: str) -> Callable[..., Any] | None:
        # Any: a consumer's signature and result are the project's own.
        """The consumer a message ``{"text": ""}`` on ``channel`` goes to, or None."""
        match = self._match(Message({"text": ""}, channel, self.channel_layer))
        return match[0] if match is not None else None

    def send(self, to: str, content: ContentMapping | None = None) -> None:
        """Send a copy of ``content`` to ``to``, with this client's ``reply_channel``."""
        message = copy.deepcopy(dict(content or {}))
        message.setdefault("reply_channel", self.reply_channel)
        self.channel_layer.send(to, message)

    def consume(self, channel: str, fail_on_none: bool = True) -> Any:
        # Any: the result is whatever the project's consumer returned (Channels 1.x API).
        """
        Take the next message off ``channel`` and run its consumer as the
        worker does; return what the consumer returned.  ``close_old_connections``
        is not run, so the test's transaction survives.

        :raises AssertionError: with ``fail_on_none``, there is no message
            or no route for it (else None is returned).
        :raises: what the consumer raised, except the exceptions the worker
            handles (``DenyConnection``, ``ChannelSocketException``,
            ``ConsumeLater``, which requeues the message).
        """
        message = self.get_next_message(channel)
        if message is None:
            if fail_on_none:
                raise AssertionError("No message for channel %s" % (channel,))
            return None
        match = self._match(message)
        if match is None:
            if fail_on_none:
                raise AssertionError("Can't find consumer for message %s" % (message,))
            return None
        consumer, kwargs = match
        with _database_connections_kept():
            return run_consumer(consumer, message, kwargs, sender=type(self))

    def send_and_consume(
        self, channel: str, content: ContentMapping | None = None, fail_on_none: bool = True
    ) -> Any:
        # Any: the result is whatever the project's consumer returned (Channels 1.x API).
        """:meth:`send`, then :meth:`consume` the message."""
        self.send(channel, content)
        return self.consume(channel, fail_on_none=fail_on_none)

    def receive(self) -> Content | None:
        """The content of the next message sent to :attr:`reply_channel`, or None."""
        message = self.get_next_message(self.reply_channel)
        return message.content if message is not None else None

    def join_group(self, group_name: str) -> None:
        """Add :attr:`reply_channel` to a group, as a consumer would."""
        Group(group_name, channel_layer=self.channel_layer).add(self.reply_channel)


class apply_routes:
    """
    Use ``routes`` as the routing of the layers ``aliases`` (default: the
    default layer) -- as a context manager, a test function or method
    decorator, or a ``TestCase`` class decorator (each test gets the routes
    from before ``setUp`` until its cleanups).  Unlike Channels 1.x, every
    alias given is rerouted, not only the default one, and the original
    router (with any default routes added to it) comes back afterwards.

    :param routes: a route, a list of routes, a list of lists of routes
        (each list included), or any routing form (dotted path, dict).
    :param aliases: the layers' aliases (a str is one alias).
    """

    def __init__(self, routes: Any, aliases: Sequence[str] | str = (DEFAULT_CHANNEL_LAYER,)):
        # Any: routes is a route, a list of routes or lists of them, or any routing form (dotted
        # path, dict), checked by Router at run time.
        self._aliases = [aliases] if isinstance(aliases, str) else list(aliases)
        self.routes = routes
        self._saved: list[list[tuple[ChannelLayerWrapper, Any, Router]]] = []

    def _routing(self) -> Any:
        routes = self.routes
        if isinstance(routes, (str, Mapping)):
            return routes
        if isinstance(routes, (list, tuple)):
            return [include(r) if isinstance(r, (list, tuple)) else r for r in routes]
        return [routes]

    def enter(self) -> apply_routes:
        """Swap the routing in (re-entrant: nested uses restore in order)."""
        routing = self._routing()
        saved: list[tuple[ChannelLayerWrapper, Any, Router]] = []
        try:
            for alias in self._aliases:
                wrapper = channel_layers[alias]
                router = Router(routing)
                saved.append((wrapper, wrapper.routing, wrapper.router))
                wrapper.routing = routing
                wrapper.router = router
        except BaseException:
            self._restore(saved)
            raise
        self._saved.append(saved)
        return self

    def exit(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        """Put back the routing :meth:`enter` replaced."""
        self._restore(self._saved.pop())

    @staticmethod
    def _restore(saved: list[tuple[ChannelLayerWrapper, Any, Router]]) -> None:
        for wrapper, routing, router in reversed(saved):
            wrapper.routing = routing
            wrapper.router = router

    __enter__ = enter
    __exit__ = exit

    def __call__(self, test_func: Any) -> Any:
        # Any: decorates a test function, method or TestCase class alike and returns the wrapped
        # function or the class itself.
        if isinstance(test_func, type):
            cls: Any = test_func
            old_setup = cls.setUp

            @functools.wraps(old_setup)
            def setUp(this: Any) -> None:
                self.enter()
                if hasattr(this, "addCleanup"):
                    this.addCleanup(self.exit)
                else:
                    this._chanserv_routes_pending = True
                old_setup(this)

            cls.setUp = setUp
            if not hasattr(cls, "addCleanup"):
                old_teardown = cls.tearDown

                @functools.wraps(old_teardown)
                def tearDown(this: Any) -> None:
                    try:
                        old_teardown(this)
                    finally:
                        if this.__dict__.pop("_chanserv_routes_pending", False):
                            self.exit()

                cls.tearDown = tearDown
            return cls

        @functools.wraps(test_func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with self:
                return test_func(*args, **kwargs)

        return inner
