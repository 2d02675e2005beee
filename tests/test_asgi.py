"""Tests for chanserv.asgi: the CHANNEL_LAYERS manager and its wrapper."""

from __future__ import annotations

import collections
import copy
import queue
import socket
import sys
import threading
import time
import types
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import override_settings
from twisted.python import threadable

from chanserv import channel_layers
from chanserv._foreign_layer import ForeignChannelLayer
from chanserv.asgi import (
    DEFAULT_CHANNEL_LAYERS,
    ChannelLayerManager,
    ChannelLayerWrapper,
    get_channel_layer,
)
from chanserv.channel import Channel, Group
from chanserv.exceptions import ChannelFull, InvalidChannelLayerError
from chanserv.handler import AsgiHandler
from chanserv.layers import InMemoryChannelLayer
from chanserv.layers.base import BaseChannelLayer
from chanserv.message import Message
from chanserv.routing import Router, route
from chanserv.server.config import ServerConfig
from chanserv.tap import build_service
from tests.support import in_reactor, reactor_thread


class RecordingLayer(BaseChannelLayer):
    """A layer that only remembers its constructor arguments."""

    built = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kwargs = kwargs
        type(self).built += 1


class LocalOnlyMethodLayer(RecordingLayer):
    def local_only(self) -> bool:  # type: ignore[override]
        return True


def not_a_layer() -> None:
    pass


def consumer(message: Any, **kwargs: Any) -> None:
    pass


channel_routing = [route("test.channel", consumer)]
bad_routing = [route("test.channel", consumer)]

LAYER = "tests.test_asgi.RecordingLayer"


def layers(**aliases: Any) -> Any:
    return override_settings(CHANNEL_LAYERS=aliases)


@pytest.fixture
def manager() -> ChannelLayerManager:
    return ChannelLayerManager()


def error_for(manager: ChannelLayerManager, alias: str = "default") -> str:
    with pytest.raises(InvalidChannelLayerError) as info:
        manager[alias]
    return str(info.value)


# -- building, caching, the wrapper -----------------------------------------------


def test_builds_the_configured_layer_with_its_config(manager: ChannelLayerManager) -> None:
    """The manager builds the BACKEND with CONFIG as kwargs, wrapped with alias and router."""
    with layers(
        default={
            "BACKEND": LAYER,
            "CONFIG": {"capacity": 3},
            "ROUTING": "tests.test_asgi.channel_routing",
        }
    ):
        wrapper = manager["default"]
        assert isinstance(wrapper, ChannelLayerWrapper)
        assert isinstance(wrapper.channel_layer, RecordingLayer)
        assert wrapper.channel_layer.kwargs == {"capacity": 3}
        assert wrapper.alias == "default"
        assert wrapper.routing == "tests.test_asgi.channel_routing"
        assert isinstance(wrapper.router, Router)
        assert wrapper.router.channels == {"test.channel"}
        assert wrapper.router.match(Message({}, "test.channel", None)) == (consumer, {})
        assert "default" in str(wrapper) and "RecordingLayer" in str(wrapper)


def test_layers_are_cached(manager: ChannelLayerManager) -> None:
    """Each alias's layer is built once and cached; make_backend builds afresh, uncached."""
    with layers(default={"BACKEND": LAYER, "ROUTING": []}, other={"BACKEND": LAYER, "ROUTING": []}):
        before = RecordingLayer.built
        first = manager["default"]
        assert manager["default"] is first
        assert manager["other"] is not first
        assert RecordingLayer.built == before + 2
        # make_backend builds afresh and leaves the cache alone.
        fresh = manager.make_backend("default")
        assert fresh is not first and manager["default"] is first


def test_wrapper_falls_through_to_the_layer(manager: ChannelLayerManager) -> None:
    """Attributes the wrapper lacks come from the layer; unknown ones raise AttributeError."""
    with layers(default={"BACKEND": LAYER, "CONFIG": {"capacity": 9}, "ROUTING": []}):
        wrapper = manager["default"]
        assert wrapper.capacity == 9
        assert wrapper.kwargs == {"capacity": 9}
        assert wrapper.ChannelFull is BaseChannelLayer.ChannelFull
        with pytest.raises(AttributeError):
            wrapper.no_such_attribute  # noqa: B018


def test_local_only_follows_the_layer() -> None:
    """The wrapper's local_only() is the layer's: False by default, True for in-memory."""
    assert ChannelLayerWrapper(RecordingLayer(), "a", []).local_only() is False
    assert ChannelLayerWrapper(LocalOnlyMethodLayer(), "a", []).local_only() is True
    assert ChannelLayerWrapper(InMemoryChannelLayer(), "a", []).local_only() is True


def test_contains(manager: ChannelLayerManager) -> None:
    """'alias in manager' is true for configured aliases and for ones added with set()."""
    with layers(default={"BACKEND": LAYER, "ROUTING": []}):
        assert "default" in manager
        assert "other" not in manager
        manager.set("other", ChannelLayerWrapper(RecordingLayer(), "other", []))
        assert "other" in manager


def test_set_returns_the_old_wrapper(manager: ChannelLayerManager) -> None:
    """manager.set() returns the wrapper it replaces; set to None, the alias is rebuilt."""
    with layers(default={"BACKEND": LAYER, "ROUTING": []}):
        built = manager["default"]
        replacement = ChannelLayerWrapper(RecordingLayer(), "default", [])
        assert manager.set("default", replacement) is built
        assert manager["default"] is replacement
        assert manager.set("default", None) is replacement
        rebuilt = manager["default"]
        assert rebuilt is not replacement and rebuilt is not built
        assert manager.set("unused", None) is None


def test_make_test_backend_uses_test_config(manager: ChannelLayerManager) -> None:
    """make_test_backend builds with TEST_CONFIG (else CONFIG), uncached; a bad one names it."""
    with layers(
        default={
            "BACKEND": LAYER,
            "CONFIG": {"capacity": 3},
            "TEST_CONFIG": {"capacity": 7},
            "ROUTING": [],
        },
        plain={"BACKEND": LAYER, "CONFIG": {"capacity": 4}, "ROUTING": []},
        bad={"BACKEND": LAYER, "CONFIG": {}, "TEST_CONFIG": {"capacity": 0}, "ROUTING": []},
    ):
        test_wrapper = manager.make_test_backend("default")
        assert test_wrapper.channel_layer.capacity == 7
        assert manager["default"].channel_layer.capacity == 3
        assert manager["default"] is not test_wrapper
        assert manager.make_test_backend("plain").channel_layer.capacity == 4
        with pytest.raises(
            InvalidChannelLayerError, match=r"CHANNEL_LAYERS\['bad'\]\['TEST_CONFIG'\]"
        ):
            manager.make_test_backend("bad")


# -- errors name the setting and the value ---------------------------------------


def test_missing_backend(manager: ChannelLayerManager) -> None:
    """A layer config without BACKEND raises an error naming CHANNEL_LAYERS['default']."""
    with layers(default={"ROUTING": []}):
        assert "CHANNEL_LAYERS['default'] has no 'BACKEND'" in error_for(manager)


def test_missing_routing(manager: ChannelLayerManager) -> None:
    """A layer config without ROUTING raises an error naming CHANNEL_LAYERS['default']."""
    with layers(default={"BACKEND": LAYER}):
        assert "CHANNEL_LAYERS['default'] has no 'ROUTING'" in error_for(manager)


@pytest.mark.parametrize(
    "backend, text",
    [
        ("chanserv_no_such_module.Layer", "cannot be imported"),
        ("tests.test_asgi.NoSuchLayer", "cannot be imported"),
        ("Layer", "cannot be imported"),
        ("tests.test_asgi.not_a_layer", "is not a channel layer class"),
        ("collections.OrderedDict", "is not a channel layer class"),
        ("tests.test_asgi.LAYER", "is not a channel layer class"),
    ],
)
def test_bad_backend(manager: ChannelLayerManager, backend: str, text: str) -> None:
    """A BACKEND that cannot be imported or is not a layer class raises an error showing it."""
    with layers(default={"BACKEND": backend, "ROUTING": []}):
        message = error_for(manager)
    assert "CHANNEL_LAYERS['default']['BACKEND'] = %r" % (backend,) in message
    assert text in message


def test_backend_not_a_string(manager: ChannelLayerManager) -> None:
    """A BACKEND that is a class rather than a dotted path raises an error naming it."""
    with layers(default={"BACKEND": RecordingLayer, "ROUTING": []}):
        message = error_for(manager)
    assert "CHANNEL_LAYERS['default']['BACKEND']" in message and "RecordingLayer" in message


def test_config_not_a_dict(manager: ChannelLayerManager) -> None:
    """A CONFIG that is not a dict raises an error showing the setting and its value."""
    with layers(default={"BACKEND": LAYER, "CONFIG": [("capacity", 3)], "ROUTING": []}):
        message = error_for(manager)
    assert "CHANNEL_LAYERS['default']['CONFIG'] must be a dict" in message
    assert "[('capacity', 3)]" in message


def test_unknown_config_keyword(manager: ChannelLayerManager) -> None:
    """A CONFIG keyword the layer does not take raises an error naming it and the layer."""
    with layers(default={"BACKEND": LAYER, "CONFIG": {"hosts": ["redis://x"]}, "ROUTING": []}):
        message = error_for(manager)
    assert "CHANNEL_LAYERS['default']['CONFIG'] = {'hosts': ['redis://x']}" in message
    assert "RecordingLayer" in message and "hosts" in message


def test_bad_config_value(manager: ChannelLayerManager) -> None:
    """A CONFIG value the layer refuses raises an error showing it and the layer's reason."""
    with layers(default={"BACKEND": LAYER, "CONFIG": {"capacity": 0}, "ROUTING": []}):
        message = error_for(manager)
    assert "CHANNEL_LAYERS['default']['CONFIG'] = {'capacity': 0}" in message
    assert "capacity must be a positive int" in message


@pytest.mark.parametrize(
    "routing, text",
    [
        ("chanserv_no_such_module.routing", "chanserv_no_such_module"),
        ("tests.test_asgi.no_such_routing", "no_such_routing"),
        (42, "routing must be a list"),
        ([consumer], "not routable"),
    ],
)
def test_bad_routing(manager: ChannelLayerManager, routing: Any, text: str) -> None:
    """A ROUTING that cannot be imported or is not routing raises an error showing it."""
    with layers(default={"BACKEND": LAYER, "ROUTING": routing}):
        message = error_for(manager)
    assert "CHANNEL_LAYERS['default']['ROUTING'] = %r" % (routing,) in message
    assert text in message


def test_bad_routing_builds_no_layer(manager: ChannelLayerManager) -> None:
    """Bad ROUTING is reported before any layer is built."""
    before = RecordingLayer.built
    with layers(default={"BACKEND": LAYER, "ROUTING": "chanserv_no_such_module.routing"}):
        error_for(manager)
    assert RecordingLayer.built == before


def test_channel_layers_not_a_dict(manager: ChannelLayerManager) -> None:
    """A CHANNEL_LAYERS that is not a dict raises an error showing its value."""
    with override_settings(CHANNEL_LAYERS=["default"]):
        message = error_for(manager)
    assert "CHANNEL_LAYERS must be a dict" in message and "['default']" in message


def test_alias_config_not_a_dict(manager: ChannelLayerManager) -> None:
    """An alias whose config is not a dict raises an error showing the setting and value."""
    with layers(default=LAYER):
        message = error_for(manager)
    assert "CHANNEL_LAYERS['default'] must be a dict" in message and LAYER in message


def test_missing_alias(manager: ChannelLayerManager) -> None:
    """An unconfigured alias is not in the manager; getting it lists the known aliases."""
    with layers(other={"BACKEND": LAYER, "ROUTING": []}):
        assert "default" not in manager
        message = error_for(manager)
    assert "CHANNEL_LAYERS has no 'default' layer" in message and "'other'" in message


def test_errors_are_value_errors() -> None:
    """InvalidChannelLayerError is a ValueError."""
    assert issubclass(InvalidChannelLayerError, ValueError)


def test_routing_that_uses_its_own_layer_while_built(tmp_path: Any, monkeypatch: Any) -> None:
    """Routing that asks for its own layer while being built raises an error, not recursion."""
    name = "chanserv_asgi_test_recursive_routing"
    (tmp_path / (name + ".py")).write_text(
        "from chanserv import channel_layers\nchannel_layers['recursive']\nchannel_routing = []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with layers(recursive={"BACKEND": LAYER, "ROUTING": name + ".channel_routing"}):
            message = error_for(channel_layers, "recursive")
        assert "being built" in message
    finally:
        sys.modules.pop(name, None)


# -- backend aliases --------------------------------------------------------------


def test_in_memory_aliases(manager: ChannelLayerManager) -> None:
    """asgiref's and chanserv's in-memory BACKEND paths all build an InMemoryChannelLayer."""
    for backend in (
        "asgiref.inmemory.ChannelLayer",
        "chanserv.layers.InMemoryChannelLayer",
        "chanserv.layers.inmemory.InMemoryChannelLayer",
    ):
        with layers(default={"BACKEND": backend, "ROUTING": []}):
            assert isinstance(manager.make_backend("default").channel_layer, InMemoryChannelLayer)


@pytest.mark.parametrize(
    "backend",
    [
        "asgi_redis.RedisChannelLayer",
        "asgi_redis.core.RedisChannelLayer",
        "chanserv.layers.RedisChannelLayer",
    ],
)
def test_redis_aliases(
    manager: ChannelLayerManager, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """asgi_redis and chanserv Redis BACKEND paths all build chanserv's Redis layer."""

    class FakeRedisLayer(RecordingLayer):
        pass

    fake = types.ModuleType("chanserv.layers.redis")
    fake.RedisChannelLayer = FakeRedisLayer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chanserv.layers.redis", fake)
    with layers(default={"BACKEND": backend, "CONFIG": {"capacity": 5}, "ROUTING": []}):
        layer = manager.make_backend("default").channel_layer
    assert isinstance(layer, FakeRedisLayer) and layer.kwargs == {"capacity": 5}


def test_redis_alias_without_the_redis_layer(
    manager: ChannelLayerManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis BACKEND without the Redis layer installed raises 'not available', naming it."""
    # None in sys.modules makes "import chanserv.layers.redis" fail.
    monkeypatch.setitem(sys.modules, "chanserv.layers.redis", None)
    with layers(default={"BACKEND": "asgi_redis.RedisChannelLayer", "ROUTING": []}):
        message = error_for(manager)
    assert "CHANNEL_LAYERS['default']['BACKEND'] = 'asgi_redis.RedisChannelLayer'" in message
    assert "Redis channel layer is not available" in message


# -- no CHANNEL_LAYERS at all ------------------------------------------------------


@pytest.fixture
def no_channel_layers() -> Iterator[None]:
    with override_settings(CHANNEL_LAYERS={}):
        del settings.CHANNEL_LAYERS
        yield


def test_no_setting_means_in_memory_default(
    no_channel_layers: None, manager: ChannelLayerManager
) -> None:
    """Without CHANNEL_LAYERS, 'default' is an in-memory layer with empty, unshared routing."""
    assert not hasattr(settings, "CHANNEL_LAYERS")
    assert manager.configs is DEFAULT_CHANNEL_LAYERS
    assert "default" in manager
    wrapper = manager["default"]
    assert isinstance(wrapper.channel_layer, InMemoryChannelLayer)
    assert wrapper.local_only()
    assert wrapper.router.channels == set()
    # The server applies the default routes at start-up.
    wrapper.router.check_default(http_consumer=consumer)
    assert wrapper.router.match(Message({"path": "/"}, "http.request", None)) == (consumer, {})
    # The default routing is not shared between layers.
    assert manager.make_backend("default").router.channels == set()


def test_no_setting_global_manager(no_channel_layers: None) -> None:
    """Without CHANNEL_LAYERS, the global manager's default is in-memory with empty routing."""
    assert isinstance(channel_layers["default"].channel_layer, InMemoryChannelLayer)
    assert channel_layers["default"].routing == []


# -- the global manager and get_channel_layer ---------------------------------------


def test_changing_the_setting_drops_the_cache() -> None:
    """Changing CHANNEL_LAYERS drops the cached layers, in the override and after it."""
    outside = channel_layers["default"]
    with layers(default={"BACKEND": LAYER, "ROUTING": []}):
        inside = channel_layers["default"]
        assert isinstance(inside.channel_layer, RecordingLayer)
    after = channel_layers["default"]
    assert after is not inside
    assert isinstance(after.channel_layer, type(outside.channel_layer))


def test_get_channel_layer_sets_django_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_channel_layer() does not call django.setup() again once the apps are ready."""
    import django

    calls: list[object] = []
    monkeypatch.setattr(django, "setup", lambda **kwargs: calls.append(kwargs))
    assert get_channel_layer() is channel_layers["default"].channel_layer
    assert calls == []  # the apps are ready: logging is not configured again


def test_get_channel_layer_returns_the_raw_layer() -> None:
    """get_channel_layer(alias) returns the alias's raw layer, not its wrapper."""
    layer = get_channel_layer()
    assert layer is channel_layers["default"].channel_layer
    assert isinstance(layer, InMemoryChannelLayer)
    with layers(default={"BACKEND": LAYER, "ROUTING": []}, other={"BACKEND": LAYER, "ROUTING": []}):
        assert get_channel_layer("other") is channel_layers["other"].channel_layer
        assert not isinstance(get_channel_layer("other"), ChannelLayerWrapper)


@pytest.mark.parametrize(
    "backend, suggestion",
    [
        ("asgiref.inmemory.ChanelLayer", "asgiref.inmemory.ChannelLayer"),
        ("asgi_redis.RedisChanelLayer", "asgi_redis.RedisChannelLayer"),
        ("chanserv.layers.InMemoryChanelLayer", "chanserv.layers.InMemoryChannelLayer"),
        ("chanserv.layer.RedisChannelLayer", "chanserv.layers.RedisChannelLayer"),
    ],
)
def test_misspelt_backend_gets_a_suggestion(
    manager: ChannelLayerManager, backend: str, suggestion: str
) -> None:
    """A misspelt BACKEND names the closest known layer ("did you mean"), on one line."""
    with layers(default={"BACKEND": backend, "ROUTING": []}):
        message = error_for(manager)
    assert message.endswith("did you mean %r?" % (suggestion,))
    assert "\n" not in message


def test_misspelt_channels_1_alias_is_not_a_missing_module(manager: ChannelLayerManager) -> None:
    """A wrong class of asgiref.inmemory lists the Channels 1.x names, not "No module named"."""
    with layers(default={"BACKEND": "asgiref.inmemory.ChanelLayer", "ROUTING": []}):
        message = error_for(manager)
    assert "No module named" not in message
    assert "'asgiref.inmemory.ChannelLayer', 'asgi_redis.RedisChannelLayer'" in message


def test_misspelt_routing_gets_a_suggestion(manager: ChannelLayerManager) -> None:
    """A misspelt ROUTING attribute or module names the closest existing path."""
    for routing in ("tests.routing.chanel_routing", "tests.routng.channel_routing"):
        with layers(default={"BACKEND": LAYER, "ROUTING": routing}):
            message = error_for(manager)
        assert message.endswith("did you mean 'tests.routing.channel_routing'?"), message


def test_misspelt_alias_gets_a_suggestion(manager: ChannelLayerManager) -> None:
    """Asking for an alias CHANNEL_LAYERS lacks names the closest alias it has."""
    with layers(default={"BACKEND": LAYER, "ROUTING": []}):
        with pytest.raises(InvalidChannelLayerError, match=r"did you mean 'default'\?$"):
            manager["defualt"]


# -- third-party ASGI 1 layers -------------------------------------------------------


class Asgi1Layer:
    """
    A minimal third-party ASGI 1 layer, as asgi_ipc or one's own would be:
    send / receive (blocking up to ``block_timeout``) / new_channel, groups,
    capacity, its own exception classes; nothing of chanserv.
    """

    extensions = ["groups", "flush"]

    class ChannelFull(Exception):
        pass

    class MessageTooLarge(Exception):
        pass

    def __init__(self, capacity: int = 100, expiry: int = 60, block_timeout: float = 0.2) -> None:
        self.capacity = capacity
        self.expiry = expiry
        self.block_timeout = block_timeout
        self._cond = threading.Condition()
        self._queues: dict[str, collections.deque[dict[str, Any]]] = collections.defaultdict(
            collections.deque
        )
        self._groups: dict[str, set[str]] = collections.defaultdict(set)
        self._count = 0

    def new_channel(self, pattern: str) -> str:
        self._count += 1
        return "%s%d" % (pattern, self._count)

    def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict)
        with self._cond:
            queue = self._queues[channel]
            if len(queue) >= self.capacity:
                raise self.ChannelFull(channel)
            queue.append(copy.deepcopy(message))
            self._cond.notify_all()

    def _take(self, channels: list[str]) -> tuple[Any, Any]:
        for name in channels:
            keys = [k for k in self._queues if k.startswith(name)] if name.endswith("!") else [name]
            for key in keys:
                if self._queues.get(key):
                    return key, self._queues[key].popleft()
        return None, None

    def receive(self, channels: list[str], block: bool = False) -> tuple[Any, Any]:
        deadline = time.monotonic() + self.block_timeout
        with self._cond:
            while True:
                found = self._take(channels)
                remaining = deadline - time.monotonic()
                if found[0] is not None or not block or remaining <= 0:
                    return found
                self._cond.wait(remaining)

    def group_add(self, group: str, channel: str) -> None:
        self._groups[group].add(channel)

    def group_discard(self, group: str, channel: str) -> None:
        self._groups[group].discard(channel)

    def group_channels(self, group: str) -> list[str]:
        return sorted(self._groups[group])

    def send_group(self, group: str, message: dict[str, Any]) -> None:
        for channel in self.group_channels(group):
            try:
                self.send(channel, message)
            except self.ChannelFull:
                pass

    def flush(self) -> None:
        with self._cond:
            self._queues.clear()
            self._groups.clear()


class SendOnly:
    """Has send and new_channel but no receive: not an ASGI 1 layer."""

    def send(self, channel: str, message: Any) -> None:
        pass

    def new_channel(self, pattern: str) -> str:
        return pattern


FOREIGN = "tests.test_asgi.Asgi1Layer"


def test_foreign_asgi1_layer_is_built_and_adapted(manager: ChannelLayerManager) -> None:
    """Any ASGI 1 layer class is accepted as BACKEND, built with CONFIG and adapted."""
    with layers(default={"BACKEND": FOREIGN, "CONFIG": {"capacity": 3}, "ROUTING": []}):
        wrapper = manager["default"]
    adapter = wrapper.channel_layer
    assert isinstance(adapter, ForeignChannelLayer)
    assert isinstance(adapter.foreign_layer, Asgi1Layer)
    assert adapter.foreign_layer.capacity == 3
    assert adapter.get_capacity("any") == 3
    assert (adapter.extensions, adapter.local_only, adapter.expiry) == (
        ["groups", "flush"],
        False,
        60,
    )
    assert wrapper.group_channels("g") == []  # unknown names reach the layer
    assert str(wrapper) == "default (tests.test_asgi.Asgi1Layer)"


def test_class_without_receive_is_refused(manager: ChannelLayerManager) -> None:
    """A class that is neither a chanserv layer nor an ASGI 1 layer is refused, naming what it lacks."""
    with layers(default={"BACKEND": "tests.test_asgi.SendOnly", "ROUTING": []}):
        message = error_for(manager)
    assert (
        "neither a subclass of chanserv.layers.base.BaseChannelLayer nor an ASGI 1 layer" in message
    )
    assert "it has no receive" in message


def test_foreign_layer_serves_channel_and_group(manager: ChannelLayerManager) -> None:
    """Channel and Group send through a foreign layer; its ChannelFull is catchable as either class."""
    with layers(default={"BACKEND": FOREIGN, "CONFIG": {"capacity": 1}, "ROUTING": []}):
        wrapper = manager["default"]
    foreign = wrapper.channel_layer.foreign_layer
    Channel("a", channel_layer=wrapper).send({"n": 1})
    assert foreign.receive(["a"]) == ("a", {"n": 1})
    Channel("a", channel_layer=wrapper).send({"n": 2})
    with pytest.raises(ChannelFull) as info:
        Channel("a", channel_layer=wrapper).send({"n": 3})
    assert isinstance(info.value, Asgi1Layer.ChannelFull)
    assert isinstance(info.value, wrapper.ChannelFull)
    Group("g", channel_layer=wrapper).add("b")
    Group("g", channel_layer=wrapper).send({"to": "all"})
    assert wrapper.receive(["b"]) == ("b", {"to": "all"})
    assert wrapper.receive(["b"]) == (None, None)


@pytest.fixture
def attached() -> Iterator[ForeignChannelLayer]:
    """A foreign layer adapted and attached to the test reactor (a background thread)."""
    reactor = reactor_thread()
    adapter = ForeignChannelLayer(Asgi1Layer(capacity=1))
    in_reactor(adapter.attach_reactor, reactor)
    yield adapter
    in_reactor(adapter.detach_reactor)


def test_foreign_reactor_face_receives_and_sends(attached: ForeignChannelLayer) -> None:
    """The reactor face receives and sends through pool threads; a full channel fails the send."""
    attached.send("a", {"n": 1})
    assert in_reactor(attached.receive_many_twisted, ["a"], 5) == [("a", {"n": 1})]
    in_reactor(attached.send_twisted, "b", {"n": 2})
    with pytest.raises(ChannelFull):
        in_reactor(attached.send_twisted, "b", {"n": 3})
    in_reactor(attached.when_capacity_twisted, "b")
    assert attached.receive(["b"]) == ("b", {"n": 2})


def test_cancelled_foreign_receive_takes_nothing(attached: ForeignChannelLayer) -> None:
    """A cancelled receive_many_twisted leaves the message that arrives next on its channel."""

    def receive_and_cancel() -> None:
        d = attached.receive_many_twisted(["c"], 1)
        d.addErrback(lambda f: None)
        d.cancel()

    in_reactor(receive_and_cancel)
    attached.send("c", {"n": 1})
    deadline = time.monotonic() + 10
    got: Any = (None, None)
    while got == (None, None) and time.monotonic() < deadline:
        got = attached.receive(["c"], block=True)
    assert got == ("c", {"n": 1})


def test_foreign_local_receiver_delivers_on_the_reactor_thread(
    attached: ForeignChannelLayer,
) -> None:
    """add_local_receiver hands each message on prefix!* to the callback on the reactor thread."""
    delivered: queue.Queue[tuple[bool, Any]] = queue.Queue()
    in_reactor(
        attached.add_local_receiver,
        "srv!",
        lambda batch: delivered.put((threadable.isInIOThread(), batch)),
    )
    with pytest.raises(ValueError):
        in_reactor(attached.add_local_receiver, "srv!", lambda batch: None)
    attached.send("srv!abc", {"reply": 1})
    assert delivered.get(timeout=10) == (True, [("srv!abc", {"reply": 1})])
    in_reactor(attached.remove_local_receiver, "srv!")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_hello(message: Any) -> None:
    """An http.request consumer answering through AsgiHandler.encode_response."""
    for chunk in AsgiHandler.encode_response(HttpResponse("hello " + message.content["path"])):
        message.reply_channel.send(chunk)


def test_server_and_worker_run_on_a_foreign_layer() -> None:
    """twistd's service tree (mode all) answers HTTP over a real socket through a foreign layer."""
    reactor = reactor_thread()
    adapter = ForeignChannelLayer(Asgi1Layer())
    wrapper = ChannelLayerWrapper(adapter, "default", [route("http.request", http_hello)])
    port = _free_port()
    root = build_service(
        reactor,
        mode="all",
        channel_layer=wrapper,
        threads=2,
        server_config=ServerConfig(endpoints=("tcp:%d:interface=127.0.0.1" % (port,),)),
    )
    in_reactor(root.startService)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(
                    "http://127.0.0.1:%d/there/" % (port,), timeout=10
                ) as r:
                    body, status = r.read(), r.status
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        in_reactor(root.stopService, timeout=30)
    assert (status, body) == (200, b"hello /there/")
