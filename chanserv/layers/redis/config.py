"""
Configuration of the Redis channel layer: ``hosts`` (Sentinel included),
``connection_kwargs`` and ``channel_capacity`` globs the Lua scripts can
evaluate themselves.  Any thread (the layer's constructor's).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from chanserv.layers.base import BaseChannelLayer, CapacityPattern

__all__ = [
    "Address",
    "RedisAddress",
    "SentinelAddress",
    "compile_capacities",
    "connection_options",
    "consistent_hash",
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


@dataclass(frozen=True)
class SentinelAddress:
    """
    A shard whose server is the current master of ``master_name``, as Redis
    Sentinel names it: the ``sentinels`` are asked in turn on every
    (re)connection.  ``db``, ``password``, ``username`` and ``tls`` are the
    master's; the ``sentinel_*`` fields are how to reach the sentinels.
    """

    master_name: str
    sentinels: tuple[tuple[str, int], ...]
    db: int | None = None
    password: str | None = None
    username: str | None = None
    tls: bool = False
    sentinel_password: str | None = None
    sentinel_username: str | None = None
    sentinel_tls: bool = False
    #: Seconds for one sentinel to answer (connection included); None: the
    #: layer's ``socket_timeout``.
    sentinel_timeout: float | None = None

    def __str__(self) -> str:
        return "sentinel://%s/%s/%d%s" % (
            ",".join("%s:%d" % pair for pair in self.sentinels),
            self.master_name,
            self.db or 0,
            "?ssl=true" if self.tls else "",
        )


#: What one entry of ``hosts`` becomes: one shard each.
Address = RedisAddress | SentinelAddress

#: Defaults of the timeouts and limits in connection_kwargs.  A frozen
#: server is noticed within socket_timeout plus two sweeps (at most 0.5 s
#: apart), 3.5 s; one back again is reconnected to within
#: reconnect_max_delay (plus 0.1 s of jitter) of its answering.
DEFAULT_OPTIONS: dict[str, float] = {
    "socket_timeout": 2.5,  # seconds to wait for a reply (blocking pops: theirs plus this)
    "socket_connect_timeout": 5.0,  # seconds to connect
    "reconnect_max_delay": 2.0,  # cap of the reconnection back-off
    "max_blocking_connections": 64,  # per shard
}

#: connection_kwargs understood here.
_CONNECTION_KWARGS = {*DEFAULT_OPTIONS, "password", "username", "db", "ssl"}
#: Of those, what a dict entry of ``hosts`` may set for its own shard.
_LOGIN_KWARGS = {"password", "username", "db", "ssl"}
#: What ``sentinel_kwargs`` understands.
_SENTINEL_KWARGS = {"password", "username", "ssl", "socket_timeout"}
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


def _is_pair(entry: Any) -> bool:
    return (
        isinstance(entry, (tuple, list))
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], int)
        and not isinstance(entry[1], bool)
    )


def _database(value: Any, entry: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value) or None
    except (TypeError, ValueError):
        raise ValueError(
            "Redis host %r: the database must be a number" % (_shown(entry),)
        ) from None


def _shown(entry: Any) -> Any:
    """``entry`` for an error message, passwords masked."""
    if isinstance(entry, Mapping):
        return {k: "***" if k == "password" else _shown(v) for k, v in entry.items()}
    return entry


def _check_keys(entry: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(entry) - allowed - _IGNORED_KWARGS
    if unknown:
        raise ValueError(
            "%s has unknown keys %s; supported: %s"
            % (what, ", ".join(sorted(map(str, unknown))), ", ".join(sorted(allowed)))
        )


def _parse_sentinel(entry: Mapping[str, Any], login: Mapping[str, Any]) -> SentinelAddress:
    name = entry.get("master_name")
    if not isinstance(name, str) or not name:
        raise ValueError(
            "Redis host %r: 'master_name' must be a non-empty string" % (_shown(entry),)
        )
    sentinels = entry.get("sentinels")
    if (
        isinstance(sentinels, (str, bytes))
        or not isinstance(sentinels, Iterable)
        or not (sentinels := list(sentinels))
        or not all(_is_pair(s) for s in sentinels)
    ):
        raise ValueError(
            "Redis host %r: 'sentinels' must be a non-empty list of (host, port) pairs"
            % (_shown(entry),)
        )
    options = entry.get("sentinel_kwargs") or {}
    if not isinstance(options, Mapping):
        raise ValueError("Redis host %r: 'sentinel_kwargs' must be a dict" % (_shown(entry),))
    _check_keys(options, _SENTINEL_KWARGS, "sentinel_kwargs of %s" % (name,))
    timeout = options.get("socket_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ValueError("sentinel_kwargs['socket_timeout'] must be a positive number")
    return SentinelAddress(
        master_name=name,
        sentinels=tuple((host, port) for host, port in sentinels),
        db=_database(login.get("db"), entry),
        password=login.get("password"),
        username=login.get("username"),
        tls=bool(login.get("ssl")),
        sentinel_password=options.get("password"),
        sentinel_username=options.get("username"),
        sentinel_tls=bool(options.get("ssl")),
        sentinel_timeout=float(timeout) if timeout is not None else None,
    )


def _parse_dict(entry: Mapping[str, Any], defaults: Mapping[str, Any]) -> Address:
    # channels_redis's forms: {"address": url, ...}, {"host": h, "port": p, ...}
    # and {"sentinels": [...], "master_name": ..., "sentinel_kwargs": {...}, ...},
    # the other keys being the shard's login.
    login = {k: v for k, v in defaults.items() if k in _LOGIN_KWARGS}
    login.update((k, v) for k, v in entry.items() if k in _LOGIN_KWARGS)
    if "sentinels" in entry or "master_name" in entry:
        allowed = {"sentinels", "master_name", "sentinel_kwargs"} | _LOGIN_KWARGS
        _check_keys(entry, allowed, "Redis host %r" % (_shown(entry),))
        return _parse_sentinel(entry, login)
    if "address" in entry:
        _check_keys(entry, {"address"} | _LOGIN_KWARGS, "Redis host %r" % (_shown(entry),))
        if not isinstance(entry["address"], str):
            raise ValueError("Redis host %r: 'address' must be a redis:// URL" % (_shown(entry),))
        return _parse_url(entry["address"], login)
    if "host" in entry:
        _check_keys(entry, {"host", "port"} | _LOGIN_KWARGS, "Redis host %r" % (_shown(entry),))
        pair = (entry["host"], entry.get("port", 6379))
        if not _is_pair(pair):
            raise ValueError(
                "Redis host %r: 'host' must be a str, 'port' an int" % (_shown(entry),)
            )
        return RedisAddress(
            host=pair[0],
            port=pair[1],
            db=_database(login.get("db"), entry),
            password=login.get("password"),
            username=login.get("username"),
            tls=bool(login.get("ssl")),
        )
    raise ValueError(
        "Redis host %r: a dict entry needs 'address', 'host' or 'sentinels' and 'master_name'"
        % (_shown(entry),)
    )


def parse_hosts(hosts: Any, defaults: Mapping[str, Any] | None = None) -> list[Address]:
    # Any: hosts and connection_kwargs are the layer's CONFIG as the project wrote it
    # (channels_redis forms), checked here entry by entry.
    """
    ``hosts`` as addresses, one shard each.  Entries may be
    ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://``) URLs,
    ``(host, port)`` pairs, or dicts as channels_redis takes them:
    ``{"address": url}``, ``{"host": h, "port": p}``, or a Redis Sentinel
    service ``{"sentinels": [(host, port), ...], "master_name": name,
    "sentinel_kwargs": {...}}``; a dict may add ``db``, ``password``,
    ``username`` and ``ssl`` for its shard's server (a sentinel entry: for
    the master), and ``sentinel_kwargs`` takes ``password``, ``username``,
    ``ssl`` and ``socket_timeout`` for the sentinels.  None means
    ``[("localhost", 6379)]``.  ``defaults`` (connection_kwargs) supply
    ``password``, ``username``, ``db`` and ``ssl`` where an entry does not.

    :raises ValueError: a bare string instead of a list, or a bad entry.
    """
    defaults = defaults or {}
    if hosts is None or (isinstance(hosts, (list, tuple)) and not hosts):
        hosts = [("localhost", 6379)]
    if isinstance(hosts, (str, bytes)):
        raise ValueError("Redis hosts must be a list, not a single string: use [%r]" % (hosts,))
    if isinstance(hosts, Mapping) or not isinstance(hosts, Iterable):
        raise ValueError("Redis hosts must be a list of URLs, (host, port) pairs or dicts")
    addresses: list[Address] = []
    for entry in hosts:
        if isinstance(entry, str):
            addresses.append(_parse_url(entry, defaults))
        elif _is_pair(entry):
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
        elif isinstance(entry, Mapping):
            addresses.append(_parse_dict(entry, defaults))
        else:
            raise ValueError(
                "Redis host %r is neither a redis:// URL, a (host, port) pair nor a dict" % (entry,)
            )
    return addresses


def connection_options(connection_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    # Any: connection_kwargs is the layer's CONFIG as the project wrote it, checked here; the
    # result mixes numbers (timeouts, limits) and login strings.
    """
    ``connection_kwargs`` checked: a dict with the timeouts and limits
    (``socket_timeout``, ``socket_connect_timeout``, ``reconnect_max_delay``,
    ``max_blocking_connections``; see :data:`DEFAULT_OPTIONS`) resolved to
    numbers, plus the login defaults as given.

    :raises ValueError: an unknown key or a bad value.
    """
    options = dict(connection_kwargs or {})
    unknown = set(options) - _CONNECTION_KWARGS - _IGNORED_KWARGS
    if unknown:
        raise ValueError(
            "Unknown connection_kwargs %s; supported: %s"
            % (", ".join(sorted(unknown)), ", ".join(sorted(_CONNECTION_KWARGS)))
        )
    for key, default in DEFAULT_OPTIONS.items():
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


def compile_capacities(
    channel_capacity: Mapping[CapacityPattern, int] | Sequence[tuple[CapacityPattern, int]],
) -> list[Any]:
    # Any: a glob's pattern is a _GlobPattern standing in for re.Pattern
    # (match only), which BaseChannelLayer's type for the list cannot name.
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


def lua_capacities(compiled: Sequence[tuple[object, int]]) -> list[str | int] | None:
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


def consistent_hash(value: str, ring_size: int) -> int:
    """
    The shard index, out of ``ring_size``, of a channel's list (pass the
    non-local name) and of its group memberships: asgi_redis's hash,
    ``crc32`` over 4096 slots split evenly between the shards.
    """
    if ring_size == 1:
        return 0  # every message's path: no hash when there is one shard
    bigval = binascii.crc32(value.encode("utf-8")) & 0xFFF
    return int(bigval / (4096 / ring_size))
