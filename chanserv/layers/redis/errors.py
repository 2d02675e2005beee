"""The errors of the Redis channel layer (both are ``ConnectionError``)."""

from __future__ import annotations

__all__ = ["RedisTimeout", "RedisUnavailable"]


class RedisUnavailable(ConnectionError):
    """
    Redis cannot be used right now: it is unreachable, the connection was
    lost while the command was in flight, or too much is waiting for it.
    The operation may or may not have taken effect.
    """


class RedisTimeout(RedisUnavailable):
    """Redis did not answer in time; the connection was dropped."""
