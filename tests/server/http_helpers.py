"""
An HTTP factory on a ``task.Clock`` with the in-memory layer, for protocol
tests over ``StringTransport``.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.internet import address, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.accesslog import AccessLogWriter
from chanserv.server.config import ServerConfig
from chanserv.server.http import HTTPFactory, HTTPProtocol
from chanserv.server.replies import ReplyRegistry
from tests.support import ClockReactor

# 2025-11-21 13:55:36 UTC: a fixed, readable access-log time.
START = 1763733336.0


class Connection:
    """One client connection: feed bytes in, read what the server wrote."""

    def __init__(self, server: Server, peer: Any = None, host: Any = None) -> None:
        self.server = server
        self.transport = StringTransport(peerAddress=peer, hostAddress=host)
        self.protocol: HTTPProtocol = server.factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def written(self) -> bytes:
        return self.transport.value()

    def status(self) -> int | None:
        """Status code of the first response written, or None."""
        data = self.written()
        if not data.startswith(b"HTTP/1.1 "):
            return None
        return int(data[9:12])

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """The client goes away."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


class Server:
    """Factory, in-memory layer, reply registry and clock wired together."""

    def __init__(
        self,
        config: ServerConfig | None = None,
        capacity: int = 100,
        channel_capacity: Any = None,
        websocket_factory: Any = None,
        **config_changes: Any,
    ) -> None:
        self.clock = ClockReactor()
        self.clock.advance(START)
        self.layer = InMemoryChannelLayer(
            clock=self.clock, capacity=capacity, channel_capacity=channel_capacity
        )
        self.layer.attach_reactor(self.clock)
        self.config = (config or ServerConfig()).replace(**config_changes)
        self.replies = ReplyRegistry(self.layer)
        self.replies.startService()
        self.access = io.StringIO()
        self.factory = HTTPFactory(
            self.clock,
            self.layer,
            self.replies,
            self.config,
            access_log=AccessLogWriter(self.access, self.clock),
            websocket_factory=websocket_factory,
        )
        self.sweep = task.LoopingCall(lambda: self.factory.check_timeouts(self.clock.seconds()))
        self.sweep.clock = self.clock
        self.sweep.start(self.config.sweep_interval, now=False)

    def connect(self, peer: Any = None, host: Any = None) -> Connection:
        return Connection(self, peer, host)

    def unix_connect(self) -> Connection:
        return Connection(self, address.UNIXAddress(None), address.UNIXAddress("/tmp/s.sock"))

    def receive(self, channel: str = "http.request") -> dict[str, Any] | None:
        """The next message on ``channel``, or None."""
        _, message = self.layer.receive([channel])
        return message

    def request(self, channel: str = "http.request") -> dict[str, Any]:
        message = self.receive(channel)
        assert message is not None, "nothing on %s" % (channel,)
        return message

    def reply(self, request: dict[str, Any], **message: Any) -> None:
        """Send a reply for ``request`` and deliver it."""
        self.layer.send(request["reply_channel"], message)
        self.clock.run_pending()

    def run(self) -> None:
        self.clock.run_pending()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, one second at a time (the sweep runs each)."""
        whole = int(seconds)
        self.clock.pump([1.0] * whole)
        if seconds > whole:
            self.clock.advance(seconds - whole)
        self.clock.run_pending()


def simple_request(path: bytes = b"/", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\nHost: example.com\r\n" + extra + b"\r\n"
