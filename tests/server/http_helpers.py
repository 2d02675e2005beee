"""
The HTTP protocol tests' names for :class:`chanserv.testing.InterfaceHarness`:
:class:`Server` is a harness whose HTTP factory is the one under test
(``server.factory``), on a clock that starts at :data:`START`, with an
access log in ``server.access``; a :class:`Connection` is an
:class:`~chanserv.testing.HTTPClient` whose sends leave the reactor alone
(``server.run()`` runs what they scheduled) and whose closes wait for
:meth:`Connection.lose`.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.internet import address

from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.accesslog import AccessLogWriter
from chanserv.server.config import ServerConfig
from chanserv.testing import ClockReactor, HTTPClient, InterfaceHarness

# 2025-11-21 13:55:36 UTC: a fixed, readable access-log time.
START = 1763733336.0


class Connection(HTTPClient):
    """One client connection: feed bytes in, read what the server wrote."""

    def send(self, data: bytes) -> None:
        """Bytes from the client; what they schedule waits for ``server.run()``."""
        self.protocol.dataReceived(data)

    def status(self) -> int | None:
        """Status code of the first response written, or None."""
        data = self.written()
        if not data.startswith(b"HTTP/1.1 "):
            return None
        return int(data[9:12])

    def lose(self) -> None:
        """The client goes away."""
        self.transport.lose()


class Server(InterfaceHarness):
    """
    Factory, in-memory layer, reply registry and clock wired together.
    ``websocket_factory`` is what the HTTP side hands upgrades to (None:
    refused with 400); no ALPN alternative is offered until a test adds one.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        capacity: int = 100,
        channel_capacity: Any = None,
        websocket_factory: Any = None,
        **config_changes: Any,
    ) -> None:
        clock = ClockReactor()
        clock.advance(START)
        self.access = io.StringIO()
        super().__init__(
            (config or ServerConfig()).replace(**config_changes),
            reactor=clock,
            layer=InMemoryChannelLayer(
                clock=clock, capacity=capacity, channel_capacity=channel_capacity
            ),
            complete_closes=False,
        )
        self.clock = clock
        self.factory = self.http_factory
        self.factory.websocket_factory = websocket_factory
        self.factory.alternative_protocols.clear()
        self.factory.access_log = AccessLogWriter(self.access, self.clock)

    def connect(self, peer: Any = None, host: Any = None, secure: bool = False) -> Connection:
        client = super().connect(peer, host, secure)
        return Connection(self, client.transport, client.protocol)

    def unix_connect(self) -> Connection:
        return self.connect(address.UNIXAddress(None), address.UNIXAddress("/tmp/s.sock"))

    def receive(self, channel: str = "http.request") -> dict[str, Any] | None:
        """The next message on ``channel``, or None."""
        return super().receive(channel)

    def request(self, channel: str = "http.request") -> dict[str, Any]:
        return self.expect(channel)

    def reply(self, request: Any, **message: Any) -> None:  # type: ignore[override]
        """Send a reply for ``request`` and deliver it."""
        super().reply(request, message)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, one second at a time (the sweep runs each)."""
        whole = int(seconds)
        self.clock.pump([1.0] * whole)
        if seconds > whole:
            self.clock.advance(seconds - whole)
        self.clock.run_pending()


def simple_request(path: bytes = b"/", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\nHost: example.com\r\n" + extra + b"\r\n"
