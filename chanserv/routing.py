"""
Channel routing: which consumer handles a message.

A routing is a list of routable objects -- :func:`route`, :func:`route_class`,
:func:`include`, or anything with ``match(message)`` and ``channel_names()``
-- or a dotted path to such a list, or a legacy dict ``{channel: consumer}``.
:class:`Router` wraps a routing for the worker: :attr:`Router.channels` is
what the worker listens on, :meth:`Router.match` picks the consumer.

Matching is pure: no I/O, no shared state written, so it runs in the worker
thread that will run the consumer, never on the reactor (an application's
own regular expression may be slow; that must not stall the server).

Filters (``route("http.request", view, path=r"^/poll/$")``) are regular
expressions applied with ``re.match`` -- anchored at the start only -- to the
message content's value of the same key:

- they are compiled when the route is made; only *named* groups are
  allowed, since their ``groupdict()`` becomes the consumer's keyword
  arguments (an unnamed group raises :class:`ValueError`);
- a key missing from the message means no match;
- ``bytes`` values are ASCII-decoded before matching; a value that is not a
  ``str``, or ``bytes`` that are not ASCII, never matches;
- the ``path`` value keeps its leading ``/``.

An :func:`include` with prefix filters matches them against a copy of the
message, chops the matched part off each value and tries its own routes on
the result; the first match, in list order, wins.
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

__all__ = [
    "Include",
    "Route",
    "RouteClass",
    "Router",
    "connect_consumer",
    "include",
    "null_consumer",
    "route",
    "route_class",
]

#: What ``match`` returns: the consumer and its keyword arguments.
Match = tuple[Callable[..., Any], dict[str, Any]]


class Routable(Protocol):
    """What a routing list may hold."""

    def match(self, message: Any) -> Match | None: ...

    def channel_names(self) -> set[str]: ...


def import_dotted(path: str, what: str) -> Any:
    """
    The object named by ``path`` (``"package.module.name"``).

    :raises ImportError: the module or the name cannot be imported; the text
        names ``what`` and ``path``.
    """
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportError("%s %r is not a dotted path like 'module.name'" % (what, path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError("Cannot import %s %r: %s" % (what, path, e)) from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(
            "Cannot import %s %r: module %r has no attribute %r" % (what, path, module_name, attr)
        ) from None


def normalise_re_arg(value: Any) -> Any:
    """``bytes`` ASCII-decoded to ``str``; anything else unchanged."""
    if isinstance(value, bytes):
        return value.decode("ascii")
    return value


def _text(value: Any) -> str | None:
    """The ``str`` a filter matches against, or None if it cannot match."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return None


def compile_filters(filters: Mapping[str, Any], owner: str) -> list[tuple[str, re.Pattern[str]]]:
    """
    Compile filter regexes, refusing unnamed groups.

    :param owner: how to name the route in error messages.
    :raises ValueError: a pattern has an unnamed group, or does not compile.
    :raises TypeError: a pattern is not a ``str``, ``bytes`` or compiled
        ``str`` pattern.
    """
    compiled = []
    for name, value in filters.items():
        pattern = normalise_re_arg(value)
        if not isinstance(pattern, (str, re.Pattern)):
            raise TypeError(
                "Filter %s=%r on %s must be a regular expression string" % (name, value, owner)
            )
        try:
            regex = re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ValueError("Filter %s=%r on %s is invalid: %s" % (name, value, owner, e)) from e
        if not isinstance(regex.pattern, str):
            raise TypeError("Filter %s=%r on %s must be a str pattern" % (name, value, owner))
        if regex.groups != len(regex.groupindex):
            raise ValueError(
                "Filter %s=%r on %s contains unnamed groups; only named groups "
                "(?P<name>...) are allowed, as they become the consumer's keyword "
                "arguments" % (name, regex.pattern, owner)
            )
        compiled.append((name, regex))
    return compiled


def _format_filters(filters: list[tuple[str, re.Pattern[str]]]) -> str:
    return "".join(", %s=%r" % (name, regex.pattern) for name, regex in filters)


class Route:
    """
    Send messages on ``channels`` that pass every filter to ``consumer``.

    :param channels: a channel name or a list of them.
    :param consumer: a callable ``consumer(message, **kwargs)``, or the dotted
        path of one, imported on first use (the import error then names the
        path).
    :param filters: ``key=regex`` on the message content; see the module.
    :raises ValueError, TypeError: bad channels, consumer or filters.
    """

    def __init__(self, channels: str | bytes | Iterable[str], consumer: Any, **filters: Any):
        names: Iterable[Any] = [channels] if isinstance(channels, (str, bytes)) else channels
        self.channels: list[str] = [normalise_re_arg(c) for c in names]
        for channel in self.channels:
            if not isinstance(channel, str) or not channel:
                raise TypeError("Route channel names must be non-empty str, not %r" % (channel,))
        self._channel_set = frozenset(self.channels)
        if not (isinstance(consumer, str) or callable(consumer)):
            raise TypeError(
                "Route consumer must be a callable or a dotted path string, not %r" % (consumer,)
            )
        self._consumer = consumer
        self.filters = compile_filters(filters, "route(%r)" % (self.channels,))

    @property
    def consumer(self) -> Callable[..., Any]:
        """The consumer, imported now if it was given as a dotted path."""
        consumer = self._consumer
        if isinstance(consumer, str):
            resolved = import_dotted(consumer, "consumer")
            if not callable(resolved):
                raise TypeError("Consumer %r is not callable: %r" % (consumer, resolved))
            self._consumer = consumer = resolved
        return consumer

    def match(self, message: Any) -> Match | None:
        """``(consumer, kwargs)`` if ``message`` matches, else None."""
        if message.channel.name not in self._channel_set:
            return None
        content = message.content
        kwargs: dict[str, Any] = {}
        for name, regex in self.filters:
            if name not in content:
                return None
            value = _text(content[name])
            if value is None:
                return None
            m = regex.match(value)
            if m is None:
                return None
            kwargs.update(m.groupdict())
        return self.consumer, kwargs

    def channel_names(self) -> set[str]:
        return set(self.channels)

    def _consumer_name(self) -> str:
        c = self._consumer
        if isinstance(c, str):
            return c
        return "%s.%s" % (
            getattr(c, "__module__", "?"),
            getattr(c, "__qualname__", type(c).__name__),
        )

    def __repr__(self) -> str:
        return "route(%r, %s%s)" % (
            self.channels,
            self._consumer_name(),
            _format_filters(self.filters),
        )


class RouteClass(Route):
    """
    Route to a class-based consumer: its channels come from
    ``consumer.channel_names()``; the consumer is called (instantiated) as
    ``ConsumerClass(message, **kwargs)``.

    :param consumer: the class, or its dotted path (imported at once: the
        channel names are needed to build the router).
    :raises ValueError: ``consumer.channel_names`` is missing or not callable.
    """

    def __init__(self, consumer: Any, **filters: Any) -> None:
        if isinstance(consumer, str):
            consumer = import_dotted(consumer, "consumer class")
        names = getattr(consumer, "channel_names", None)
        if not callable(names):
            raise ValueError(
                "The consumer passed to route_class, %r, has no callable "
                "channel_names() method" % (consumer,)
            )
        super().__init__(list(names()), consumer, **filters)

    def __repr__(self) -> str:
        return "route_class(%s%s)" % (self._consumer_name(), _format_filters(self.filters))


class Include:
    """
    Include another routing, optionally under prefix filters.

    :param routing: a list of routables, the dotted path of one, or a legacy
        ``{channel: consumer}`` dict.
    :param prefix_filters: ``key=regex``; each must match the start of the
        message's value, which is chopped (``value[m.end():]``) for the inner
        routes.  Named groups become keyword arguments; inner routes' ones
        win on a clash.
    """

    def __init__(self, routing: Any, **prefix_filters: Any) -> None:
        self.routing: list[Routable] = resolve_routing(routing)
        self.prefixes = compile_filters(
            prefix_filters, "include(%s)" % (repr(routing) if isinstance(routing, str) else "...",)
        )
        self._channels = self._collect_channels()

    def _collect_channels(self) -> frozenset[str]:
        result: set[str] = set()
        for entry in self.routing:
            result.update(entry.channel_names())
        return frozenset(result)

    def add_route(self, route: Routable) -> None:
        """Append a routable; it is tried after every existing entry."""
        _check_routable(route)
        self.routing.append(route)
        self._channels = self._collect_channels()

    def match(self, message: Any) -> Match | None:
        """The first match of the inner routes, or None (short-circuits)."""
        if message.channel.name not in self._channels:
            return None
        kwargs: dict[str, Any] = {}
        if self.prefixes:
            content = message.content
            chopped = dict(content)
            for name, regex in self.prefixes:
                if name not in content:
                    return None
                value = _text(content[name])
                if value is None:
                    return None
                m = regex.match(value)
                if m is None:
                    return None
                kwargs.update(m.groupdict())
                chopped[name] = value[m.end() :]
            # A shallow copy with new content: the original message (which
            # the consumer gets) is left untouched.
            message = copy.copy(message)
            message.content = chopped
        for entry in self.routing:
            result = entry.match(message)
            if result is not None:
                if not kwargs:
                    return result
                consumer, inner = result
                kwargs.update(inner)
                return consumer, kwargs
        return None

    def channel_names(self) -> set[str]:
        return set(self._channels)

    def __repr__(self) -> str:
        return "include(%r%s)" % (self.routing, _format_filters(self.prefixes))


def _check_routable(entry: Any) -> None:
    if not (
        callable(getattr(entry, "match", None)) and callable(getattr(entry, "channel_names", None))
    ):
        raise TypeError(
            "Routing entry %r is not routable: it needs match(message) and "
            "channel_names() (use route(), route_class() or include())" % (entry,)
        )


def resolve_routing(routing: Any) -> list[Routable]:
    """
    A fresh list of routables from any routing form.

    :raises ImportError: a dotted path that cannot be imported.
    :raises TypeError: not a list, dict or dotted path, or an entry that is
        not routable.
    """
    if isinstance(routing, str):
        routing = import_dotted(routing, "routing")
    if isinstance(routing, Mapping):
        return [Route(channel, consumer) for channel, consumer in routing.items()]
    if isinstance(routing, (list, tuple)):
        entries = list(routing)
        for entry in entries:
            _check_routable(entry)
        return entries
    raise TypeError(
        "A routing must be a list, a {channel: consumer} dict or the dotted "
        "path of one, not %r" % (routing,)
    )


def connect_consumer(message: Any, **kwargs: Any) -> None:
    """The default ``websocket.connect`` consumer: accept every socket."""
    message.reply_channel.send({"accept": True})


def null_consumer(message: Any, **kwargs: Any) -> None:
    """The default ``websocket.receive``/``disconnect`` consumer: nothing."""


class Router:
    """
    The routing of one channel layer.

    :attr:`root` is an :class:`Include` of the routing; :attr:`channels` the
    set of channels it routes (what the worker listens on).  Any thread;
    :meth:`add_route` and :meth:`check_default` are for set-up, before the
    worker starts.
    """

    def __init__(self, routing: Any) -> None:
        self.root = Include(routing)
        self.channels: set[str] = self.root.channel_names()
        self._defaults_added = False

    resolve_routing = staticmethod(resolve_routing)
    normalise_re_arg = staticmethod(normalise_re_arg)

    def add_route(self, route: Routable) -> None:
        """Append ``route`` after every existing route."""
        self.root.add_route(route)
        self.channels = self.root.channel_names()

    def match(self, message: Any) -> Match | None:
        """``(consumer, kwargs)`` for the first route matching, or None."""
        return self.root.match(message)

    def check_default(self, http_consumer: Callable[..., Any] | None = None) -> None:
        """
        Append the fallback routes, tried after every user route: so an
        ``http.request`` no user route takes goes to the Django views, and
        WebSockets are accepted and their frames consumed.

        - ``http.request`` -> ``http_consumer``, by default the Django views
          (``chanserv.handler.ViewConsumer``), behind static files when
          ``DEBUG`` is on and staticfiles is installed, as ``runserver``;
        - ``websocket.connect`` -> :func:`connect_consumer` (accept);
        - ``websocket.receive``, ``websocket.disconnect`` -> :func:`null_consumer`.

        The server and the worker call it once at start-up, as Channels 1.x's
        ``runserver``/``runworker`` did; later calls do nothing.
        """
        if self._defaults_added:
            return
        if http_consumer is None:
            from chanserv.staticfiles import default_http_consumer

            http_consumer = default_http_consumer()
        self.add_route(Route("http.request", http_consumer))
        self.add_route(Route("websocket.connect", connect_consumer))
        self.add_route(Route("websocket.receive", null_consumer))
        self.add_route(Route("websocket.disconnect", null_consumer))
        self._defaults_added = True

    def __repr__(self) -> str:
        return "<Router %r>" % (self.root.routing,)


def route(channels: str | bytes | Iterable[str], consumer: Any, **filters: Any) -> Route:
    """``route("websocket.receive", ws_message, path=r"^/chat/")``: see :class:`Route`."""
    return Route(channels, consumer, **filters)


def route_class(consumer: Any, **filters: Any) -> RouteClass:
    """``route_class(ChatConsumer, path=r"^/chat/")``: see :class:`RouteClass`."""
    return RouteClass(consumer, **filters)


def include(routing: Any, **prefix_filters: Any) -> Include:
    """``include("chat.routing.routes", path=r"^/chat")``: see :class:`Include`."""
    return Include(routing, **prefix_filters)
