"""
Command-line options of the interface server, named like daphne 1.4.2's,
as a mixin for ``usage.Options`` and a function that builds the
:class:`~chanserv.server.config.ServerConfig`.  Main thread (option
parsing, before the reactor runs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from twisted.internet.endpoints import quoteStringArgument
from twisted.python import usage

from chanserv.server.config import DEFAULT_ENDPOINT, ServerConfig
from chanserv.server.listener import endpoint_from_string

__all__ = ["ServerOptionsMixin", "server_config_from_options", "tcp_endpoint"]

_DEFAULTS = ServerConfig()
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def _size(flag: str) -> Any:
    """A coercer for ``--flag``: a byte count, digits with a K/M/G suffix, or -1."""

    def coerce(value: str) -> int:
        text = value.strip().lower().removesuffix("b").removesuffix("i")
        factor = 1
        if text[-1:] in _SIZE_UNITS:
            factor = _SIZE_UNITS[text[-1]]
            text = text[:-1]
        if text == "-1" and factor == 1:
            return -1
        if not text.isdigit():
            raise ValueError("--%s: %r is not a size (like 1048576, 512K or 10M)" % (flag, value))
        return int(text) * factor

    coerce.coerceDoc = "A size in bytes; K, M and G suffixes allowed."  # type: ignore[attr-defined]
    return coerce


def _seconds(flag: str) -> Any:
    """A coercer for ``--flag``: a number of seconds."""

    def coerce(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise ValueError("--%s: %r is not a number of seconds" % (flag, value)) from None

    return coerce


def _integer(flag: str) -> Any:
    """A coercer for ``--flag``: an integer."""

    def coerce(value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise ValueError("--%s: %r is not an integer" % (flag, value)) from None

    return coerce


class ServerOptionsMixin:
    """
    The interface server's options.  Put this mixin before
    ``usage.Options``; add :attr:`server_parameters` to its
    ``optParameters`` and :attr:`server_flags` to its ``optFlags``, and call
    :func:`server_config_from_options` from ``postOptions``.  Listening:

    - ``-e/--endpoint`` (repeatable): any Twisted server endpoint string
      (``tcp:8000``, ``ssl:443:privateKey=key.pem:certKey=cert.pem``,
      ``unix:/run/app.sock``), or ``fd:fileno=N``;
    - ``-b/--bind`` and ``-p/--port``: ``tcp:port=P:interface=H``; with
      neither and no other listening flag, 127.0.0.1:8000; one alone takes
      the other's default.  IPv6 is accepted with or without brackets;
    - ``-u/--unix-socket PATH``, ``--fd N``.

    The access log is on (``--access-log=-``: into the process log) unless
    ``--no-access-log``.

    ``--graceful-timeout`` is read if the Options class defines it.  Main
    thread.
    """

    server_parameters: list[list[Any]] = [
        ["bind", "b", None, "Address to listen on (default 127.0.0.1; IPv6 accepted)."],
        ["port", "p", None, "TCP port to listen on (default 8000).", _integer("port")],
        ["unix-socket", "u", None, "Listen on this UNIX socket path."],
        ["fd", None, None, "Listen on this inherited socket file descriptor.", _integer("fd")],
        [
            "http-timeout",
            "t",
            _DEFAULTS.http_timeout,
            "Seconds a request waits for the application before a 503.",
            _seconds("http-timeout"),
        ],
        [
            "websocket-timeout",
            None,
            _DEFAULTS.websocket_timeout,
            "Maximum lifetime of a WebSocket in seconds; -1 for none.",
            _seconds("websocket-timeout"),
        ],
        [
            "websocket-connect-timeout",
            None,
            _DEFAULTS.websocket_connect_timeout,
            "Seconds the application has to accept a WebSocket (else 403).",
            _seconds("websocket-connect-timeout"),
        ],
        [
            "websocket-handshake-timeout",
            None,
            _DEFAULTS.websocket_handshake_timeout,
            "Seconds a client has to complete the WebSocket handshake.",
            _seconds("websocket-handshake-timeout"),
        ],
        [
            "ping-interval",
            None,
            _DEFAULTS.ping_interval,
            "Ping a WebSocket idle for this many seconds; 0 for never.",
            _seconds("ping-interval"),
        ],
        [
            "ping-timeout",
            None,
            _DEFAULTS.ping_timeout,
            "Close a WebSocket whose pong is this many seconds late.",
            _seconds("ping-timeout"),
        ],
        ["root-path", None, "", "ASGI root_path (the URL prefix the site is mounted at)."],
        [
            "access-log",
            None,
            "-",
            "Where the access log goes: '-' (default) into the process log, one line "
            "per request and WebSocket event; or a file path (NCSA common log format).",
        ],
        [
            "max-body-size",
            None,
            _DEFAULTS.max_body_size,
            "Largest request body accepted (413 beyond); -1 for no limit.",
            _size("max-body-size"),
        ],
        [
            "http-send-queue-size",
            None,
            _DEFAULTS.http_send_queue_size,
            "Bytes of a response queued for an HTTP client that does not keep up "
            "before the application is slowed to its pace; cut at four times this "
            "(also K/M).",
            _size("http-send-queue-size"),
        ],
        [
            "max-ws-message-size",
            None,
            _DEFAULTS.max_ws_message_size,
            "Largest WebSocket message accepted (close 1009 beyond).",
            _size("max-ws-message-size"),
        ],
        [
            "max-ws-frame-size",
            None,
            _DEFAULTS.max_ws_frame_size,
            "Largest WebSocket frame accepted (close 1009 beyond).",
            _size("max-ws-frame-size"),
        ],
        [
            "ws-receive-full-timeout",
            None,
            _DEFAULTS.ws_receive_full_timeout,
            "Close a WebSocket with 1013 once websocket.receive stays full this long.",
            _seconds("ws-receive-full-timeout"),
        ],
        [
            "ws-send-queue-size",
            None,
            _DEFAULTS.ws_send_queue_size,
            "Bytes queued for a WebSocket client that does not read before it is "
            "closed with 1013 (also K/M).",
            _size("ws-send-queue-size"),
        ],
        [
            "header-timeout",
            None,
            _DEFAULTS.header_timeout,
            "Seconds a client has to send a request's headers (else 408).",
            _seconds("header-timeout"),
        ],
        [
            "request-timeout",
            None,
            _DEFAULTS.request_timeout,
            "Seconds from a request's first byte to the end of its body, extended "
            "while the body keeps up --request-min-rate (else 408).",
            _seconds("request-timeout"),
        ],
        [
            "request-min-rate",
            None,
            _DEFAULTS.request_min_rate,
            "Bytes/s a request body must average to be allowed past "
            "--request-timeout; 0 makes that a strict total.",
            _size("request-min-rate"),
        ],
        [
            "body-timeout",
            None,
            _DEFAULTS.body_timeout,
            "Seconds a request body may stall (else 408).",
            _seconds("body-timeout"),
        ],
        [
            "idle-timeout",
            None,
            _DEFAULTS.idle_timeout,
            "Seconds an idle keep-alive connection stays open.",
            _seconds("idle-timeout"),
        ],
    ]

    server_flags: list[list[Any]] = [
        [
            "proxy-headers",
            None,
            "Trust X-Forwarded-For/-Port/-Proto from the proxy in front.",
        ],
        [
            "no-http2",
            None,
            "Do not offer HTTP/2 (ALPN h2) on TLS endpoints: HTTP/1.1 only.",
        ],
        ["no-access-log", None, "Write no access log."],
    ]

    def __init__(self) -> None:
        super().__init__()
        options: Any = self  # a usage.Options, i.e. a dict
        options["endpoint"] = []
        options["ws-protocol"] = []

    def opt_endpoint(self, value: str) -> None:
        """A Twisted endpoint to listen on, e.g. tcp:8000 or ssl:443:... (repeatable)."""
        options: Any = self
        options.setdefault("endpoint", []).append(value)

    opt_e = opt_endpoint

    def opt_ws_protocol(self, value: str) -> None:
        """A WebSocket subprotocol the server may accept (repeatable; comma-separated ok)."""
        options: Any = self
        protocols = options.setdefault("ws-protocol", [])
        protocols.extend(p for p in value.replace(",", " ").split() if p)


def tcp_endpoint(host: str, port: int) -> str:
    """
    ``tcp:port=P:interface=H`` for ``host`` (brackets of ``[::1]`` removed,
    colons escaped).

    :raises ValueError: a bad host or port.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError("empty address")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("%r is neither an IPv6 address nor a host name" % (host,)) from None
    if not 0 <= port <= 65535:
        raise ValueError("port %d is not in 0-65535" % (port,))
    return "tcp:port=%d:interface=%s" % (port, quoteStringArgument(host))


def _endpoints(opts: Mapping[str, Any]) -> tuple[str, ...]:
    result = list(opts.get("endpoint") or ())
    bind, port = opts.get("bind"), opts.get("port")
    unix, fd = opts.get("unix-socket"), opts.get("fd")
    if bind is not None or port is not None:
        try:
            result.append(tcp_endpoint(bind or "127.0.0.1", 8000 if port is None else port))
        except ValueError as e:
            raise usage.UsageError("--bind/--port: %s" % (e,)) from None
    if unix:
        result.append("unix:" + quoteStringArgument(unix))
    if fd is not None:
        if fd < 0:
            raise usage.UsageError("--fd must be a file descriptor number, not %d" % (fd,))
        result.append("fd:fileno=%d" % (fd,))
    if not result:
        result.append(DEFAULT_ENDPOINT)
    return tuple(result)


def _check_endpoints(descriptions: tuple[str, ...]) -> None:
    for description in descriptions:
        try:
            # No reactor needed to build (not listen on) an endpoint; this
            # catches typos, unknown types and unreadable TLS files early.
            endpoint_from_string(None, description)
        except Exception as e:
            raise usage.UsageError("--endpoint %r: %s" % (description, e)) from None


_FLAGS = {
    "http_timeout": "--http-timeout",
    "header_timeout": "--header-timeout",
    "request_timeout": "--request-timeout",
    "request_min_rate": "--request-min-rate",
    "body_timeout": "--body-timeout",
    "idle_timeout": "--idle-timeout",
    "websocket_timeout": "--websocket-timeout",
    "websocket_connect_timeout": "--websocket-connect-timeout",
    "websocket_handshake_timeout": "--websocket-handshake-timeout",
    "ping_interval": "--ping-interval",
    "ping_timeout": "--ping-timeout",
    "root_path": "--root-path",
    "max_body_size": "--max-body-size",
    "http_send_queue_size": "--http-send-queue-size",
    "max_ws_message_size": "--max-ws-message-size",
    "max_ws_frame_size": "--max-ws-frame-size",
    "ws_receive_full_timeout": "--ws-receive-full-timeout",
    "ws_send_queue_size": "--ws-send-queue-size",
    "ws_protocols": "--ws-protocol",
    "graceful_timeout": "--graceful-timeout",
    "access_log": "--access-log",
}


def server_config_from_options(opts: Mapping[str, Any]) -> ServerConfig:
    # Any: the parsed command-line options (twistd's usage.Options, a dict), each of the type
    # its parser gave it; read and checked one by one here.
    """
    The :class:`ServerConfig` described by parsed options.

    :raises usage.UsageError: a bad value, with the flag named.
    """
    endpoints = _endpoints(opts)
    _check_endpoints(endpoints)
    websocket_timeout = opts.get("websocket-timeout", _DEFAULTS.websocket_timeout)
    if websocket_timeout is not None and websocket_timeout == -1:
        websocket_timeout = None
    max_body_size = opts.get("max-body-size", _DEFAULTS.max_body_size)
    if max_body_size is not None and max_body_size == -1:
        max_body_size = None
    kwargs: dict[str, Any] = {
        "endpoints": endpoints,
        "http_timeout": opts.get("http-timeout", _DEFAULTS.http_timeout),
        "header_timeout": opts.get("header-timeout", _DEFAULTS.header_timeout),
        "request_timeout": opts.get("request-timeout", _DEFAULTS.request_timeout),
        "request_min_rate": opts.get("request-min-rate", _DEFAULTS.request_min_rate),
        "body_timeout": opts.get("body-timeout", _DEFAULTS.body_timeout),
        "idle_timeout": opts.get("idle-timeout", _DEFAULTS.idle_timeout),
        "websocket_timeout": websocket_timeout,
        "websocket_connect_timeout": opts.get(
            "websocket-connect-timeout", _DEFAULTS.websocket_connect_timeout
        ),
        "websocket_handshake_timeout": opts.get(
            "websocket-handshake-timeout", _DEFAULTS.websocket_handshake_timeout
        ),
        "ping_interval": opts.get("ping-interval", _DEFAULTS.ping_interval),
        "ping_timeout": opts.get("ping-timeout", _DEFAULTS.ping_timeout),
        "ws_protocols": tuple(opts.get("ws-protocol") or ()),
        "root_path": opts.get("root-path") or "",
        "proxy_headers": bool(opts.get("proxy-headers")),
        "http2": not opts.get("no-http2"),
        "access_log": None if opts.get("no-access-log") else (opts.get("access-log") or None),
        "max_body_size": max_body_size,
        "http_send_queue_size": opts.get("http-send-queue-size", _DEFAULTS.http_send_queue_size),
        "max_ws_message_size": opts.get("max-ws-message-size", _DEFAULTS.max_ws_message_size),
        "max_ws_frame_size": opts.get("max-ws-frame-size", _DEFAULTS.max_ws_frame_size),
        "ws_receive_full_timeout": opts.get(
            "ws-receive-full-timeout", _DEFAULTS.ws_receive_full_timeout
        ),
        "ws_send_queue_size": opts.get("ws-send-queue-size", _DEFAULTS.ws_send_queue_size),
    }
    if opts.get("graceful-timeout") is not None:
        kwargs["graceful_timeout"] = opts["graceful-timeout"]
    try:
        return ServerConfig(**kwargs)
    except ValueError as e:
        message = str(e)
        field = message.split(" ", 1)[0].rstrip(":")
        if field in _FLAGS:
            message = _FLAGS[field] + message[len(field) :]
        raise usage.UsageError(message) from None
