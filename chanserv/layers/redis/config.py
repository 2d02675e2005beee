"""
Configuration of the Redis channel layer: ``hosts`` (asgi_redis's forms),
``connection_kwargs``, and ``channel_capacity`` globs that the Lua scripts
can evaluate themselves (so that a group send stays one round trip).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from chanserv.layers.base import BaseChannelLayer

__all__ = [
    "RedisAddress",
    "compile_capacities",
    "connection_options",
    "glob_to_lua",
    "lua_capacities",
    "parse_hosts",
]


@dataclass(frozen=True)
class RedisAddress:
    """Where a shard is and how to log in."""

    host: str
    port: int = 6379
    db: int | None = None
    password: str | None = None
    username: str | None = None
    tls: bool = False

    def __str__(self) -> str:
        return "%s://%s:%d/%d" % (
            "rediss" if self.tls else "redis",
            self.host,
            self.port,
            self.db or 0,
        )


#: connection_kwargs understood here.
_CONNECTION_KWARGS = {
    "socket_timeout",  # seconds to wait for any reply (5)
    "socket_connect_timeout",  # seconds to connect (5)
    "password",
    "username",
    "db",
    "ssl",
    "reconnect_max_delay",  # cap of the reconnection back-off (5)
    "max_blocking_connections",  # per shard (64)
}
#: redis-py connection_kwargs that make no sense here; accepted and ignored.
_IGNORED_KWARGS = {
    "socket_keepalive",
    "socket_keepalive_options",
    "retry_on_timeout",
    "health_check_interval",
    "max_connections",
    "encoding",
    "encoding_errors",
    "decode_responses",
    "client_name",
}


def _parse_url(url: str, defaults: Mapping[str, Any]) -> RedisAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("Redis host %r: only redis:// and rediss:// URLs are supported" % (url,))
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("Redis host %r has an invalid port" % (url,)) from None
    db: Any = defaults.get("db")
    path = parts.path.strip("/")
    query = parse_qs(parts.query)
    if path:
        db = path
    elif "db" in query:
        db = query["db"][0]
    try:
        db = int(db) if db is not None else None
    except ValueError:
        raise ValueError("Redis host %r: the database must be a number" % (url,)) from None
    password = unquote(parts.password) if parts.password else defaults.get("password")
    username = unquote(parts.username) if parts.username else defaults.get("username")
    return RedisAddress(
        host=parts.hostname or "localhost",
        port=port,
        db=db or None,
        password=password,
        username=username,
        tls=parts.scheme == "rediss" or bool(defaults.get("ssl")),
    )


def parse_hosts(hosts: Any, defaults: Mapping[str, Any] | None = None) -> list[RedisAddress]:
    """
    ``hosts`` as addresses: a list of ``redis://[[user]:password@]host[:port][/db]``
    (or ``rediss://``) URLs and ``(host, port)`` pairs; None means
    ``[("localhost", 6379)]``.  ``defaults`` (connection_kwargs) supply
    ``password``, ``username``, ``db`` and ``ssl`` where a URL does not.

    :raises ValueError: a bare string instead of a list, or a bad entry.
    """
    defaults = defaults or {}
    if hosts is None or (isinstance(hosts, (list, tuple)) and not hosts):
        hosts = [("localhost", 6379)]
    if isinstance(hosts, (str, bytes)):
        raise ValueError("Redis hosts must be a list, not a single string: use [%r]" % (hosts,))
    if not isinstance(hosts, Iterable):
        raise ValueError("Redis hosts must be a list of URLs or (host, port) pairs")
    addresses = []
    for entry in hosts:
        if isinstance(entry, str):
            addresses.append(_parse_url(entry, defaults))
        elif (
            isinstance(entry, (tuple, list))
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], int)
        ):
            addresses.append(
                RedisAddress(
                    host=entry[0],
                    port=entry[1],
                    db=int(defaults["db"]) if defaults.get("db") else None,
                    password=defaults.get("password"),
                    username=defaults.get("username"),
                    tls=bool(defaults.get("ssl")),
                )
            )
        else:
            raise ValueError(
                "Redis host %r is neither a redis:// URL nor a (host, port) pair" % (entry,)
            )
    return addresses


def connection_options(connection_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    ``connection_kwargs`` checked: a dict with the timeouts and limits
    (``socket_timeout``, ``socket_connect_timeout``, ``reconnect_max_delay``,
    ``max_blocking_connections``) resolved to numbers, plus the login
    defaults as given.

    :raises ValueError: an unknown key or a bad value.
    """
    options = dict(connection_kwargs or {})
    unknown = set(options) - _CONNECTION_KWARGS - _IGNORED_KWARGS
    if unknown:
        raise ValueError(
            "Unknown connection_kwargs %s; supported: %s"
            % (", ".join(sorted(unknown)), ", ".join(sorted(_CONNECTION_KWARGS)))
        )
    for key, default in (
        ("socket_timeout", 5.0),
        ("socket_connect_timeout", 5.0),
        ("reconnect_max_delay", 5.0),
        ("max_blocking_connections", 64),
    ):
        value = options.get(key)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(
                "connection_kwargs[%r] must be a positive number, not %r" % (key, value)
            )
        options[key] = value
    options["max_blocking_connections"] = int(options["max_blocking_connections"])
    return options


class _GlobPattern:
    """A compiled ``fnmatch`` glob that remembers its source, for Lua."""

    __slots__ = ("glob", "regex")

    def __init__(self, regex: Any, glob: str) -> None:
        self.regex = regex
        self.glob = glob

    def match(self, name: str) -> Any:
        return self.regex.match(name)


def compile_capacities(channel_capacity: Any) -> list[Any]:
    """``BaseChannelLayer._compile_capacities``, globs keeping their source."""
    compiled = BaseChannelLayer._compile_capacities(channel_capacity)
    items = (
        list(channel_capacity.items())
        if isinstance(channel_capacity, Mapping)
        else list(channel_capacity)
    )
    return [
        (_GlobPattern(regex, source) if isinstance(source, str) else regex, value)
        for (source, _), (regex, value) in zip(items, compiled, strict=True)
    ]


def lua_capacities(compiled: list[Any]) -> list[str | int] | None:
    """
    Flat (Lua pattern, capacity) pairs for the group-send script, or None
    when a pattern is a regex (or a glob Lua patterns cannot express).
    """
    pairs: list[str | int] = []
    for pattern, value in compiled:
        lua = glob_to_lua(pattern.glob) if isinstance(pattern, _GlobPattern) else None
        if lua is None:
            return None
        pairs += [lua, value]
    return pairs


_LUA_MAGIC = set("^$()%.[]*+-?")
_SAFE_SET_CHARS = re.compile(r"^[A-Za-z0-9_.!-]+$")


def glob_to_lua(glob: str) -> str | None:
    """
    An anchored Lua pattern matching what ``fnmatch`` matches for ``glob``,
    or None if the glob uses a form this translation does not cover (a
    character set with other than letters, digits, ``_``, ``.``, ``-``, or
    an unclosed ``[``); such capacities are resolved in Python instead.
    """
    out = ["^"]
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = glob.find("]", i + 1 if i < n and glob[i] in "!]" else i)
            if end < 0:
                return None
            content = glob[i:end]
            i = end + 1
            negate = content.startswith("!")
            if negate:
                content = content[1:]
            if not content or not _SAFE_SET_CHARS.match(content) or "!" in content:
                return None
            parts = []
            for k, ch in enumerate(content):
                if ch == "-" and 0 < k < len(content) - 1:
                    if content[k - 1] > content[k + 1]:
                        return None  # an empty range: leave it to fnmatch
                    parts.append("-")
                elif ch.isalnum():
                    parts.append(ch)
                else:
                    parts.append("%" + ch)
            out.append("[" + ("^" if negate else "") + "".join(parts) + "]")
        elif c in _LUA_MAGIC:
            out.append("%" + c)
        else:
            out.append(c)
    out.append("$")
    return "".join(out)
