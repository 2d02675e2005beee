"""
The project's channel layers, built from ``settings.CHANNEL_LAYERS`` on
first use: :data:`channel_layers` maps an alias to a
:class:`ChannelLayerWrapper` (the layer, its alias and its router).  Any
thread: the main thread at start-up, pool threads and users' code later.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from chanserv._foreign_layer import ForeignChannelLayer, missing_asgi_methods
from chanserv.exceptions import InvalidChannelLayerError
from chanserv.layers.base import BaseChannelLayer
from chanserv.routing import Router, did_you_mean
from chanserv.utils import name_that_thing

__all__ = [
    "BACKEND_ALIASES",
    "DEFAULT_CHANNEL_LAYERS",
    "KNOWN_BACKENDS",
    "ChannelLayerManager",
    "ChannelLayerWrapper",
    "channel_layers",
    "get_channel_layer",
]

_REDIS = "chanserv.layers.RedisChannelLayer"

#: Channels 1.x backend names and the chanserv layers that replace them.
BACKEND_ALIASES = {
    "asgiref.inmemory.ChannelLayer": "chanserv.layers.InMemoryChannelLayer",
    "asgi_redis.RedisChannelLayer": _REDIS,
    "asgi_redis.core.RedisChannelLayer": _REDIS,
}

#: The BACKEND names chanserv knows, for "did you mean" (besides the aliases).
KNOWN_BACKENDS = (
    "chanserv.layers.InMemoryChannelLayer",
    "chanserv.layers.RedisChannelLayer",
    "chanserv.layers.inmemory.InMemoryChannelLayer",
    "chanserv.layers.redis.RedisChannelLayer",
)

#: What a project without ``CHANNEL_LAYERS`` gets.
DEFAULT_CHANNEL_LAYERS: Mapping[str, Mapping[str, Any]] = {
    "default": {"BACKEND": "chanserv.layers.InMemoryChannelLayer", "ROUTING": []},
}


class ChannelLayerWrapper:
    """
    A channel layer with its alias and router.

    :param channel_layer: the layer instance; unknown attributes are looked
        up on it.
    :param alias: its name in ``CHANNEL_LAYERS``.
    :param routing: any routing form (list, dotted path, legacy dict).
    :param router: a :class:`Router` already built from ``routing``;
        built here if None.
    """

    def __init__(
        self, channel_layer: Any, alias: str, routing: Any, router: Router | None = None
    ) -> None:
        # Any: a third-party ASGI 1 layer may provide only part of
        # IChannelLayer (callers look its optional methods up), and routing
        # is any routing form, checked by Router at run time.
        self.channel_layer = channel_layer
        self.alias = alias
        self.routing = routing
        self.router = router if router is not None else Router(routing)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set on the wrapper; guard against
        # recursion while the instance is half-built (copy, pickle).
        if name == "channel_layer":
            raise AttributeError(name)
        return getattr(self.channel_layer, name)

    def local_only(self) -> bool:
        """True when the layer cannot carry messages between processes."""
        value = getattr(self.channel_layer, "local_only", False)
        return bool(value() if callable(value) else value)

    def __str__(self) -> str:
        # A third-party layer is named, not its chanserv adapter.
        layer = getattr(self.channel_layer, "foreign_layer", self.channel_layer)
        return "%s (%s)" % (self.alias, name_that_thing(layer))

    def __repr__(self) -> str:
        return "<ChannelLayerWrapper %s>" % (self,)


def _setting(alias: str, key: str | None = None) -> str:
    text = "CHANNEL_LAYERS[%r]" % (alias,)
    return text if key is None else "%s[%r]" % (text, key)


def load_backend(path: object, setting: str) -> type:
    """
    The layer class named by ``path`` (aliases resolved): a
    :class:`~chanserv.layers.base.BaseChannelLayer` subclass, or any ASGI 1
    layer class (``send``, ``receive`` or ``receive_many``, ``new_channel``),
    whose instances :class:`ChannelLayerManager` adapts with
    :class:`~chanserv._foreign_layer.ForeignChannelLayer`.

    :param setting: the setting's name, for error messages.
    :raises InvalidChannelLayerError: not a string, cannot be imported, or
        not a class of either kind.
    """
    if not isinstance(path, str):
        raise InvalidChannelLayerError(
            "%s must be the dotted path of a channel layer class, not %r" % (setting, path)
        )
    target = BACKEND_ALIASES.get(path, path)
    via = " (an alias of %r)" % (target,) if target != path else ""
    family = {name.rpartition(".")[0] for name in BACKEND_ALIASES}
    if target == path and path.rpartition(".")[0] in family:
        # A Channels 1.x module chanserv stands in for, with a class it has not.
        raise InvalidChannelLayerError(
            "%s = %r is not one of the Channels 1.x layers chanserv stands in for "
            "(%s)%s"
            % (
                setting,
                path,
                ", ".join(repr(name) for name in BACKEND_ALIASES),
                did_you_mean(path, BACKEND_ALIASES),
            )
        )
    try:
        backend = import_string(target)
    except ImportError as e:
        if target == _REDIS and getattr(e, "name", None) == "chanserv.layers.redis":
            raise InvalidChannelLayerError(
                "%s = %r%s: the Redis channel layer is not available in this "
                "installation of chanserv (chanserv.layers.redis is missing)" % (setting, path, via)
            ) from e
        raise InvalidChannelLayerError(
            "%s = %r%s cannot be imported: %s%s"
            % (setting, path, via, e, did_you_mean(path, [*BACKEND_ALIASES, *KNOWN_BACKENDS]))
        ) from e
    if not isinstance(backend, type):
        raise InvalidChannelLayerError(
            "%s = %r%s is not a channel layer class: %r is not a class"
            % (setting, path, via, backend)
        )
    if not issubclass(backend, BaseChannelLayer):
        # A third-party ASGI 1 layer, as Channels 1.x accepted: adapted by
        # _make_backend (chanserv._foreign_layer).
        missing = missing_asgi_methods(backend)
        if missing:
            raise InvalidChannelLayerError(
                "%s = %r%s is not a channel layer class: %r is neither a subclass of "
                "chanserv.layers.base.BaseChannelLayer nor an ASGI 1 layer (it has no %s)"
                % (setting, path, via, backend, ", ".join(missing))
            )
    return backend


class ChannelLayerManager:
    """
    The layers of ``settings.CHANNEL_LAYERS``, built on first use and cached.

    ``manager[alias]`` builds (once) and returns the
    :class:`ChannelLayerWrapper`; ``alias in manager`` tells whether it is
    configured; :meth:`set` swaps one in (tests).  Any thread: building is
    serialised by a lock, so two threads never get two layers for one alias.
    The cache is dropped when a test changes ``CHANNEL_LAYERS`` with
    ``override_settings``.  Without a ``CHANNEL_LAYERS`` setting there is
    one layer, ``"default"``, an in-memory layer with an empty routing;
    default routes are added by whoever serves a layer
    (``router.check_default``), never here.

    :raises InvalidChannelLayerError: from ``manager[alias]``, on any
        misconfiguration of that alias.
    """

    def __init__(self) -> None:
        self.backends: dict[str, ChannelLayerWrapper] = {}
        self._lock = threading.RLock()
        self._building: set[str] = set()

    @property
    def configs(self) -> Mapping[str, Any]:
        # Any: settings.CHANNEL_LAYERS as the project wrote it; each entry
        # is checked where it is read.
        """``settings.CHANNEL_LAYERS``, or :data:`DEFAULT_CHANNEL_LAYERS`."""
        configs = getattr(settings, "CHANNEL_LAYERS", None)
        if configs is None:
            return DEFAULT_CHANNEL_LAYERS
        if not isinstance(configs, Mapping):
            raise InvalidChannelLayerError(
                "CHANNEL_LAYERS must be a dict of {alias: {...}}, not %r" % (configs,)
            )
        return configs

    def _config(self, alias: str) -> Mapping[str, Any]:
        configs = self.configs
        if alias not in configs:
            raise InvalidChannelLayerError(
                "CHANNEL_LAYERS has no %r layer; it defines %s%s"
                % (
                    alias,
                    ", ".join(repr(a) for a in configs) or "none",
                    did_you_mean(alias, [str(a) for a in configs]),
                )
            )
        config = configs[alias]
        if not isinstance(config, Mapping):
            raise InvalidChannelLayerError(
                "%s must be a dict with 'BACKEND' and 'ROUTING', not %r" % (_setting(alias), config)
            )
        return config

    def make_backend(self, alias: str) -> ChannelLayerWrapper:
        """A new wrapper for ``alias``, built with its ``CONFIG`` (not cached)."""
        return self._make_backend(alias, "CONFIG")

    def make_test_backend(self, alias: str) -> ChannelLayerWrapper:
        """
        A new wrapper for ``alias`` built with its ``TEST_CONFIG``, or its
        ``CONFIG`` if it has none (not cached; see :meth:`set`).
        """
        key = "TEST_CONFIG" if "TEST_CONFIG" in self._config(alias) else "CONFIG"
        return self._make_backend(alias, key)

    def _make_backend(self, alias: str, config_key: str) -> ChannelLayerWrapper:
        config = self._config(alias)
        if "BACKEND" not in config:
            raise InvalidChannelLayerError("%s has no 'BACKEND'" % (_setting(alias),))
        backend = load_backend(config["BACKEND"], _setting(alias, "BACKEND"))
        if "ROUTING" not in config:
            raise InvalidChannelLayerError(
                "%s has no 'ROUTING' (the dotted path of a routing list, or [])"
                % (_setting(alias),)
            )
        routing = config["ROUTING"]
        try:
            router = Router(routing)
        except (ImportError, TypeError, ValueError) as e:
            raise InvalidChannelLayerError(
                "%s = %r is not a valid routing: %s" % (_setting(alias, "ROUTING"), routing, e)
            ) from e
        kwargs = config.get(config_key, {})
        if not isinstance(kwargs, Mapping):
            raise InvalidChannelLayerError(
                "%s must be a dict of %s keyword arguments, not %r"
                % (_setting(alias, config_key), backend.__name__, kwargs)
            )
        try:
            layer = backend(**kwargs)
        except (TypeError, ValueError) as e:
            raise InvalidChannelLayerError(
                "%s = %r is not valid for %s: %s"
                % (_setting(alias, config_key), dict(kwargs), backend.__name__, e)
            ) from e
        if not isinstance(layer, BaseChannelLayer):
            layer = ForeignChannelLayer(layer)
        return ChannelLayerWrapper(layer, alias, routing, router=router)

    def __getitem__(self, alias: str) -> ChannelLayerWrapper:
        wrapper = self.backends.get(alias)
        if wrapper is not None:
            return wrapper
        with self._lock:
            wrapper = self.backends.get(alias)
            if wrapper is not None:
                return wrapper
            if alias in self._building:
                raise InvalidChannelLayerError(
                    "%s is used while it is being built (does its ROUTING "
                    "module use channel_layers at import time?)" % (_setting(alias),)
                )
            self._building.add(alias)
            try:
                wrapper = self.make_backend(alias)
            finally:
                self._building.discard(alias)
            self.backends[alias] = wrapper
            return wrapper

    def __contains__(self, alias: object) -> bool:
        return alias in self.backends or alias in self.configs

    def set(self, alias: str, wrapper: ChannelLayerWrapper | None) -> ChannelLayerWrapper | None:
        """
        Make ``wrapper`` the layer of ``alias`` (None: forget it, so the next
        use builds it again from the settings).  Returns the previous one.
        """
        with self._lock:
            old = self.backends.pop(alias, None)
            if wrapper is not None:
                self.backends[alias] = wrapper
            return old

    def clear(self) -> None:
        """Forget every built layer."""
        with self._lock:
            self.backends.clear()


channel_layers = ChannelLayerManager()


def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting == "CHANNEL_LAYERS":
        channel_layers.clear()


setting_changed.connect(_settings_changed, dispatch_uid="chanserv.asgi.settings_changed")


def get_channel_layer(alias: str = "default") -> Any:
    # Any: the raw layer, which may be a third-party ASGI 1 layer providing
    # only part of IChannelLayer (Channels 1.x API).
    """
    The raw layer (not the wrapper) of ``alias``, after ``django.setup()``:
    for code outside a Django process that needs a layer.
    """
    if not apps.ready:
        # Once: every django.setup() configures logging again, which costs
        # memory each time in a process that calls this per request.
        django.setup(set_prefix=False)
    return channel_layers[alias].channel_layer
