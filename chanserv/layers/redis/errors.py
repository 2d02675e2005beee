"""
The errors of the Redis channel layer (all are ``ConnectionError``).
Any thread: raised on the reactor thread, and re-raised to synchronous
callers in theirs.
"""

from __future__ import annotations

__all__ = ["MasterNotFound", "RedisTimeout", "RedisUnavailable"]


class RedisUnavailable(ConnectionError):
    """
    Redis cannot be used right now: it is unreachable, the connection was
    lost while the command was in flight, the server turned out to be a
    replica (a failover), or too much is waiting for it.  The operation may
    or may not have taken effect.
    """


class RedisTimeout(RedisUnavailable):
    """Redis did not answer in time; the connection was dropped."""


class MasterNotFound(RedisUnavailable):
    """No sentinel named a master for the service (unreachable, or unknown name)."""
