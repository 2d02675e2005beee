"""Tests for chanserv.routing: route, route_class, include, Router."""

from __future__ import annotations

import re
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import regex
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent

from chanserv.asgi import ChannelLayerWrapper
from chanserv.exceptions import RouteTimeout
from chanserv.layers import InMemoryChannelLayer
from chanserv.layers.base import BaseChannelLayer
from chanserv.message import Message
from chanserv.routing import (
    DEFAULT_ROUTE_TIMEOUT,
    Include,
    Route,
    RouteClass,
    Router,
    connect_consumer,
    import_dotted,
    include,
    null_consumer,
    route,
    route_class,
    route_timeout,
    split_literal,
)
from chanserv.threads import WorkerPool
from chanserv.worker import WorkerService


def msg(channel: str, layer: Any = None, **content: Any) -> Message:
    return Message(content, channel, layer)


def consumer_a(message: Message, **kwargs: Any) -> None:
    pass


def consumer_b(message: Message, **kwargs: Any) -> None:
    pass


not_callable = 42


# -- route ------------------------------------------------------------------


def test_route_matches_on_channel_name() -> None:
    """A route matches messages on its channel, giving its consumer and no kwargs."""
    r = route("websocket.receive", consumer_a)
    assert r.match(msg("websocket.receive", text="hi")) == (consumer_a, {})
    assert r.match(msg("websocket.connect")) is None


def test_route_takes_a_list_of_channels_and_bytes_names() -> None:
    """A route given a list of str and bytes channel names matches each of them and no other."""
    r = route(["websocket.connect", b"websocket.receive"], consumer_a)
    assert r.channel_names() == {"websocket.connect", "websocket.receive"}
    assert r.match(msg("websocket.receive")) == (consumer_a, {})
    assert r.match(msg("websocket.connect")) == (consumer_a, {})
    assert r.match(msg("websocket.disconnect")) is None


def test_route_refuses_bad_channels_and_consumers() -> None:
    """route() raises TypeError for an empty or non-str channel and a non-callable consumer."""
    with pytest.raises(TypeError):
        route("", consumer_a)
    with pytest.raises(TypeError):
        route([1], consumer_a)
    with pytest.raises(TypeError, match="callable or a dotted path"):
        route("x", 42)


def test_named_groups_become_kwargs() -> None:
    """Named groups of a filter become the consumer's kwargs; a failing filter is no match."""
    r = route("http.request", consumer_a, path=r"^/poll/(?P<poll_id>\d+)/$")
    assert r.match(msg("http.request", path="/poll/12/")) == (consumer_a, {"poll_id": "12"})
    assert r.match(msg("http.request", path="/poll/x/")) is None


def test_filters_are_anchored_at_the_start_only() -> None:
    """Filters match at the start of the value, like re.match, not anywhere within it."""
    r = route("http.request", consumer_a, path=r"/a")
    assert r.match(msg("http.request", path="/abc")) is not None
    assert r.match(msg("http.request", path="/x/a")) is None


def test_path_filter_keeps_the_leading_slash() -> None:
    """Path filters see the path with its leading slash: ^chat/$ does not match /chat/."""
    assert (
        route("http.request", consumer_a, path=r"^chat/$").match(msg("http.request", path="/chat/"))
        is None
    )
    assert route("http.request", consumer_a, path=r"^/chat/$").match(
        msg("http.request", path="/chat/")
    ) == (consumer_a, {})


def test_every_filter_must_match() -> None:
    """A route with several filters matches only when every one of them matches."""
    r = route("http.request", consumer_a, path=r"^/poll/$", method=r"^POST$")
    assert r.match(msg("http.request", path="/poll/", method="POST")) == (consumer_a, {})
    assert r.match(msg("http.request", path="/poll/", method="GET")) is None
    assert r.match(msg("http.request", path="/other/", method="POST")) is None


def test_method_filter_is_case_sensitive() -> None:
    """The method filter is case-sensitive: ^GET$ does not match a lowercase get."""
    # A lowercase "get" is not GET (reference/security.md).
    r = route("http.request", consumer_a, method=r"^GET$")
    assert r.match(msg("http.request", method="get")) is None


def test_a_filter_key_missing_from_the_message_means_no_match() -> None:
    """A message lacking the key a filter applies to does not match the route."""
    r = route("http.request", consumer_a, method=r"^GET$")
    assert r.match(msg("http.request", path="/")) is None


def test_bytes_values_are_ascii_decoded() -> None:
    """Bytes message values are decoded as ASCII before filters are applied to them."""
    r = route("http.request", consumer_a, query_string=r"^a=(?P<a>\d+)")
    assert r.match(msg("http.request", query_string=b"a=5&b=6")) == (consumer_a, {"a": "5"})


def test_values_that_cannot_be_text_never_match() -> None:
    """Non-ASCII bytes, ints and None never match a filter, not even an empty pattern."""
    r = route("http.request", consumer_a, query_string=r"")
    assert r.match(msg("http.request", query_string=b"\xc3\xa9")) is None
    assert r.match(msg("http.request", query_string=5)) is None
    assert r.match(msg("http.request", query_string=None)) is None
    assert r.match(msg("http.request", query_string="")) == (consumer_a, {})


def test_bytes_and_compiled_patterns_are_accepted() -> None:
    """Filters may be given as bytes patterns or as compiled re patterns."""
    r = route("x", consumer_a, path=b"^/(?P<n>\\d)", method=re.compile("^GET$"))
    assert r.match(msg("x", path="/1", method="GET")) == (consumer_a, {"n": "1"})


def test_unnamed_groups_are_refused_naming_the_pattern() -> None:
    """route, include and route_class refuse unnamed capturing groups, naming the pattern;
    non-capturing groups are allowed.
    """
    with pytest.raises(ValueError, match=r"\^/r/\(a\+\)\+\$"):
        route("http.request", consumer_a, path=r"^/r/(a+)+$")
    with pytest.raises(ValueError, match="unnamed"):
        include([], path=r"^/(chat)")
    with pytest.raises(ValueError, match="unnamed"):
        route_class(ChatConsumer, path=r"(x)")
    # Non-capturing groups are fine.
    route("http.request", consumer_a, path=r"^/(?:a|b)/$")


def test_invalid_patterns_raise_value_error() -> None:
    """An invalid pattern raises ValueError; a filter that is not a pattern raises TypeError."""
    with pytest.raises(ValueError, match="invalid"):
        route("x", consumer_a, path=r"^(?P<a>")
    with pytest.raises(TypeError):
        route("x", consumer_a, path=5)


def test_optional_named_group_gives_none() -> None:
    """An optional named group that took no part in the match is passed as None."""
    r = route("x", consumer_a, path=r"^/(?P<page>\d+)?")
    assert r.match(msg("x", path="/")) == (consumer_a, {"page": None})


def test_route_repr_names_channels_consumer_and_filters() -> None:
    """repr() of a route names its channels, its consumer and its filter patterns."""
    text = repr(route("x", consumer_a, path=r"^/a"))
    assert "consumer_a" in text and "'^/a'" in text and "'x'" in text


# -- dotted-path consumers ----------------------------------------------------


@pytest.fixture
def consumers_module(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "chanserv_routing_test_consumers"
    (tmp_path / (name + ".py")).write_text(
        textwrap.dedent(
            """
            def ws_message(message, **kwargs):
                return "ws_message"

            not_a_function = "nope"

            class Consumer:
                @classmethod
                def channel_names(cls):
                    return {"a.channel"}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_dotted_path_consumer_is_imported_on_first_use(consumers_module: str) -> None:
    """A dotted-path consumer is imported at its route's first match, not before, then kept."""
    r = route("websocket.receive", consumers_module + ".ws_message")
    assert consumers_module not in sys.modules
    result = r.match(msg("websocket.receive"))
    assert result is not None
    consumer, kwargs = result
    assert consumer is sys.modules[consumers_module].ws_message
    assert kwargs == {}
    assert r.consumer is consumer


def test_dotted_path_consumer_import_error_names_the_path() -> None:
    """A dotted-path consumer that cannot be imported raises ImportError naming the path."""
    r = route("websocket.receive", "chanserv_no_such_module.consumer")
    with pytest.raises(ImportError, match=r"chanserv_no_such_module\.consumer"):
        r.match(msg("websocket.receive"))
    r = route("websocket.receive", "tests.test_routing.no_such_consumer")
    with pytest.raises(ImportError, match=r"tests\.test_routing\.no_such_consumer"):
        r.match(msg("websocket.receive"))
    with pytest.raises(ImportError, match="dotted path"):
        route("x", "nodots").match(msg("x"))


def test_an_unimportable_routing_is_improperly_configured_as_in_1x() -> None:
    """A dotted path that does not import raises ImproperlyConfigured (1.x's type), also an ImportError."""
    from django.core.exceptions import ImproperlyConfigured

    from chanserv.routing import RoutingImportError, resolve_routing

    with pytest.raises(
        ImproperlyConfigured, match=r"^Cannot import channel routing 'tests\.nothing\.here'"
    ):
        resolve_routing("tests.nothing.here")
    with pytest.raises(ImportError, match=r"^Cannot import consumer 'tests\.routing\.no_such"):
        route("x", "tests.routing.no_such_consumer").match(msg("x"))
    assert issubclass(RoutingImportError, ImproperlyConfigured)
    assert issubclass(RoutingImportError, ImportError)


def test_misspelt_dotted_paths_get_a_suggestion() -> None:
    """A misspelt attribute or module in a dotted path: the error names the closest path."""
    for path in ("tests.routing.chanel_routing", "tests.routng.channel_routing"):
        with pytest.raises(ImportError, match=r"did you mean 'tests\.routing\.channel_routing'\?$"):
            import_dotted(path, "routing")
    with pytest.raises(ImportError) as info:
        import_dotted("tests.routing.zzzzzz", "routing")
    assert "did you mean" not in str(info.value)


def test_dotted_path_to_a_non_callable_is_refused() -> None:
    """A dotted path naming something not callable raises TypeError when the route matches."""
    r = route("x", "tests.test_routing.not_callable")
    with pytest.raises(TypeError, match="not callable"):
        r.match(msg("x"))


def test_unmatched_dotted_path_is_never_imported() -> None:
    """A dotted-path consumer is not imported while its route matches no message."""
    r = route("x", "chanserv_no_such_module.consumer")
    assert r.match(msg("y")) is None


# -- route_class ----------------------------------------------------------------


class ChatConsumer:
    calls: list[tuple[Any, dict[str, Any]]] = []

    def __init__(self, message: Any, **kwargs: Any) -> None:
        self.calls.append((message, kwargs))

    @classmethod
    def channel_names(cls) -> set[str]:
        return {"websocket.connect", "websocket.receive"}


def test_route_class_takes_channels_from_the_class() -> None:
    """route_class routes the channels of the class's channel_names(), with its filters."""
    r = route_class(ChatConsumer, path=r"^/chat/(?P<room>\w+)")
    assert isinstance(r, RouteClass)
    assert r.channel_names() == {"websocket.connect", "websocket.receive"}
    assert r.match(msg("websocket.receive", path="/chat/lobby")) == (
        ChatConsumer,
        {"room": "lobby"},
    )
    assert r.match(msg("websocket.disconnect", path="/chat/lobby")) is None
    assert r.match(msg("websocket.receive", path="/other")) is None
    assert "ChatConsumer" in repr(r)


def test_route_class_needs_a_callable_channel_names() -> None:
    """route_class raises ValueError for a class without a callable channel_names."""

    class NoNames:
        pass

    class BadNames:
        channel_names = ["a"]

    with pytest.raises(ValueError, match="channel_names"):
        route_class(NoNames)
    with pytest.raises(ValueError, match="channel_names"):
        route_class(BadNames)


def test_route_class_accepts_a_dotted_path(consumers_module: str) -> None:
    """route_class accepts a dotted path and routes to the imported class."""
    r = route_class(consumers_module + ".Consumer")
    assert r.channel_names() == {"a.channel"}
    assert r.match(msg("a.channel")) == (sys.modules[consumers_module].Consumer, {})


# -- include ------------------------------------------------------------------


def poll_consumer(message: Message, **kwargs: Any) -> None:
    pass


def chat_connect(message: Message, **kwargs: Any) -> None:
    pass


def chat_disconnect(message: Message, **kwargs: Any) -> None:
    pass


def tutorial_routing() -> list[Any]:
    # The Routing section of the tutorial, word for word.
    http_routing = [
        route("http.request", poll_consumer, path=r"^/poll/$", method=r"^POST$"),
    ]
    chat_routing = [
        route("websocket.connect", chat_connect, path=r"^/(?P<room_name>[a-zA-Z0-9_]+)/$"),
        route("websocket.disconnect", chat_disconnect),
    ]
    return [
        include(chat_routing, path=r"^/chat"),
        include(http_routing),
    ]


def test_tutorial_routing() -> None:
    """The tutorial's routing, with a prefixed include, routes each message as documented."""
    router = Router(tutorial_routing())
    assert router.channels == {"websocket.connect", "websocket.disconnect", "http.request"}
    assert router.match(msg("websocket.connect", path="/chat/lobby/")) == (
        chat_connect,
        {"room_name": "lobby"},
    )
    assert router.match(msg("websocket.disconnect", path="/chat/lobby/")) == (
        chat_disconnect,
        {},
    )
    assert router.match(msg("websocket.connect", path="/lobby/")) is None
    assert router.match(msg("websocket.connect", path="/chat/lob/by/")) is None
    assert router.match(msg("http.request", path="/poll/", method="POST")) == (
        poll_consumer,
        {},
    )
    assert router.match(msg("http.request", path="/poll/", method="GET")) is None
    assert router.match(msg("websocket.receive", path="/chat/lobby/")) is None


def test_include_chops_a_copy_and_leaves_the_message_alone() -> None:
    """include gives inner routes a copy with its prefix stripped; the message is unchanged."""
    seen: list[Any] = []

    class Spy:
        def match(self, message: Any) -> Any:
            seen.append((message.content["path"], message.channel.name))
            return consumer_a, {}

        def channel_names(self) -> set[str]:
            return {"http.request"}

    m = msg("http.request", path="/chat/lobby/", method="GET")
    assert include([Spy()], path=r"^/chat").match(m) == (consumer_a, {})
    assert seen == [("/lobby/", "http.request")]
    assert m.content == {"path": "/chat/lobby/", "method": "GET"}


def test_include_chops_bytes_values_too() -> None:
    """include strips its matched prefix from bytes values as well as from text."""
    r = include([route("x", consumer_a, query_string=r"^&(?P<b>\w+)=")], query_string=r"^a=1")
    assert r.match(msg("x", query_string=b"a=1&b=2")) == (consumer_a, {"b": "b"})


def test_include_short_circuits_when_its_prefix_fails() -> None:
    """include skips its inner routes when its prefix, key or channel does not match."""
    calls: list[Any] = []

    class Spy:
        def match(self, message: Any) -> Any:
            calls.append(message)
            return None

        def channel_names(self) -> set[str]:
            return {"x"}

    inc = include([Spy()], path=r"^/chat")
    assert inc.match(msg("x", path="/other")) is None
    assert inc.match(msg("x")) is None  # key missing
    assert inc.match(msg("y", path="/chat")) is None  # channel not routed here
    assert calls == []
    assert inc.match(msg("x", path="/chat/")) is None
    assert len(calls) == 1


def test_include_kwargs_merge_with_inner_winning() -> None:
    """Kwargs of an include and of its inner route are merged, the inner route's winning."""
    inner = [route("x", consumer_a, path=r"^/(?P<name>\w+)/(?P<page>\d+)$")]
    inc = include(inner, path=r"^/(?P<name>\w+)(?P<section>/s)")
    assert inc.match(msg("x", path="/outer/s/inner/3")) == (
        consumer_a,
        {"name": "inner", "section": "/s", "page": "3"},
    )


def test_nested_includes_chop_in_turn() -> None:
    """Nested includes each strip their own prefix in turn before the inner route matches."""
    routing = [
        include(
            [include([route("x", consumer_a, path=r"^/(?P<leaf>\w+)$")], path=r"^/b")],
            path=r"^/a",
        )
    ]
    router = Router(routing)
    assert router.match(msg("x", path="/a/b/c")) == (consumer_a, {"leaf": "c"})
    assert router.match(msg("x", path="/a/c")) is None
    assert router.channels == {"x"}


def test_same_routing_under_two_prefixes() -> None:
    """One routing list included under two prefixes matches under either and nowhere else."""
    inner = [route("x", consumer_a, path=r"^/(?P<n>\d+)$")]
    router = Router([include(inner, path=r"^/one"), include(inner, path=r"^/two")])
    assert router.match(msg("x", path="/one/1")) == (consumer_a, {"n": "1"})
    assert router.match(msg("x", path="/two/2")) == (consumer_a, {"n": "2"})
    assert router.match(msg("x", path="/three/3")) is None


def test_include_takes_a_dotted_path(consumers_module: str, tmp_path: Any) -> None:
    """include and Router accept a dotted path to a routing list or legacy dict;
    anything else raises TypeError, and a missing name ImportError.
    """
    name = "chanserv_routing_test_routes"
    (tmp_path / (name + ".py")).write_text(
        "from chanserv.routing import route\n"
        "from %s import ws_message\n"
        "routes = [route('websocket.receive', ws_message, path=r'^/(?P<p>\\w+)$')]\n"
        "legacy = {'websocket.connect': ws_message}\n"
        "not_routing = 5\n" % consumers_module
    )
    try:
        router = Router([include(name + ".routes", path=r"^/chat")])
        ws_message = sys.modules[consumers_module].ws_message
        assert router.match(msg("websocket.receive", path="/chat/lobby")) == (
            ws_message,
            {"p": "lobby"},
        )
        assert Router(name + ".legacy").match(msg("websocket.connect")) == (ws_message, {})
        with pytest.raises(TypeError, match="routing must be a list"):
            Router(name + ".not_routing")
        with pytest.raises(ImportError, match=name + r"\.missing"):
            Router(name + ".missing")
    finally:
        sys.modules.pop(name, None)


# -- Router -------------------------------------------------------------------


def test_first_match_in_list_order_wins() -> None:
    """The Router returns the first route, in list order, that matches."""
    router = Router(
        [
            route("http.request", consumer_a, path=r"^/a"),
            route("http.request", consumer_b),
            route("http.request", poll_consumer, path=r"^/a"),
        ]
    )
    assert router.match(msg("http.request", path="/a"))[0] is consumer_a  # type: ignore[index]
    assert router.match(msg("http.request", path="/b"))[0] is consumer_b  # type: ignore[index]


def test_legacy_dict_routing() -> None:
    """A legacy {channel: consumer} dict routes each channel it names to its consumer."""
    router = Router({"websocket.receive": consumer_a, "websocket.connect": consumer_b})
    assert router.channels == {"websocket.receive", "websocket.connect"}
    assert router.match(msg("websocket.receive")) == (consumer_a, {})
    assert router.match(msg("websocket.connect")) == (consumer_b, {})
    assert router.match(msg("http.request")) is None


def test_any_object_with_match_and_channel_names_is_routable() -> None:
    """Any object with match() and channel_names() can be an entry of a Router."""

    class Custom:
        def match(self, message: Any) -> Any:
            if message.content.get("magic"):
                return consumer_b, {"magic": True}
            return None

        def channel_names(self) -> set[str]:
            return {"custom"}

    router = Router([Custom(), route("custom", consumer_a)])
    assert router.channels == {"custom"}
    assert router.match(msg("custom", magic=1)) == (consumer_b, {"magic": True})
    assert router.match(msg("custom")) == (consumer_a, {})


def test_routing_entries_must_be_routable() -> None:
    """Router refuses non-routable entries and routing (TypeError), bad paths (ImportError)."""
    with pytest.raises(TypeError, match="not routable"):
        Router([consumer_a])
    with pytest.raises(TypeError, match="routing must be a list"):
        Router(42)
    with pytest.raises(ImportError, match=r"chanserv_no_such_module\.routing"):
        Router("chanserv_no_such_module.routing")


def test_add_route_appends_and_updates_channels() -> None:
    """Router.add_route appends a route and its channels, leaving the user's list untouched."""
    routing = [route("a", consumer_a)]
    router = Router(routing)
    assert isinstance(router.root, Include)
    router.add_route(route("b", consumer_b))
    assert router.channels == {"a", "b"}
    assert router.match(msg("b")) == (consumer_b, {})
    assert routing == routing[:1] and len(routing) == 1  # the user's list is untouched
    with pytest.raises(TypeError):
        router.add_route(consumer_a)  # type: ignore[arg-type]


class RecordingLayer(BaseChannelLayer):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_prepared(self, channel: str, data: bytes) -> None:
        self.sent.append((channel, self.unpack(data)))


def test_check_default_appends_fallbacks_after_user_routes() -> None:
    """check_default appends HTTP and WebSocket fallbacks after the user's routes, only once."""

    def http_default(message: Any) -> None:
        pass

    router = Router([route("http.request", consumer_a, path=r"^/mine/")])
    router.check_default(http_consumer=http_default)
    assert router.channels == {
        "http.request",
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
    }
    assert router.match(msg("http.request", path="/mine/x")) == (consumer_a, {})
    assert router.match(msg("http.request", path="/views/")) == (http_default, {})
    assert router.match(msg("websocket.connect")) == (connect_consumer, {})
    assert router.match(msg("websocket.receive")) == (null_consumer, {})
    assert router.match(msg("websocket.disconnect")) == (null_consumer, {})
    assert router.match(msg("other")) is None
    # A second call adds nothing.
    router.check_default(http_consumer=consumer_b)
    assert router.match(msg("http.request", path="/views/")) == (http_default, {})
    assert len(router.root.routing) == 5


def test_check_default_keeps_user_websocket_routes_first() -> None:
    """After check_default, the user's websocket.connect route still wins over the default."""
    router = Router([route("websocket.connect", consumer_a)])
    router.check_default(http_consumer=consumer_b)
    assert router.match(msg("websocket.connect")) == (consumer_a, {})


def test_check_default_with_the_default_http_consumer_serves_the_views() -> None:
    """With default_http_consumer(), check_default routes HTTP requests to a ViewConsumer."""
    from chanserv.handler import ViewConsumer
    from chanserv.staticfiles import default_http_consumer

    router = Router([])
    router.check_default(default_http_consumer())
    result = router.match(msg("http.request", path="/"))
    assert result is not None
    assert type(result[0]) is ViewConsumer


@override_settings(DEBUG=True)
def test_check_default_serves_static_files_under_debug() -> None:
    """Under DEBUG, the default HTTP consumer routes /static/ paths to StaticFilesConsumer."""
    from chanserv.staticfiles import StaticFilesConsumer, default_http_consumer

    router = Router([])
    router.check_default(default_http_consumer())
    result = router.match(msg("http.request", path="/static/x.css"))
    assert result is not None
    assert isinstance(result[0], StaticFilesConsumer)


def test_default_connect_consumer_accepts() -> None:
    """The default connect consumer accepts the socket; the null consumer sends nothing."""
    layer = RecordingLayer()
    message = msg("websocket.connect", layer, reply_channel="daphne.response.abc!def", path="/")
    connect_consumer(message)
    assert layer.sent == [("daphne.response.abc!def", {"accept": True})]
    null_consumer(message)
    assert layer.sent == [("daphne.response.abc!def", {"accept": True})]


def test_route_and_router_types() -> None:
    """route() and include() build Route and Include; an empty Router routes nothing."""
    assert isinstance(route("x", consumer_a), Route)
    assert isinstance(include([]), Include)
    assert Router([]).channels == set()
    assert Router([]).match(msg("x")) is None


# -- time limits (CHANSERV_ROUTE_TIMEOUT) ----------------------------------------

#: Catastrophic backtracking for ``re`` and ``regex`` alike: every ``a`` can be
#: either branch, and the ``!`` makes every one of the 2**40 ways fail.
SLOW_PATTERN = r"^/r/(?:a|a)+$"
SLOW_PATH = "/r/" + "a" * 40 + "!"


def test_catastrophic_pattern_times_out_within_the_limit() -> None:
    """A backtracking filter raises RouteTimeout at the CPU limit, naming what timed out;
    the router keeps working afterwards.
    """
    router = Router([route("websocket.connect", consumer_a, path=SLOW_PATTERN)], timeout=0.2)
    started, cpu_started = time.monotonic(), time.process_time()
    with pytest.raises(RouteTimeout) as info:
        router.match(msg("websocket.connect", path=SLOW_PATH))
    # regex counts the process's CPU time; the wall clock only loosely, as
    # a busy machine may lend this process less than a core.
    assert 0.15 <= time.process_time() - cpu_started < 0.3
    assert time.monotonic() - started < 1.0
    e = info.value
    assert (e.channel, e.key, e.pattern, e.timeout) == (
        "websocket.connect",
        "path",
        SLOW_PATTERN,
        0.2,
    )
    assert "consumer_a" in e.route
    text = str(e)
    for part in ("websocket.connect", "0.2s", "CHANSERV_ROUTE_TIMEOUT", SLOW_PATTERN, "consumer_a"):
        assert part in text
    # The router is fine afterwards, and so is a path that does not backtrack.
    assert router.match(msg("websocket.connect", path="/r/aaa")) == (consumer_a, {})
    assert router.match(msg("websocket.connect", path="/r/b" + "a" * 40)) is None


def test_the_reported_pattern_no_longer_backtracks() -> None:
    """Filters run on regex, which fails (a+)+ at once where re backtracks for seconds."""
    # ``re`` takes seconds on this; ``regex`` fails it at once.
    router = Router([route("websocket.connect", consumer_a, path=r"^/r/(?:a+)+$")], timeout=0.5)
    started = time.monotonic()
    assert router.match(msg("websocket.connect", path="/r/" + "a" * 28 + "!")) is None
    assert time.monotonic() - started < 0.25
    assert router.match(msg("websocket.connect", path="/r/" + "a" * 28)) == (consumer_a, {})


def test_the_filters_of_one_message_share_one_budget() -> None:
    """All filters tried for one message share one time budget; plain-text filters use none."""

    class Slow:
        """A routable that spends most of the budget and matches nothing."""

        def match(self, message: Any) -> Any:
            time.sleep(0.25)
            return None

        def channel_names(self) -> set[str]:
            return {"x"}

    cheap = route("x", consumer_a, path=r"^/(?P<page>\d+)")
    router = Router([Slow(), cheap], timeout=0.2)
    with pytest.raises(RouteTimeout) as info:
        router.match(msg("x", path="/1"))
    assert info.value.pattern == r"^/(?P<page>\d+)"
    # A message that the cheap route takes first costs nothing.
    assert Router([cheap, Slow()], timeout=0.2).match(msg("x", path="/1")) == (
        consumer_a,
        {"page": "1"},
    )
    # A filter that is only text is compared as a string, with no budget.
    assert Router([Slow(), route("x", consumer_a, path=r"^/a$")], timeout=0.2).match(
        msg("x", path="/a")
    ) == (consumer_a, {})


def test_include_prefix_times_out_naming_the_include() -> None:
    """A backtracking include prefix raises RouteTimeout naming the include and its pattern."""
    router = Router([include([route("x", consumer_a)], path=SLOW_PATTERN)], timeout=0.1)
    with pytest.raises(RouteTimeout) as info:
        router.match(msg("x", path=SLOW_PATH))
    assert info.value.route.startswith("include(")
    assert info.value.pattern == SLOW_PATTERN


@override_settings(CHANSERV_ROUTE_TIMEOUT=0.1)
def test_timeout_setting_applies_to_routers_and_to_routes_alone() -> None:
    """CHANSERV_ROUTE_TIMEOUT sets the time limit of Routers and of a bare route's match()."""
    assert route_timeout() == 0.1
    assert Router([]).timeout == 0.1
    r = route("x", consumer_a, path=SLOW_PATTERN)
    cpu_started = time.process_time()
    with pytest.raises(RouteTimeout) as info:
        r.match(msg("x", path=SLOW_PATH))
    assert time.process_time() - cpu_started < 0.2
    assert info.value.timeout == 0.1


def test_timeout_defaults_and_validation() -> None:
    """The route timeout defaults to 0.5s; non-positive, infinite or non-numbers are refused."""
    assert DEFAULT_ROUTE_TIMEOUT == 0.5
    assert route_timeout() == DEFAULT_ROUTE_TIMEOUT
    assert Router([]).timeout == DEFAULT_ROUTE_TIMEOUT
    assert Router([], timeout=2).timeout == 2.0
    for bad in (0, -1, float("inf"), float("nan"), "1", True, None):
        with override_settings(CHANSERV_ROUTE_TIMEOUT=bad):
            with pytest.raises(ValueError, match="CHANSERV_ROUTE_TIMEOUT"):
                route_timeout()
    with pytest.raises(ValueError, match="timeout"):
        Router([], timeout=0)


# -- regex behaves as re ------------------------------------------------------------

#: Filters as users write them (the tutorial's, the Channels 1.x docs', and
#: the usual URL shapes).
USUAL_PATTERNS = [
    r"^/chat/(?P<room>[^/]+)/$",
    r"^/poll/(?P<poll_id>\d+)/$",
    r"^/(?P<room_name>[a-zA-Z0-9_]+)/$",
    r"^/chat",
    r"^POST$",
    r"^(?:GET|HEAD)$",
    r"/a",
    r"^/(?P<page>\d+)?",
    r"^/(?P<name>\w+)(?P<section>/s)?",
    r"(?i)^/CHAT/(?P<x>\w*)",
    r"^/files/(?P<path>.*)$",
    r"^/(?P<y>\d{4})/(?P<m>\d{1,2})/$",
    r"^/(?:a|b)+/$",
    r"^/u/(?P<user>[\w.@+-]+)/$",
    r"^/x\Z",
    r"^/x$",
    r"^/(?P<a>[^/]*)/(?P=a)/$",
    r"^/(?P<slug>[-\w]+)/(?P<pk>[0-9a-f-]{4,})/?$",
    # Shapes the literal-start shortcut must get right.
    r"^/chat/|^/a",
    r"^/ab*/",
    r"^/ab+?",
    r"^/x{2}",
    r"^/x{,2}/",
    r"^/a?b",
    r"^/a.b$",
    r"^/é+",
    r"^/chat/ #x",
    r"^^/a",
    r"",
    r"^$",
    r"^/chat/$",
    r"^/x/\Z",
    r"^/r/(?:a|a)+$",
    r"^/(?:x|y)/(?P<n>\d)|^/z",
]


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.sampled_from(USUAL_PATTERNS),
    prefix=st.sampled_from(["", "/", "/chat/", "/poll/", "/u/", "/files/", "/2024/", "/x"]),
    rest=st.text(alphabet="/abAB09_-.@éΩ\n ", max_size=16),
)
def test_filters_match_exactly_as_re(pattern: str, prefix: str, rest: str) -> None:
    """Filters match, capture and (in an include) strip exactly as re.match does."""
    value = prefix + rest
    expected = re.compile(pattern).match(value)
    got = route("x", consumer_a, path=pattern).match(msg("x", path=value))
    if expected is None:
        assert got is None
    else:
        assert got == (consumer_a, expected.groupdict())
        # What an include chops off is the same as well.
        inner = Spy()
        assert include([inner], path=pattern).match(msg("x", path=value)) is not None
        assert inner.seen == [value[expected.end() :]]


@pytest.mark.parametrize(
    "pattern, flags, literal, tail",
    [
        (r"^/chat/(?P<room>[^/]+)/$", 0, "/chat/", None),
        (r"/poll/(?P<id>\d+)", 0, "/poll/", None),
        (r"^/chat", 0, "/chat", ""),
        (r"^POST$", 0, "POST", "$"),
        (r"^/a\Z", 0, "/a", "\\Z"),
        (r"^/a$", re.MULTILINE, "/a", None),
        (r"^/a\\Z", 0, "/a", None),
        (r"^/ab*", 0, "/a", None),
        (r"^/ab{2}", 0, "/a", None),
        (r"^/ab?$", 0, "/a", None),
        (r"^/a\.b", 0, "/a", None),
        (r"^/a|^/b", 0, "", None),
        (r"^/(?:a|b)", 0, "/", None),
        (r"^/(?:a|b)|c", 0, "", None),
        (r"^/(?:a|\d)", 0, "", None),  # not parsed: assumed to alternate
        (r"^/(?#x(|)y", 0, "", None),
        (r"^/chat", re.IGNORECASE, "", None),
        (r"^/chat", re.VERBOSE, "", None),
        (r"(?i)^/chat", 0, "", None),
        (r"^/a.b", re.DOTALL | re.MULTILINE, "/a", None),
        (r"^a*", 0, "", None),
        (r"^$", 0, "", "$"),
        (r"", 0, "", ""),
    ],
)
def test_split_literal(pattern: str, flags: int, literal: str, tail: str | None) -> None:
    """split_literal finds a pattern's literal start and tail, or none where unsafe."""
    assert split_literal(pattern, flags) == (literal, tail)
    f = route("x", consumer_a, path=re.compile(pattern, flags)).filters[0]
    assert (f.literal, f.tail) == (literal, tail)


class Spy:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def match(self, message: Any) -> Any:
        self.seen.append(message.content["path"])
        return consumer_a, {}

    def channel_names(self) -> set[str]:
        return {"x"}


def test_compiled_re_patterns_are_converted_with_their_flags(capsys: Any) -> None:
    """Compiled re patterns are converted to regex with their flags, and get the time limit."""
    # re.IGNORECASE and re.VERBOSE carry over.
    r = route("x", consumer_a, path=re.compile(r"^/CHAT/ (?P<room>\w+)  # the room", re.I | re.X))
    assert r.match(msg("x", path="/chat/Lobby")) == (consumer_a, {"room": "Lobby"})
    # re.ASCII is regex.VERSION1 by value: carried over by name.
    r = route("x", consumer_a, path=re.compile(r"^/(?P<w>\w+)$", re.ASCII))
    assert r.match(msg("x", path="/é")) is None
    assert r.match(msg("x", path="/e")) == (consumer_a, {"w": "e"})
    # re.DEBUG is regex.ASCII by value: dropped, it changes no match.
    r = route("x", consumer_a, path=re.compile(r"^/(?P<w>\w+)$", re.DEBUG))
    capsys.readouterr()
    assert r.match(msg("x", path="/é")) == (consumer_a, {"w": "é"})
    # re.MULTILINE and re.DOTALL too.
    r = route("x", consumer_a, path=re.compile(r"^/a.b$", re.S | re.M))
    assert r.match(msg("x", path="/a\nb\nc")) == (consumer_a, {})
    # And the time limit applies to them.
    r = route("x", consumer_a, path=re.compile(SLOW_PATTERN))
    assert isinstance(r.filters[0].regex, regex.Pattern)
    with pytest.raises(RouteTimeout):
        Router([r], timeout=0.1).match(msg("x", path=SLOW_PATH))
    # In an include as well.
    inc = include([route("x", consumer_a, path=r"^/(?P<n>\d+)$")], path=re.compile(r"^/ONE", re.I))
    assert inc.match(msg("x", path="/one/1")) == (consumer_a, {"n": "1"})


def test_compiled_regex_patterns_are_used_as_they_are() -> None:
    """Compiled regex patterns are used as given; unnamed groups and bytes are refused."""
    compiled = regex.compile(r"^/(?P<word>\p{L}+)/$")
    r = route("x", consumer_a, path=compiled)
    assert r.filters[0].regex is compiled
    assert r.match(msg("x", path="/été/")) == (consumer_a, {"word": "été"})
    with pytest.raises(ValueError, match="unnamed"):
        route("x", consumer_a, path=regex.compile(r"^/(\d+)"))
    with pytest.raises(TypeError, match="str pattern"):
        route("x", consumer_a, path=regex.compile(rb"^/"))
    with pytest.raises(TypeError, match="str pattern"):
        route("x", consumer_a, path=re.compile(rb"^/"))


def test_re_syntax_and_errors_stay_re_s() -> None:
    """Filters accept only re syntax: constructs that only regex knows raise ValueError."""
    # regex would accept these; route filters keep re's syntax.
    with pytest.raises(ValueError, match="invalid"):
        route("x", consumer_a, path=r"^/(?<name>\w+)")
    with pytest.raises(ValueError, match="invalid"):
        route("x", consumer_a, path=r"^/\p{L}")


# -- the GIL -------------------------------------------------------------------------


def worst_gap_while(work: Callable[[], Any]) -> tuple[float, float]:
    """
    Run ``work()`` while another Python thread spins reading the clock:
    ``(seconds work took, longest the other thread went without running)``.
    A call that holds the GIL stalls the other thread for all of its time.
    """
    stop = threading.Event()
    gaps: list[float] = []

    def spin() -> None:
        last = time.perf_counter()
        worst = 0.0
        while not stop.is_set():
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now
        gaps.append(worst)

    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.02)
    started = time.perf_counter()
    try:
        work()
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        spinner.join()
    return elapsed, gaps[0]


def test_a_slow_match_releases_the_gil() -> None:
    """A slow route match releases the GIL, so other threads keep running meanwhile."""
    # One CPU second: on two free cores the spinning thread's CPU time
    # counts too, and the match stops after half a second.
    router = Router([route("http.request", consumer_a, path=SLOW_PATTERN)], timeout=1.0)

    def slow_match() -> None:
        with pytest.raises(RouteTimeout):
            router.match(msg("http.request", path=SLOW_PATH))

    elapsed, gap = worst_gap_while(slow_match)
    assert elapsed >= 0.3
    # The reactor thread would have gone without the GIL for at most this
    # long; with re it is the whole match (see the next test).
    assert gap < min(0.2, elapsed / 3), "another thread waited %.3fs of %.3fs" % (gap, elapsed)


def test_the_gil_probe_sees_re_hold_the_gil() -> None:
    """Control for the GIL probe: plain re holds the GIL for the whole of a slow match."""
    # The control for the test above: re holds the GIL for all of a slow match.
    pattern = re.compile(r"^/r/(?:a+)+$")

    def slow_match() -> None:
        n = 16
        while True:
            started = time.perf_counter()
            assert pattern.match("/r/" + "a" * n + "!") is None
            if time.perf_counter() - started > 0.3:
                return
            n += 1

    # One match of 0.3 s or more holds the GIL throughout: a margin over 0.2 s
    # for a loaded machine, where the clock runs on while a thread waits.
    _, gap = worst_gap_while(slow_match)
    assert gap > 0.2


# -- what the worker answers -----------------------------------------------------


def timing_out_worker(channel: str) -> tuple[WorkerService, InMemoryChannelLayer]:
    """A worker whose routing times out on ``SLOW_PATH``, driven by hand."""
    layer = InMemoryChannelLayer()
    routing = [route(channel, consumer_a, path=SLOW_PATTERN)]
    wrapper = ChannelLayerWrapper(layer, "default", routing, Router(routing, timeout=0.1))
    reactor = MemoryReactorClock()
    return (
        WorkerService(
            reactor, layer, wrapper.router, WorkerPool(reactor, 1), consumer_layer=wrapper
        ),
        layer,
    )


@pytest.mark.parametrize(
    "channel, answer, outcome",
    [
        (
            "http.request",
            {
                "status": 500,
                "headers": [[b"content-type", b"text/plain; charset=utf-8"]],
                "content": b"500 Internal Server Error\n",
                "more_content": False,
            },
            "answered 500",
        ),
        ("websocket.connect", {"close": True}, "handshake refused (403)"),
        ("websocket.receive", {"close": 1011}, "socket closed with 1011"),
        ("websocket.disconnect", None, "message dropped"),
        ("app.task", None, "message dropped"),
    ],
)
def test_worker_answers_a_route_timeout(
    channel: str, answer: dict[str, Any] | None, outcome: str
) -> None:
    """On RouteTimeout the worker answers as fits the channel (500, 403, 1011 or nothing)
    and logs one error without a traceback.
    """
    worker, layer = timing_out_worker(channel)
    with capturedLogs() as events:
        worker.handle(channel, {"reply_channel": "srv.response!x", "path": SLOW_PATH})
    received = layer.receive(["srv.response!"])
    assert received == ((None, None) if answer is None else ("srv.response!x", answer))
    [event] = [e for e in events if e.get("log_level") == LogLevel.error]
    text = formatEvent(event)
    for part in (channel, "path=%r" % SLOW_PATTERN, "consumer_a", "0.1s", outcome):
        assert part in text
    assert "log_failure" not in event  # no traceback: the pattern is at fault


def test_a_route_timeout_answer_that_cannot_be_sent_is_logged() -> None:
    """A RouteTimeout answer that cannot be sent, or has no reply channel, is logged."""
    worker, _ = timing_out_worker("http.request")
    with capturedLogs() as events:
        # A reply channel that is not a valid channel name: sending fails.
        worker.handle("http.request", {"reply_channel": "bad name!", "path": SLOW_PATH})
        worker.handle("http.request", {"path": SLOW_PATH})
    texts = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]
    assert "the answer could not be sent" in texts[0]
    assert "no reply channel" in texts[1]
