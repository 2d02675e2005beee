"""
Channel layers: the in-reactor :class:`InMemoryChannelLayer` (the embedded
default) and the Redis-backed ``RedisChannelLayer`` (imported on first use,
so that txredisapi is only loaded by sites that use it).
"""

from typing import Any

from chanserv.layers.base import BaseChannelLayer
from chanserv.layers.inmemory import InMemoryChannelLayer

__all__ = ["BaseChannelLayer", "InMemoryChannelLayer", "RedisChannelLayer"]


def __getattr__(name: str) -> Any:
    if name == "RedisChannelLayer":
        from chanserv.layers.redis import RedisChannelLayer

        return RedisChannelLayer
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
