"""
The Redis channel layer, for sites that run interface servers and workers
as separate processes, on one or more machines.

Modules import one way: :mod:`.config` (settings, addresses) ←
:mod:`.protocol` and :mod:`.connection` (one Redis server's connections) ←
:mod:`.scripts` (the Lua scripts and key layout) ← :mod:`.operations` (the
commands) ← :mod:`.receive` (receive loops) ← :mod:`.layer` (the two faces).
"""

from chanserv.layers.redis.layer import (
    RedisChannelLayer,
    RedisTimeout,
    RedisUnavailable,
    parse_hosts,
)

__all__ = ["RedisChannelLayer", "RedisTimeout", "RedisUnavailable", "parse_hosts"]
