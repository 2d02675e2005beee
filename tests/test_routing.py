"""Tests for chanserv.routing: route, route_class, include, Router."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest
from django.test import override_settings

from chanserv.layers.base import BaseChannelLayer
from chanserv.message import Message
from chanserv.routing import (
    Include,
    Route,
    RouteClass,
    Router,
    connect_consumer,
    include,
    null_consumer,
    route,
    route_class,
)


def msg(channel: str, layer: Any = None, **content: Any) -> Message:
    return Message(content, channel, layer)


def consumer_a(message: Message, **kwargs: Any) -> None:
    pass


def consumer_b(message: Message, **kwargs: Any) -> None:
    pass


not_callable = 42


# -- route ------------------------------------------------------------------


def test_route_matches_on_channel_name() -> None:
    r = route("websocket.receive", consumer_a)
    assert r.match(msg("websocket.receive", text="hi")) == (consumer_a, {})
    assert r.match(msg("websocket.connect")) is None


def test_route_takes_a_list_of_channels_and_bytes_names() -> None:
    r = route(["websocket.connect", b"websocket.receive"], consumer_a)
    assert r.channel_names() == {"websocket.connect", "websocket.receive"}
    assert r.match(msg("websocket.receive")) == (consumer_a, {})
    assert r.match(msg("websocket.connect")) == (consumer_a, {})
    assert r.match(msg("websocket.disconnect")) is None


def test_route_refuses_bad_channels_and_consumers() -> None:
    with pytest.raises(TypeError):
        route("", consumer_a)
    with pytest.raises(TypeError):
        route([1], consumer_a)
    with pytest.raises(TypeError, match="callable or a dotted path"):
        route("x", 42)


def test_named_groups_become_kwargs() -> None:
    r = route("http.request", consumer_a, path=r"^/poll/(?P<poll_id>\d+)/$")
    assert r.match(msg("http.request", path="/poll/12/")) == (consumer_a, {"poll_id": "12"})
    assert r.match(msg("http.request", path="/poll/x/")) is None


def test_filters_are_anchored_at_the_start_only() -> None:
    r = route("http.request", consumer_a, path=r"/a")
    assert r.match(msg("http.request", path="/abc")) is not None
    assert r.match(msg("http.request", path="/x/a")) is None


def test_path_filter_keeps_the_leading_slash() -> None:
    assert (
        route("http.request", consumer_a, path=r"^chat/$").match(msg("http.request", path="/chat/"))
        is None
    )
    assert route("http.request", consumer_a, path=r"^/chat/$").match(
        msg("http.request", path="/chat/")
    ) == (consumer_a, {})


def test_every_filter_must_match() -> None:
    r = route("http.request", consumer_a, path=r"^/poll/$", method=r"^POST$")
    assert r.match(msg("http.request", path="/poll/", method="POST")) == (consumer_a, {})
    assert r.match(msg("http.request", path="/poll/", method="GET")) is None
    assert r.match(msg("http.request", path="/other/", method="POST")) is None


def test_method_filter_is_case_sensitive() -> None:
    # A lowercase "get" is not GET (reference/security.md).
    r = route("http.request", consumer_a, method=r"^GET$")
    assert r.match(msg("http.request", method="get")) is None


def test_a_filter_key_missing_from_the_message_means_no_match() -> None:
    r = route("http.request", consumer_a, method=r"^GET$")
    assert r.match(msg("http.request", path="/")) is None


def test_bytes_values_are_ascii_decoded() -> None:
    r = route("http.request", consumer_a, query_string=r"^a=(?P<a>\d+)")
    assert r.match(msg("http.request", query_string=b"a=5&b=6")) == (consumer_a, {"a": "5"})


def test_values_that_cannot_be_text_never_match() -> None:
    r = route("http.request", consumer_a, query_string=r"")
    assert r.match(msg("http.request", query_string=b"\xc3\xa9")) is None
    assert r.match(msg("http.request", query_string=5)) is None
    assert r.match(msg("http.request", query_string=None)) is None
    assert r.match(msg("http.request", query_string="")) == (consumer_a, {})


def test_bytes_and_compiled_patterns_are_accepted() -> None:
    import re

    r = route("x", consumer_a, path=b"^/(?P<n>\\d)", method=re.compile("^GET$"))
    assert r.match(msg("x", path="/1", method="GET")) == (consumer_a, {"n": "1"})


def test_unnamed_groups_are_refused_naming_the_pattern() -> None:
    with pytest.raises(ValueError, match=r"\^/r/\(a\+\)\+\$"):
        route("http.request", consumer_a, path=r"^/r/(a+)+$")
    with pytest.raises(ValueError, match="unnamed"):
        include([], path=r"^/(chat)")
    with pytest.raises(ValueError, match="unnamed"):
        route_class(ChatConsumer, path=r"(x)")
    # Non-capturing groups are fine.
    route("http.request", consumer_a, path=r"^/(?:a|b)/$")


def test_invalid_patterns_raise_value_error() -> None:
    with pytest.raises(ValueError, match="invalid"):
        route("x", consumer_a, path=r"^(?P<a>")
    with pytest.raises(TypeError):
        route("x", consumer_a, path=5)


def test_optional_named_group_gives_none() -> None:
    r = route("x", consumer_a, path=r"^/(?P<page>\d+)?")
    assert r.match(msg("x", path="/")) == (consumer_a, {"page": None})


def test_route_repr_names_channels_consumer_and_filters() -> None:
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
    r = route("websocket.receive", consumers_module + ".ws_message")
    assert consumers_module not in sys.modules
    result = r.match(msg("websocket.receive"))
    assert result is not None
    consumer, kwargs = result
    assert consumer is sys.modules[consumers_module].ws_message
    assert kwargs == {}
    assert r.consumer is consumer


def test_dotted_path_consumer_import_error_names_the_path() -> None:
    r = route("websocket.receive", "chanserv_no_such_module.consumer")
    with pytest.raises(ImportError, match=r"chanserv_no_such_module\.consumer"):
        r.match(msg("websocket.receive"))
    r = route("websocket.receive", "tests.test_routing.no_such_consumer")
    with pytest.raises(ImportError, match=r"tests\.test_routing\.no_such_consumer"):
        r.match(msg("websocket.receive"))
    with pytest.raises(ImportError, match="dotted path"):
        route("x", "nodots").match(msg("x"))


def test_dotted_path_to_a_non_callable_is_refused() -> None:
    r = route("x", "tests.test_routing.not_callable")
    with pytest.raises(TypeError, match="not callable"):
        r.match(msg("x"))


def test_unmatched_dotted_path_is_never_imported() -> None:
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
    class NoNames:
        pass

    class BadNames:
        channel_names = ["a"]

    with pytest.raises(ValueError, match="channel_names"):
        route_class(NoNames)
    with pytest.raises(ValueError, match="channel_names"):
        route_class(BadNames)


def test_route_class_accepts_a_dotted_path(consumers_module: str) -> None:
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
    r = include([route("x", consumer_a, query_string=r"^&(?P<b>\w+)=")], query_string=r"^a=1")
    assert r.match(msg("x", query_string=b"a=1&b=2")) == (consumer_a, {"b": "b"})


def test_include_short_circuits_when_its_prefix_fails() -> None:
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
    inner = [route("x", consumer_a, path=r"^/(?P<name>\w+)/(?P<page>\d+)$")]
    inc = include(inner, path=r"^/(?P<name>\w+)(?P<section>/s)")
    assert inc.match(msg("x", path="/outer/s/inner/3")) == (
        consumer_a,
        {"name": "inner", "section": "/s", "page": "3"},
    )


def test_nested_includes_chop_in_turn() -> None:
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
    inner = [route("x", consumer_a, path=r"^/(?P<n>\d+)$")]
    router = Router([include(inner, path=r"^/one"), include(inner, path=r"^/two")])
    assert router.match(msg("x", path="/one/1")) == (consumer_a, {"n": "1"})
    assert router.match(msg("x", path="/two/2")) == (consumer_a, {"n": "2"})
    assert router.match(msg("x", path="/three/3")) is None


def test_include_takes_a_dotted_path(consumers_module: str, tmp_path: Any) -> None:
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
    router = Router({"websocket.receive": consumer_a, "websocket.connect": consumer_b})
    assert router.channels == {"websocket.receive", "websocket.connect"}
    assert router.match(msg("websocket.receive")) == (consumer_a, {})
    assert router.match(msg("websocket.connect")) == (consumer_b, {})
    assert router.match(msg("http.request")) is None


def test_any_object_with_match_and_channel_names_is_routable() -> None:
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
    with pytest.raises(TypeError, match="not routable"):
        Router([consumer_a])
    with pytest.raises(TypeError, match="routing must be a list"):
        Router(42)
    with pytest.raises(ImportError, match=r"chanserv_no_such_module\.routing"):
        Router("chanserv_no_such_module.routing")


def test_add_route_appends_and_updates_channels() -> None:
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
    router = Router([route("websocket.connect", consumer_a)])
    router.check_default(http_consumer=consumer_b)
    assert router.match(msg("websocket.connect")) == (consumer_a, {})


def test_check_default_uses_the_view_consumer() -> None:
    from chanserv.handler import ViewConsumer

    router = Router([])
    router.check_default()
    result = router.match(msg("http.request", path="/"))
    assert result is not None
    assert type(result[0]) is ViewConsumer


@override_settings(DEBUG=True)
def test_check_default_serves_static_files_under_debug() -> None:
    from chanserv.staticfiles import StaticFilesConsumer

    router = Router([])
    router.check_default()
    result = router.match(msg("http.request", path="/static/x.css"))
    assert result is not None
    assert isinstance(result[0], StaticFilesConsumer)


def test_default_connect_consumer_accepts() -> None:
    layer = RecordingLayer()
    message = msg("websocket.connect", layer, reply_channel="daphne.response.abc!def", path="/")
    connect_consumer(message)
    assert layer.sent == [("daphne.response.abc!def", {"accept": True})]
    null_consumer(message)
    assert layer.sent == [("daphne.response.abc!def", {"accept": True})]


def test_route_and_router_types() -> None:
    assert isinstance(route("x", consumer_a), Route)
    assert isinstance(include([]), Include)
    assert Router([]).channels == set()
    assert Router([]).match(msg("x")) is None
