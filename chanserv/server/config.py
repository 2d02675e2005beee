"""
:class:`ServerConfig`: every knob of the interface server in one immutable
value, checked on construction (times in seconds, sizes in bytes).  Built
in the main thread, read on the reactor thread; being immutable, it is safe
in any thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["DEFAULT_ENDPOINT", "ServerConfig"]

#: Where the server listens when no endpoint flag is given.
DEFAULT_ENDPOINT = "tcp:port=8000:interface=127.0.0.1"

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class ServerConfig:
    """
    The interface server's settings, immutable.  A bad value raises
    :class:`ValueError` naming the field, on construction.  Times are
    seconds (floats), sizes bytes; ``None`` means "no limit" where a field
    allows it.  Any thread.

    Listening
        ``endpoints``: Twisted server endpoint strings (``tcp:...``,
        ``ssl:...``, ``unix:...``, any installed endpoint plugin), plus
        ``fd:fileno=N`` for an inherited, already listening socket.

    HTTP (chanserv.server.http)
        ``http_timeout`` (120): seconds a dispatched request may wait for the
        application: with no response started by then the client gets 503
        ("Worker server failed to respond within time limit", as daphne); a
        started response that stays silent that long is cut (the connection
        closes).  Unlike daphne, a response that keeps sending is never cut.
        It is also how long a client may read nothing of its response before
        the connection is cut.

        ``header_timeout`` (15): total seconds from the first byte of a
        request to the end of its header section; *not* reset by each byte
        received, so a slowloris client is closed with 408.

        ``request_timeout`` (60) and ``request_min_rate`` (1024 bytes/s): the
        deadline for receiving a whole request, head and body.  It is counted
        from the request's first byte (each request of a keep-alive
        connection has its own) and is *not* reset by the bytes received;
        instead each body byte received moves it ``1 / request_min_rate``
        seconds later, and time the server itself spends not reading the
        body (its body channel is full) does not count.  So a body that
        arrives at ``request_min_rate`` or faster on average never meets
        the deadline, while a trickle is cut ``request_timeout`` seconds
        after it began: a request not complete by then gets 408 and its
        connection closes (the head alone is held to the shorter of this and
        ``header_timeout``).  ``request_min_rate`` 0 makes
        ``request_timeout`` a strict total for the whole request.

        ``body_timeout`` (60): seconds a request body may go without a byte
        while the server is reading it (408, or ``{"closed": True}`` on the
        body channel once streaming); it catches an upload that stops dead
        after building up a long allowance at speed.

        ``idle_timeout`` (60): seconds a keep-alive connection may sit between
        requests before it is closed.

        ``http_send_queue_size`` (1 MiB): bytes of a response that may wait
        for a client that takes them more slowly than the application sends
        them (beyond what the socket buffers hold; per HTTP/2 stream, what
        its flow control holds back).  Past it the reply channel is blocked
        (``ChannelBlocked``), so the application waits and the response
        goes at the client's pace; once the client has caught up it is
        unblocked.  What was already on its way still gets written; past
        four times this (a second after the block, when only replies that
        get past it can add more) the connection (HTTP/2: the stream) is
        cut and the drop counted, as for a WebSocket.  A client that reads
        nothing is cut after ``http_timeout``.

        ``max_body_size`` (10 MiB, ``None``: no limit): larger bodies get 413
        before any consumer runs (``Content-Length`` checked up front; chunked
        bodies counted as they arrive).

        ``body_inline_size`` (64 KiB): bodies up to this size go whole in
        ``http.request``'s ``body``; larger ones are dispatched as soon as this
        much has arrived, with that part in ``body`` and the rest streamed on
        ``body_channel`` in chunks of ``body_chunk_size`` (64 KiB).

        ``root_path`` (""): ASGI ``root_path`` of every request (a trailing
        ``/`` is dropped); the ``Daphne-Root-Path`` request header is never
        trusted.

        ``proxy_headers`` (off): take ``client`` from ``X-Forwarded-For``
        (leftmost entry; port from ``X-Forwarded-Port``, else 0) and
        ``scheme`` from ``X-Forwarded-Proto``.

        ``access_log`` (``None``: off; the command lines default to ``"-"``):
        ``"-"`` for twisted.logger events in the process log (namespace
        ``chanserv.access``, shown at verbosity 1 and up), or a file path
        for NCSA common-log lines (chanserv.server.accesslog).

        ``http2`` (on): negotiate HTTP/2 (ALPN ``h2``) on TLS endpoints, when
        Twisted's HTTP/2 support (``twisted[http2]``) is installed; off, TLS
        endpoints speak HTTP/1.1 only.  Plain TCP is always HTTP/1.1.

    WebSocket (chanserv.server.websocket)
        ``websocket_timeout`` (86400, ``None``: no limit): a socket is closed
        (1000) after living this long.

        ``websocket_connect_timeout`` (5): a handshake the application has not
        accepted within this long is rejected (403).

        ``websocket_handshake_timeout`` (5): the protocol part of a
        WebSocket handshake, until ``websocket.connect`` is on the layer
        (autobahn's ``openHandshakeTimeout``, applied by the sweep).

        ``ping_interval`` (20) / ``ping_timeout`` (30): ping an idle socket;
        close it when the pong does not come.

        ``ws_protocols``: subprotocols the server may accept, in preference
        order.

        ``max_ws_message_size`` / ``max_ws_frame_size`` (1 MiB each): larger
        messages or frames close the socket with 1009.

        ``ws_receive_full_timeout`` (30): while ``websocket.receive`` is full
        the socket is not read; if it stays full this long the socket is
        closed with 1013.

        ``ws_send_queue_size`` (1 MiB): bytes of messages a WebSocket may
        have waiting for a client that does not read (beyond what the
        socket buffers hold).  Past it, or past the reply channel's
        capacity in messages, for two seconds (or at once past four times
        either), the socket is closed with 1013 and the drop counted.

    Shared
        ``graceful_timeout`` (30): on stop, seconds requests in flight get to
        finish before their connections are cut.

        ``sweep_interval`` (1): period of the single timer that checks every
        timeout above.
    """

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)

    http_timeout: float = 120.0
    header_timeout: float = 15.0
    request_timeout: float = 60.0
    request_min_rate: int = 1024
    body_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_body_size: int | None = 10 * MiB
    body_inline_size: int = 64 * KiB
    body_chunk_size: int = 64 * KiB
    http_send_queue_size: int = 1 * MiB
    root_path: str = ""
    proxy_headers: bool = False
    access_log: str | None = None
    http2: bool = True

    websocket_timeout: float | None = 86400.0
    websocket_connect_timeout: float = 5.0
    websocket_handshake_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 30.0
    ws_protocols: tuple[str, ...] = field(default_factory=tuple)
    max_ws_message_size: int = 1 * MiB
    max_ws_frame_size: int = 1 * MiB
    ws_receive_full_timeout: float = 30.0
    ws_send_queue_size: int = 1 * MiB

    graceful_timeout: float = 30.0
    sweep_interval: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):
            raise ValueError("endpoints must be a sequence of endpoint strings, not one string")
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        object.__setattr__(self, "ws_protocols", tuple(self.ws_protocols))
        if not self.endpoints:
            raise ValueError("endpoints: at least one endpoint is needed")
        for endpoint in self.endpoints:
            if not isinstance(endpoint, str) or not endpoint:
                raise ValueError("endpoints: %r is not an endpoint string" % (endpoint,))
        for name in (
            "http_timeout",
            "header_timeout",
            "request_timeout",
            "body_timeout",
            "idle_timeout",
            "websocket_connect_timeout",
            "websocket_handshake_timeout",
            "ws_receive_full_timeout",
            "sweep_interval",
        ):
            _positive(name, getattr(self, name))
        for name in ("ping_interval", "ping_timeout", "graceful_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError("%s must be a number >= 0, not %r" % (name, value))
        if self.websocket_timeout is not None:
            _positive("websocket_timeout", self.websocket_timeout)
        for name in (
            "body_inline_size",
            "body_chunk_size",
            "http_send_queue_size",
            "max_ws_message_size",
            "max_ws_frame_size",
            "ws_send_queue_size",
        ):
            _positive_int(name, getattr(self, name))
        if self.max_body_size is not None:
            _positive_int("max_body_size", self.max_body_size)
        rate = self.request_min_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 0:
            raise ValueError("request_min_rate must be an int >= 0, not %r" % (rate,))
        if not isinstance(self.root_path, str):
            raise ValueError("root_path must be a str, not %r" % (self.root_path,))
        # "/app/" and "/app" mean the same prefix; "/" means none.
        object.__setattr__(self, "root_path", self.root_path.rstrip("/"))
        if self.root_path and not self.root_path.startswith("/"):
            raise ValueError(
                "root_path must start with '/' (like %r), not %r" % ("/app", self.root_path)
            )
        for protocol in self.ws_protocols:
            if not isinstance(protocol, str) or not protocol or not _is_token(protocol):
                raise ValueError("ws_protocols: %r is not a valid subprotocol token" % (protocol,))
        if self.access_log is not None and (
            not isinstance(self.access_log, str) or not self.access_log
        ):
            raise ValueError("access_log must be a path or '-', not %r" % (self.access_log,))

    def replace(self, **changes: object) -> ServerConfig:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(value: str) -> bool:
    return all(c in _TCHAR for c in value)


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError("%s must be a number > 0, not %r" % (name, value))


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("%s must be an int > 0, not %r" % (name, value))
