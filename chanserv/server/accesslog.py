"""
The access log: one line per HTTP response and per WebSocket event,
escaped and with ``session_key`` redacted -- as twisted.logger events
(:class:`AccessLogEvents`, the default: the process log's format and
timestamp) or NCSA common-log lines in a file (:class:`AccessLogWriter`).
Reactor thread only (small synchronous writes).
"""

from __future__ import annotations

import time
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IReactorTime

from chanserv.log import Logger
from chanserv.types import ContentMapping

__all__ = ["ACCESS_NAMESPACE", "AccessLogEvents", "AccessLogWriter", "redact_query"]

#: The twisted.logger namespace of access events.
ACCESS_NAMESPACE = "chanserv.access"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_WEBSOCKET_ACTIONS = {
    "connecting": "WSCONNECTING",
    "connected": "WSCONNECT",
    "rejected": "WSREJECT",
    "disconnected": "WSDISCONNECT",
}

REDACTED = b"[redacted]"


def redact_query(query: bytes) -> bytes:
    """
    ``query`` with the value of every ``session_key`` parameter replaced by
    ``[redacted]``.  Names are compared after percent- and ``+``-decoding, as
    Django's ``QueryDict`` reads them.
    """
    if b"ession" not in query and b"%" not in query:
        return query
    parts = query.split(b"&")
    changed = False
    for i, part in enumerate(parts):
        name = part.partition(b"=")[0]
        if unquote_to_bytes(name.replace(b"+", b" ")) == b"session_key":
            parts[i] = name + b"=" + REDACTED
            changed = True
    return b"&".join(parts) if changed else query


def _escape(text: str) -> str:
    # Printable ASCII stays; quotes, backslashes, controls and non-ASCII are
    # backslash-escaped, so a field can never end early or span lines.
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _host(client: Any) -> str:
    if isinstance(client, (list, tuple)) and client:
        return _escape(str(client[0]))
    if isinstance(client, str) and client:
        # "host:port" (as the WebSocket side passes it): keep the host.
        return _escape(client.rsplit(":", 1)[0].strip("[]") or "-")
    return "-"


class AccessLogWriter:
    """
    Writes access-log lines to ``stream`` in the NCSA common log format,
    which log analysers read (``--access-log=PATH``)::

        127.0.0.1 - - [06/Dec/2026:09:20:00 +0000] "GET /hello/ HTTP/1.1" 200 11
        127.0.0.1 - - [06/Dec/2026:09:20:01 +0000] "WSCONNECT /chat/" - -

    Synchronous, line-buffered writes, on the reactor thread.  Times are UTC
    from ``reactor``'s clock; request targets are escaped (no client byte
    can end a line or forge a field) and ``session_key`` values redacted
    (:func:`redact_query`).  The fields are those of
    :class:`AccessLogEvents`, with the time in brackets.

    :param stream: a text file open for writing (owned by the caller unless
        made by :meth:`open`).
    :param reactor: anything with ``seconds()``: the time of each line.
    """

    def __init__(self, stream: IO[str], reactor: IReactorTime, owned: bool = False) -> None:
        self._stream = stream
        self._reactor = reactor
        self._owned = owned

    @classmethod
    def open(cls, target: str, reactor: IReactorTime) -> AccessLogWriter:
        """
        A writer for ``target``: ``"-"`` for the process log
        (:class:`AccessLogEvents`), else a file path (appended to).
        """
        if target == "-":
            return AccessLogEvents()
        return cls(open(target, "a", buffering=1, encoding="utf-8"), reactor, owned=True)

    def close(self) -> None:
        """Close the file if :meth:`open` opened it; flush stdout otherwise."""
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()

    def _timestamp(self) -> str:
        t = time.gmtime(self._reactor.seconds())
        return "%02d/%s/%04d:%02d:%02d:%02d +0000" % (
            t.tm_mday,
            _MONTHS[t.tm_mon - 1],
            t.tm_year,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
        )

    def _write(self, host: str, request: str, status: Any, size: Any) -> None:
        line = '%s - - [%s] "%s" %s %s\n' % (
            host,
            self._timestamp(),
            request,
            "-" if status is None else int(status),
            "-" if size is None else int(size),
        )
        try:
            self._stream.write(line)
        except (OSError, ValueError):
            # A full disk or a closed stdout must not break serving.
            pass

    def http(
        self,
        client: object,
        method: bytes | str,
        target: bytes,
        http_version: bytes | str,
        status: int | None,
        size: int | None,
    ) -> None:
        """
        Log an HTTP response.

        :param client: ``[host, port]``, ``"host:port"`` or None.
        :param method: the request method.
        :param target: the raw request target (path and query, as received);
            ``session_key`` values are redacted.
        :param http_version: e.g. ``b"HTTP/1.1"``.
        :param status: the status sent, or None.
        :param size: response body bytes sent, or None.
        """
        path, sep, query = target.partition(b"?")
        if sep:
            target = path + b"?" + redact_query(query)
        request = "%s %s %s" % (
            _text(method),
            _escape(target.decode("latin-1")),
            _text(http_version),
        )
        self._write(_host(client), request, status, size)

    def websocket(self, action: str, details: ContentMapping) -> None:
        """
        Log a WebSocket event.

        :param action: ``connecting``, ``connected``, ``rejected`` or
            ``disconnected`` (written ``WSCONNECTING``, ``WSCONNECT``,
            ``WSREJECT``, ``WSDISCONNECT``).
        :param details: ``path`` (str, decoded), ``client`` (as for
            :meth:`http`) and optionally ``query_string`` (bytes, redacted).
        """
        word = _WEBSOCKET_ACTIONS.get(action, "WS" + action.upper())
        path = _escape(str(details.get("path", "")))
        query = details.get("query_string") or b""
        if query:
            path += "?" + _escape(redact_query(bytes(query)).decode("latin-1"))
        self._write(_host(details.get("client")), "%s %s" % (word, path), None, None)


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return _escape(value)


class AccessLogEvents(AccessLogWriter):
    """
    Access lines as twisted.logger events (namespace ``chanserv.access``,
    level info, through chanserv's ``--verbosity`` filter), so they come out
    in the process log's one format with its one timestamp::

        2026-12-06T09:20:00+0000 [chanserv.access#info] 127.0.0.1 "GET /hello/ HTTP/1.1" 200 11
        2026-12-06T09:20:01+0000 [chanserv.access#info] 127.0.0.1 "WSCONNECTING /chat/" - -
        2026-12-06T09:20:01+0000 [chanserv.access#info] 127.0.0.1 "WSCONNECT /chat/" - -
        2026-12-06T09:20:09+0000 [chanserv.access#info] 127.0.0.1 "WSDISCONNECT /chat/" - -

    That is ``CLIENT "REQUEST" STATUS SIZE``: the client's address (``-``
    if unknown), the request line (``METHOD TARGET VERSION``, or
    ``WSCONNECTING``/``WSCONNECT``/``WSREJECT``/``WSDISCONNECT`` and the
    path), the status sent and the body bytes sent (``-`` for none).  The
    event also carries ``client``, ``request``, ``status`` and ``size`` as
    fields (the JSON log's keys).  Reactor thread.
    """

    def __init__(self, logger: Logger | None = None) -> None:
        # No stream and no clock: _write and close, the only users of those, are overridden.
        self._log = logger if logger is not None else Logger(ACCESS_NAMESPACE)

    def close(self) -> None:
        """Nothing to close: the observers belong to the process."""

    def _write(self, host: str, request: str, status: Any, size: Any) -> None:
        status = None if status is None else int(status)
        size = None if size is None else int(size)
        self._log.info(
            "{log_line}",
            log_line='%s "%s" %s %s'
            % (host, request, "-" if status is None else status, "-" if size is None else size),
            client=host,
            request=request,
            status=status,
            size=size,
        )
