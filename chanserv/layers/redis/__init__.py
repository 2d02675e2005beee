"""
The Redis channel layer, for sites that run interface servers and workers
as separate processes, on one or more machines; its modules import one
way, from :mod:`.config` up to :mod:`.layer`.  Any thread (import time);
the modules below say which thread runs their code.
"""

from chanserv.layers.redis.layer import (
    RedisChannelLayer,
    RedisTimeout,
    RedisUnavailable,
    parse_hosts,
)

__all__ = ["RedisChannelLayer", "RedisTimeout", "RedisUnavailable", "parse_hosts"]
