"""
Channel routing: routes, includes and the :class:`Router` that picks a
message's consumer with time-bounded regular expressions.  Routes are built
at import time (any thread); matching runs in the pool thread that will run
the consumer, never on the reactor thread.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import math
import pkgutil
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import regex
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chanserv.exceptions import RouteTimeout
from chanserv.types import Content
from chanserv.utils import name_that_thing

__all__ = [
    "DEFAULT_ROUTE_TIMEOUT",
    "Filter",
    "Include",
    "Route",
    "RouteClass",
    "Router",
    "RoutingImportError",
    "connect_consumer",
    "did_you_mean",
    "include",
    "null_consumer",
    "route",
    "route_class",
    "route_timeout",
]

#: What ``match`` returns: the consumer and its keyword arguments.
Match = tuple[Callable[..., Any], dict[str, Any]]

#: Seconds of regular expression matching one message may cost when
#: ``CHANSERV_ROUTE_TIMEOUT`` is not set.
DEFAULT_ROUTE_TIMEOUT = 0.5

#: ``re`` flags and their ``regex`` equivalents, by name: the values differ
#: (``re.ASCII`` is ``regex.VERSION1``, ``re.DEBUG`` is ``regex.ASCII``).
_FLAGS = [
    (re.IGNORECASE, regex.IGNORECASE),
    (re.MULTILINE, regex.MULTILINE),
    (re.DOTALL, regex.DOTALL),
    (re.UNICODE, regex.UNICODE),
    (re.VERBOSE, regex.VERBOSE),
    (re.ASCII, regex.ASCII),
]
#: ``re`` flags that change nothing about matching.
_IGNORED_FLAGS = re.DEBUG | getattr(re, "TEMPLATE", 0)
#: Characters that are not plain text in a pattern (outside VERBOSE mode).
_SPECIAL = frozenset("\\.^$*+?{}[]()|#")
_QUANTIFIERS = frozenset("*+?{")

# The deadline of the Router.match running in this thread, so that all the
# filters tried for one message share one budget.
_matching = threading.local()


class _ChannelName(Protocol):
    @property
    def name(self) -> str: ...


class RoutedMessage(Protocol):
    """
    What routing reads of a message: its channel's name and its content
    (which :class:`Include` replaces on a shallow copy).  A
    :class:`~chanserv.message.Message` provides it; this module, below
    :mod:`chanserv.message` in the imports, cannot name that class.
    """

    content: Content

    @property
    def channel(self) -> _ChannelName: ...


class Routable(Protocol):
    """What a routing list may hold."""

    def match(self, message: RoutedMessage) -> Match | None: ...

    def channel_names(self) -> set[str]: ...


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the candidate closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return "; did you mean %r?" % (close[0],) if close else ""


def _missing_module_hint(path: str, missing: str | None) -> str:
    # The closest module next to the one that is missing, with the rest of path.
    if not missing or not (path == missing or path.startswith(missing + ".")):
        return ""
    parent, _, _ = missing.rpartition(".")
    try:
        search = importlib.import_module(parent).__path__ if parent else None
    except (ImportError, AttributeError):
        return ""
    prefix = parent + "." if parent else ""
    names = [prefix + info.name for info in pkgutil.iter_modules(search)]
    close = difflib.get_close_matches(missing, names, n=1, cutoff=0.75)
    return "; did you mean %r?" % (close[0] + path[len(missing) :],) if close else ""


class RoutingImportError(ImproperlyConfigured, ImportError):
    """
    A routing or consumer named by a dotted path cannot be imported: an
    ``ImproperlyConfigured``, as Channels 1.x raised, and an ``ImportError``.
    """


def import_dotted(path: str, what: str) -> Any:
    # Any: the object a dotted path names is whatever the project's module holds; callers check
    # it (callable, routing list).
    """
    The object named by ``path`` (``"package.module.name"``).

    :raises RoutingImportError: the module or the name cannot be imported
        (an ``ImproperlyConfigured`` and an ``ImportError``); the text
        names ``what`` and ``path``, and the closest existing name ("did you
        mean") when one is close.
    """
    module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise RoutingImportError("%s %r is not a dotted path like 'module.name'" % (what, path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = _missing_module_hint(path, getattr(e, "name", None))
        raise RoutingImportError("Cannot import %s %r: %s%s" % (what, path, e, hint)) from e
    try:
        return getattr(module, attr)
    except AttributeError:
        names = [module_name + "." + name for name in dir(module) if not name.startswith("__")]
        raise RoutingImportError(
            "Cannot import %s %r: module %r has no attribute %r%s"
            % (what, path, module_name, attr, did_you_mean(path, names))
        ) from None


def normalise_re_arg(value: Any) -> Any:
    # Any: a Channels 1.x route argument, passed through unchanged unless it is bytes.
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


def route_timeout() -> float:
    """
    ``CHANSERV_ROUTE_TIMEOUT``: the seconds of regular expression matching
    that routing one message may cost, :data:`DEFAULT_ROUTE_TIMEOUT` when
    unset or when Django settings are not configured.

    :raises ValueError: the setting is not a positive number.
    """
    value: Any = DEFAULT_ROUTE_TIMEOUT
    if settings.configured:
        value = getattr(settings, "CHANSERV_ROUTE_TIMEOUT", DEFAULT_ROUTE_TIMEOUT)
    return _check_timeout(value, "CHANSERV_ROUTE_TIMEOUT")


def _check_timeout(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s must be a number of seconds, not %r" % (what, value))
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("%s must be a positive number of seconds, not %r" % (what, value))
    return float(value)


def _regex_flags(flags: int, shown: Any) -> int:
    """The ``regex`` flags equivalent to the ``re`` ``flags``."""
    result = 0
    for re_flag, regex_flag in _FLAGS:
        if flags & re_flag:
            result |= regex_flag
            flags &= ~re_flag
    flags &= ~_IGNORED_FLAGS
    if flags:
        raise ValueError("Pattern %r has re flags %#x that cannot be carried over" % (shown, flags))
    return result


def _alternation_at_top(pattern: str) -> bool:
    """
    Whether ``pattern`` may have a ``|`` outside every group (True when it
    cannot tell: escapes, sets and comments are not worth parsing here).
    """
    if "|" not in pattern:
        return False
    if "\\" in pattern or "[" in pattern or "(?#" in pattern:
        return True
    depth = 0
    for char in pattern:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


def split_literal(pattern: str, flags: int) -> tuple[str, str | None]:
    """
    ``(literal, tail)`` for the ``re`` ``pattern`` with ``flags``: every
    match starts with ``literal`` ('' when not known) and, when ``tail`` is
    not None, the pattern is nothing more than ``literal`` followed by
    ``tail`` -- ``""`` (a prefix), ``"$"`` or ``"\\Z"`` -- so that matching
    is a string comparison.  Conservative: the plain characters after an
    optional ``^``; nothing without IGNORECASE, VERBOSE or a ``|`` outside
    the groups.
    """
    if flags & (re.IGNORECASE | re.VERBOSE) or _alternation_at_top(pattern):
        return "", None
    start = end = 1 if pattern.startswith("^") else 0
    while end < len(pattern) and pattern[end] not in _SPECIAL:
        end += 1
    if end < len(pattern) and pattern[end] in _QUANTIFIERS:
        return pattern[start : end - 1], None  # the last character repeats
    tail: str | None = pattern[end:]
    if tail not in ("", "$", "\\Z") or (tail == "$" and flags & re.MULTILINE):
        tail = None
    return pattern[start:end], tail


class _LiteralMatch:
    """What a filter that is only text returns for a match: no groups."""

    __slots__ = ("_end",)

    def __init__(self, end: int) -> None:
        self._end = end

    def groupdict(self) -> dict[str, Any]:
        return {}

    def end(self) -> int:
        return self._end


class Filter:
    """
    One compiled ``key=regex`` filter.

    :ivar key: the content key it applies to.
    :ivar regex: the compiled ``regex`` pattern.
    :ivar literal: text every match starts with ('' when not known).
    :ivar tail: when not None, the pattern is ``literal`` then ``tail``
        (see :func:`split_literal`), and matching needs no regex.
    """

    __slots__ = ("key", "literal", "regex", "tail")

    def __init__(self, key: str, compiled: Any, literal: str = "", tail: str | None = None) -> None:
        # Any: compiled is a regex-module pattern, which has no type stubs.
        self.key = key
        self.regex = compiled
        self.literal = literal
        self.tail = tail

    def match(self, owner: Any, value: str, channel: str) -> Any:
        # Any: owner is any route or include, only named in the exception; the result is a
        # regex-module match object, which has no type stubs.
        """
        ``self.regex.match(value)``, or an equivalent string comparison;
        within the time left to the message being routed in this thread
        (see :meth:`Router.match`), or within :func:`route_timeout` when
        called outside one; the GIL is released while it runs.  A worker
        thread.

        :param owner: the route or include, named in the exception.
        :returns: the match object (``groupdict()``, ``end()``), or None.
        :raises RouteTimeout: the time ran out.
        """
        literal = self.literal
        if not value.startswith(literal):
            return None
        tail = self.tail
        if tail is not None:
            # Cheaper than the timed match, which reads a CPU clock.
            rest = value[len(literal) :]
            if tail == "" or rest == "" or (tail == "$" and rest == "\n"):
                return _LiteralMatch(len(literal))
            return None
        deadline = getattr(_matching, "deadline", None)
        if deadline is None:
            budget = limit = route_timeout()
        else:
            limit = _matching.timeout
            budget = deadline - time.monotonic()
        if budget > 0:
            try:
                return self.regex.match(value, timeout=budget, concurrent=True)
            except TimeoutError:
                pass
        shown = repr(owner)
        if len(shown) > 300:
            shown = shown[:297] + "..."
        raise RouteTimeout(shown, self.key, self.regex.pattern, channel, limit)

    def __repr__(self) -> str:
        return "%s=%r" % (self.key, self.regex.pattern)


def compile_filters(filters: Mapping[str, Any], owner: str) -> list[Filter]:
    # Any: filter values are whatever the project passed to route(), checked here (str, bytes or
    # a compiled pattern).
    """
    Compile filter regexes, refusing unnamed groups.

    A ``str`` (or ASCII ``bytes``) pattern or a compiled ``re.Pattern`` is
    checked with :mod:`re` -- the syntax is ``re``'s -- and compiled with
    :mod:`regex` with the same flags; a compiled ``regex`` pattern is kept.

    :param owner: how to name the route in error messages.
    :raises ValueError: a pattern has an unnamed group, or does not compile.
    :raises TypeError: a pattern is not a ``str``, ``bytes`` or compiled
        ``str`` pattern.
    """
    compiled = []
    for name, value in filters.items():
        pattern = normalise_re_arg(value)
        if not isinstance(pattern, (str, re.Pattern, regex.Pattern)):
            raise TypeError(
                "Filter %s=%r on %s must be a regular expression string" % (name, value, owner)
            )
        source = pattern if isinstance(pattern, str) else pattern.pattern
        if not isinstance(source, str):
            raise TypeError("Filter %s=%r on %s must be a str pattern" % (name, value, owner))
        literal, tail = "", None
        try:
            if isinstance(pattern, regex.Pattern):
                compiled_regex = pattern
            else:
                checked = re.compile(pattern)
                compiled_regex = regex.compile(
                    checked.pattern, _regex_flags(checked.flags, checked.pattern)
                )
                literal, tail = split_literal(checked.pattern, checked.flags)
        except (re.error, regex.error, TypeError, ValueError) as e:
            raise ValueError("Filter %s=%r on %s is invalid: %s" % (name, value, owner, e)) from e
        if compiled_regex.groups != len(compiled_regex.groupindex):
            raise ValueError(
                "Filter %s=%r on %s contains unnamed groups; only named groups "
                "(?P<name>...) are allowed, as they become the consumer's keyword "
                "arguments" % (name, compiled_regex.pattern, owner)
            )
        compiled.append(Filter(name, compiled_regex, literal, tail))
    return compiled


def _format_filters(filters: list[Filter]) -> str:
    return "".join(", %r" % (f,) for f in filters)


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
        # Any: consumer is a callable, a class or a dotted path, and filter values whatever the
        # project passed, both checked at run time (Channels 1.x API).
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
        # Any: a consumer's keyword arguments are the route's captured groups, and its result is
        # ignored; the project's consumers have signatures of their own.
        """The consumer, imported now if it was given as a dotted path."""
        consumer = self._consumer
        if isinstance(consumer, str):
            resolved = import_dotted(consumer, "consumer")
            if not callable(resolved):
                raise TypeError("Consumer %r is not callable: %r" % (consumer, resolved))
            self._consumer = consumer = resolved
        return consumer

    def match(self, message: RoutedMessage) -> Match | None:
        """``(consumer, kwargs)`` if ``message`` matches, else None."""
        if message.channel.name not in self._channel_set:
            return None
        content = message.content
        kwargs: dict[str, Any] = {}
        for f in self.filters:
            if f.key not in content:
                return None
            value = _text(content[f.key])
            if value is None:
                return None
            m = f.match(self, value, message.channel.name)
            if m is None:
                return None
            kwargs.update(m.groupdict())
        return self.consumer, kwargs

    def channel_names(self) -> set[str]:
        return set(self.channels)

    def _consumer_name(self) -> str:
        c = self._consumer
        return c if isinstance(c, str) else name_that_thing(c)

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
        # Any: consumer is a callable, a class or a dotted path, and filter values whatever the
        # project passed, both checked at run time (Channels 1.x API).
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
        # Any: routing is any routing form (a list of routables, a legacy {channel: consumer}
        # dict, the dotted path of one), and filter values whatever the project passed, checked
        # at run time (Channels 1.x API).
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

    def match(self, message: RoutedMessage) -> Match | None:
        """The first match of the inner routes, or None (short-circuits)."""
        if message.channel.name not in self._channels:
            return None
        kwargs: dict[str, Any] = {}
        if self.prefixes:
            content = message.content
            chopped = dict(content)
            for f in self.prefixes:
                if f.key not in content:
                    return None
                value = _text(content[f.key])
                if value is None:
                    return None
                m = f.match(self, value, message.channel.name)
                if m is None:
                    return None
                kwargs.update(m.groupdict())
                chopped[f.key] = value[m.end() :]
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
    # Any: routing is any routing form (a list of routables, a legacy {channel: consumer} dict,
    # the dotted path of one), and filter values whatever the project passed, checked at run
    # time (Channels 1.x API).
    """
    A fresh list of routables from any routing form.

    :raises ImportError: a dotted path that cannot be imported.
    :raises TypeError: not a list, dict or dotted path, or an entry that is
        not routable.
    """
    if isinstance(routing, str):
        routing = import_dotted(routing, "channel routing")
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
    # Any: a consumer's signature: message is a chanserv.message.Message, which this lower layer
    # may not name, and kwargs the route's captured groups, unused.
    """The default ``websocket.connect`` consumer: accept every socket."""
    message.reply_channel.send({"accept": True})


def null_consumer(message: Any, **kwargs: Any) -> None:
    # Any: a consumer's signature: message is a chanserv.message.Message, which this lower layer
    # may not name, and kwargs the route's captured groups, unused.
    """The default ``websocket.receive``/``disconnect`` consumer: nothing."""


class Router:
    """
    The routing of one channel layer.

    :attr:`root` is an :class:`Include` of the routing; :attr:`channels` the
    set of channels it routes (what the worker listens on).  Any thread;
    :meth:`add_route` and :meth:`check_default` are for set-up, before the
    worker starts.

    :param timeout: the seconds of regular expression matching one
        :meth:`match` may cost; by default :func:`route_timeout`, read now.
    :raises ValueError: ``timeout`` (or the setting) is not a positive number.
    """

    def __init__(self, routing: Any, timeout: float | None = None) -> None:
        # Any: routing is any routing form (a list of routables, a legacy {channel: consumer}
        # dict, the dotted path of one), and filter values whatever the project passed, checked
        # at run time (Channels 1.x API).
        self.timeout = route_timeout() if timeout is None else _check_timeout(timeout, "timeout")
        self.root = Include(routing)
        self.channels: set[str] = self.root.channel_names()
        self._defaults_added = False

    resolve_routing = staticmethod(resolve_routing)
    normalise_re_arg = staticmethod(normalise_re_arg)

    def add_route(self, route: Routable) -> None:
        """Append ``route`` after every existing route."""
        self.root.add_route(route)
        self.channels = self.root.channel_names()

    def match(self, message: RoutedMessage) -> Match | None:
        """
        ``(consumer, kwargs)`` for the first route matching, or None.  A
        worker thread.

        :raises RouteTimeout: the filters tried took more than
            :attr:`timeout` seconds together.
        """
        if getattr(_matching, "deadline", None) is not None:
            # Called from a routable inside another Router.match: keep its
            # budget.
            return self.root.match(message)
        _matching.timeout = self.timeout
        _matching.deadline = time.monotonic() + self.timeout
        try:
            return self.root.match(message)
        finally:
            _matching.deadline = None

    def check_default(self, http_consumer: Callable[..., Any]) -> None:
        # Any: a consumer's keyword arguments are the route's captured groups, and its result is
        # ignored; the project's consumers have signatures of their own.
        """
        Append the fallback routes, tried after every user route: so an
        ``http.request`` no user route takes goes to ``http_consumer``, and
        WebSockets are accepted and their frames consumed.

        - ``http.request`` -> ``http_consumer``: whoever serves the layer
          passes the Django views (``chanserv.staticfiles.default_http_consumer()``,
          behind static files when ``DEBUG`` is on, as ``runserver``); routing
          itself knows nothing of Django's views;
        - ``websocket.connect`` -> :func:`connect_consumer` (accept);
        - ``websocket.receive``, ``websocket.disconnect`` -> :func:`null_consumer`.

        The server and the worker call it once at start-up, as Channels 1.x's
        ``runserver``/``runworker`` did; later calls do nothing.
        """
        if self._defaults_added:
            return
        self.add_route(Route("http.request", http_consumer))
        self.add_route(Route("websocket.connect", connect_consumer))
        self.add_route(Route("websocket.receive", null_consumer))
        self.add_route(Route("websocket.disconnect", null_consumer))
        self._defaults_added = True

    def __repr__(self) -> str:
        return "<Router %r>" % (self.root.routing,)


def route(channels: str | bytes | Iterable[str], consumer: Any, **filters: Any) -> Route:
    # Any: consumer is a callable, a class or a dotted path, and filter values whatever the
    # project passed, both checked at run time (Channels 1.x API).
    """``route("websocket.receive", ws_message, path=r"^/chat/")``: see :class:`Route`."""
    return Route(channels, consumer, **filters)


def route_class(consumer: Any, **filters: Any) -> RouteClass:
    # Any: consumer is a callable, a class or a dotted path, and filter values whatever the
    # project passed, both checked at run time (Channels 1.x API).
    """``route_class(ChatConsumer, path=r"^/chat/")``: see :class:`RouteClass`."""
    return RouteClass(consumer, **filters)


def include(routing: Any, **prefix_filters: Any) -> Include:
    # Any: routing is any routing form (a list of routables, a legacy {channel: consumer} dict,
    # the dotted path of one), and filter values whatever the project passed, checked at run
    # time (Channels 1.x API).
    """``include("chat.routing.routes", path=r"^/chat")``: see :class:`Include`."""
    return Include(routing, **prefix_filters)
