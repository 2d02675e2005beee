"""
Origin checks for ``websocket.connect`` consumers, against Cross-Site
WebSocket Hijacking: decorators that deny a handshake whose ``Origin`` is
not allowed.  Pool threads only (they run with the consumer).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from django.conf import settings

from chanserv.exceptions import DenyConnection
from chanserv.log import Logger
from chanserv.message import Message

__all__ = [
    "AllowedHostsOnlyOriginValidator",
    "BaseOriginValidator",
    "Origin",
    "allowed_hosts_only",
    "match_allowed_origin",
    "parse_origin",
]

log = Logger()

DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}

#: The hosts a DEBUG site with an empty ALLOWED_HOSTS accepts (as Django does).
DEBUG_HOSTS = (".localhost", "127.0.0.1", "[::1]")

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOSTNAME = r"%s(?:\.%s)*\.?" % (_LABEL, _LABEL)
_IPV6 = r"\[[0-9a-f:.]+\]"
_SCHEME = r"[a-z][a-z0-9+.-]*"
_PORT = r"[0-9]{1,5}"
_ORIGIN = re.compile(
    r"(?P<scheme>%s)://(?P<host>%s|%s)(?::(?P<port>%s))?" % (_SCHEME, _HOSTNAME, _IPV6, _PORT),
    re.IGNORECASE,
)
_PATTERN = re.compile(
    r"(?:(?P<scheme>%s)://)?(?P<host>\*|\.?%s|%s)(?::(?P<port>%s))?"
    % (_SCHEME, _HOSTNAME, _IPV6, _PORT),
    re.IGNORECASE,
)


class Origin(NamedTuple):
    """A parsed origin: lower-case ``scheme`` and ``host`` (no trailing dot)."""

    scheme: str
    host: str
    port: int | None  # as written; None when absent

    @property
    def effective_port(self) -> int | None:
        """The port, or the scheme's default one (None if unknown)."""
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme)


def _port(text: str | None) -> int | None:
    """The port in ``text`` (None when absent); ValueError past 65535."""
    if text is None:
        return None
    port = int(text)
    if port > 65535:
        raise ValueError(text)
    return port


def parse_origin(origin: str) -> Origin | None:
    """The :class:`Origin` of a serialised origin, or None if it is not one."""
    m = _ORIGIN.fullmatch(origin)
    if m is None:
        return None
    try:
        port = _port(m.group("port"))
    except ValueError:
        return None
    host = m.group("host").lower()
    if host.endswith("."):
        host = host[:-1]  # the same name; Django treats Host the same way
    return Origin(m.group("scheme").lower(), host, port)


def match_allowed_origin(origin: Origin, pattern: str) -> bool:
    """
    Whether ``origin`` is allowed by one ``pattern``:

    - ``*`` allows any host; ``.example.com`` allows ``example.com`` and its
      subdomains; any other host must be equal (case-insensitive, a trailing
      dot ignored) -- ``good.example`` allows neither
      ``good.example.evil.com`` nor ``evil-good.example``;
    - with a scheme (``https://example.com``) the origin's scheme must be the
      same, and so must the port: the one given, else the scheme's default;
    - with a port and no scheme (``example.com:8443``) the origin's port, or
      its scheme's default, must be that one.

    A pattern that is none of these matches nothing.
    """
    m = _PATTERN.fullmatch(pattern.strip())
    if m is None:
        return False
    scheme = m.group("scheme")
    try:
        port = _port(m.group("port"))
    except ValueError:
        return False
    if scheme is not None:
        scheme = scheme.lower()
        if origin.scheme != scheme:
            return False
        if origin.effective_port != (port if port is not None else DEFAULT_PORTS.get(scheme)):
            return False
    elif port is not None and origin.effective_port != port:
        return False
    host = m.group("host").lower()
    if host == "*":
        return True
    if host.endswith("."):
        host = host[:-1]
    if host.startswith("."):
        return origin.host == host[1:] or origin.host.endswith(host)
    return origin.host == host


def _headers(message: Message) -> Iterable[tuple[Any, Any]]:
    headers = message.content.get("headers") or []
    if isinstance(headers, dict):
        return list(headers.items())
    return [tuple(pair) for pair in headers if isinstance(pair, (list, tuple)) and len(pair) == 2]


class BaseOriginValidator:
    """
    A decorator class for ``websocket.connect`` consumers (functions or
    methods) that lets the consumer run only when :meth:`validate_origin`
    accepts the handshake's ``Origin``; otherwise it raises
    :class:`~chanserv.exceptions.DenyConnection` first.  Subclass it and
    override :meth:`validate_origin`.

    Make it the outermost decorator: a denied handshake then raises before
    anything below it runs (no session read or written, no group joined),
    and the worker's ``{"close": True}`` becomes a 403.  Only exactly one
    serialised origin (RFC 6454: ``scheme://host[:port]`` in printable
    ASCII, or ``null``) can be accepted; anything else is denied quietly,
    logged at info level.  Pool threads only.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        # Any: wraps a project's consumer, function or method: its arguments and result pass
        # through unchanged.
        functools.update_wrapper(self, func)
        self.func = func

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return types.MethodType(self, instance)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Any: wraps a project's consumer, function or method: its arguments and result pass
        # through unchanged.
        message = self._find_message(args)
        origin = self.get_origin(message)
        if origin is None:
            self.deny(message, "missing or malformed Origin header")
        elif not self.validate_origin(message, origin):
            self.deny(message, "Origin %r is not allowed" % (origin[:200],))
        return self.func(*args, **kwargs)

    @staticmethod
    def _find_message(args: Sequence[Any]) -> Message:
        for arg in args[:2]:
            if isinstance(arg, Message):
                return arg
        raise ValueError("An origin validator was called without a Message instance")

    def get_header(self, message: Message, name: bytes) -> list[Any]:
        # Any: header values are whatever the interface server sent (bytes from chanserv's).
        """
        Channels 1.x's header lookup: everything after the name in the first
        ``[name, value]`` pair of the message's headers whose name equals
        ``name`` exactly (a one-item list: ``[value]``).

        :raises KeyError: no header is named ``name``.
        """
        for header in message.content.get("headers") or []:
            if isinstance(header, (list, tuple)) and len(header) > 1 and header[0] == name:
                return list(header[1:])
        shown = repr(name) if isinstance(name, bytes) else name  # as 1.x's str.format showed it
        raise KeyError('No header named "%s"' % (shown,))

    def get_origin(self, message: Message) -> str | None:
        """
        The handshake's origin as sent (``"null"`` included), or None when
        there is not exactly one well-formed ``Origin`` header: missing,
        empty, repeated, a list, non-ASCII or holding control characters.
        """
        values = []
        for name, value in _headers(message):
            if isinstance(name, bytes):
                name = name.decode("latin-1")
            if isinstance(name, str) and name.lower() == "origin":
                values.append(value)
        if len(values) != 1:
            return None
        value = values[0]
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                return None
        if not isinstance(value, str):
            return None
        value = value.strip(" \t")
        if not value or not all("\x21" <= c <= "\x7e" for c in value) or "," in value:
            return None
        return value

    def validate_origin(self, message: Message, origin: str) -> bool:
        """
        Return True to accept a handshake from ``origin`` (a single
        serialised origin, possibly ``"null"``; see :func:`parse_origin`).
        """
        raise NotImplementedError("Subclasses of BaseOriginValidator must define validate_origin")

    def deny(self, message: Message, reason: str) -> None:
        """Log and raise :class:`DenyConnection`."""
        log.info(
            "WebSocket handshake for {path!r} denied: {reason}",
            path=str(message.content.get("path", ""))[:200],
            reason=reason,
        )
        raise DenyConnection(reason)


class AllowedHostsOnlyOriginValidator(BaseOriginValidator):
    """
    Accept only origins allowed by ``ALLOWED_HOSTS`` (with ``DEBUG`` on and
    an empty list: ``.localhost``, ``127.0.0.1`` and ``[::1]``), matched by
    :func:`match_allowed_origin`.

    A subclass may set :attr:`allowed_origins` to use its own list instead,
    where entries may also fix the scheme and port
    (``"https://chat.example.com:8443"``); ``Origin: null`` is accepted only
    when :attr:`allow_null_origin` is set or ``"null"`` is listed in
    :attr:`allowed_origins`.
    """

    #: Patterns to use instead of ALLOWED_HOSTS; None means ALLOWED_HOSTS.
    allowed_origins: Sequence[str] | None = None
    #: Whether ``Origin: null`` is accepted.  ``*`` never allows it.
    allow_null_origin = False

    def get_allowed_origins(self) -> Sequence[str]:
        if self.allowed_origins is not None:
            return self.allowed_origins
        allowed: Sequence[str] = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed:
            allowed = DEBUG_HOSTS
        return allowed

    def validate_origin(self, message: Message, origin: str) -> bool:
        if origin == "null":
            explicit = self.allowed_origins is not None and "null" in self.allowed_origins
            return self.allow_null_origin or explicit
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        return any(match_allowed_origin(parsed, p) for p in self.get_allowed_origins())


#: The tutorial's name for :class:`AllowedHostsOnlyOriginValidator`.
allowed_hosts_only = AllowedHostsOnlyOriginValidator
