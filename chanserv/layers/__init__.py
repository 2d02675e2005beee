"""
Channel layers: the in-reactor :class:`InMemoryChannelLayer` and the
Redis-backed ``RedisChannelLayer``, loaded on first use so that one layer's
module loads neither the other nor Django.  Any thread (import time); each
layer says which thread calls which face.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chanserv.lazy import lazy_names

if TYPE_CHECKING:
    from chanserv.layers.base import BaseChannelLayer
    from chanserv.layers.inmemory import InMemoryChannelLayer
    from chanserv.layers.redis import RedisChannelLayer

__all__ = ["BaseChannelLayer", "InMemoryChannelLayer", "RedisChannelLayer"]

# Each public name and the module that defines it.
_HOMES = {
    "BaseChannelLayer": "chanserv.layers.base",
    "InMemoryChannelLayer": "chanserv.layers.inmemory",
    "RedisChannelLayer": "chanserv.layers.redis",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES, __all__)
