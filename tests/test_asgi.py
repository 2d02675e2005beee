"""Tests for chanserv.asgi: the CHANNEL_LAYERS manager and its wrapper."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from chanserv import channel_layers
from chanserv.asgi import (
    DEFAULT_CHANNEL_LAYERS,
    ChannelLayerManager,
    ChannelLayerWrapper,
    get_channel_layer,
)
from chanserv.exceptions import InvalidChannelLayerError
from chanserv.layers import InMemoryChannelLayer
from chanserv.layers.base import BaseChannelLayer
from chanserv.message import Message
from chanserv.routing import Router, route


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
