"""
In-memory Redis servers for unit tests of the connection layer: the server
side of connections that code under test opened on a
``MemoryReactorClock``, with RESP encoding of replies and decoding of the
commands written.  Nothing here touches a socket or the global reactor.

::

    reactor = MemoryReactorClock()
    shard = RedisShard(reactor, RedisAddress("redis.test", 6379))
    shard.startService()
    server = accept(reactor)            # the connection the shard opened
    assert server.commands() == [[b"ROLE"]]
    server.reply(MASTER)                # *3 $6 master :0 *0
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from chanserv.layers.redis.connection import Script

__all__ = [
    "MASTER",
    "OK",
    "SCRIPT",
    "Error",
    "FakeConnection",
    "Status",
    "accept",
    "encode",
    "parse_commands",
    "ready",
    "refuse",
    "replica_of",
]


class Error(str):
    """An error reply (``-...``)."""


class Status(str):
    """A status reply (``+...``)."""


OK = Status("OK")
MASTER = [b"master", 0, []]
#: The script the shards of the unit tests load.
SCRIPT = Script("one", "return 1")


def replica_of(host: str, port: int) -> list[Any]:
    """A replica's answer to ROLE."""
    return [b"slave", host.encode(), port, b"connected", 0]


def encode(value: Any) -> bytes:
    """``value`` as a RESP2 reply."""
    if isinstance(value, Error):
        return b"-%s\r\n" % value.encode()
    if isinstance(value, Status):
        return b"+%s\r\n" % value.encode()
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode(v) for v in value)
    raise TypeError(value)


def parse_commands(data: bytes) -> list[list[bytes]]:
    """The commands (RESP arrays of bulk strings) in ``data``."""
    commands = []
    rest = data
    while rest:
        head, rest = rest.split(b"\r\n", 1)
        assert head[:1] == b"*", data
        command = []
        for _ in range(int(head[1:])):
            size, rest = rest.split(b"\r\n", 1)
            assert size[:1] == b"$", data
            n = int(size[1:])
            command.append(rest[:n])
            rest = rest[n + 2 :]
        commands.append(command)
    return commands


class FakeConnection:
    """
    The server's end of one connection from the code under test.

    :ivar port: the port the client connected to.
    """

    def __init__(self, reactor: MemoryReactorClock, index: int = 0) -> None:
        if not reactor.tcpClients:
            raise AssertionError("no connection attempt is waiting")
        host, port, factory, _, _ = reactor.tcpClients.pop(index)
        self.port = port
        address = IPv4Address("TCP", host, port)
        self.transport = StringTransport(peerAddress=address)
        self.protocol = factory.buildProtocol(address)
        self.protocol.makeConnection(self.transport)
        self.closed = False

    def commands(self) -> list[list[bytes]]:
        """The commands written since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return parse_commands(data)

    def reply(self, *values: Any) -> None:
        """Send replies, all in one chunk."""
        self.protocol.dataReceived(b"".join(encode(v) for v in values))

    @property
    def dropped(self) -> bool:
        """Whether the client closed (or aborted) the connection."""
        return bool(self.transport.disconnecting)

    def close(self, clean: bool = True) -> None:
        """The connection ends (as the client asked, or the server went)."""
        if not self.closed:
            self.closed = True
            reason = ConnectionDone() if clean else ConnectionLost()
            self.protocol.connectionLost(Failure(reason))

    def close_if_dropped(self) -> bool:
        """Deliver the end of the connection if the client dropped it."""
        if self.dropped and not self.closed:
            self.close()
            return True
        return False


def accept(reactor: MemoryReactorClock, port: int | None = None) -> FakeConnection:
    """Accept the oldest connection attempt (to ``port``, if given)."""
    for index, attempt in enumerate(reactor.tcpClients):
        if port is None or attempt[1] == port:
            return FakeConnection(reactor, index)
    raise AssertionError(
        "no connection attempt to port %s; waiting: %s" % (port, [a[1] for a in reactor.tcpClients])
    )


def refuse(reactor: MemoryReactorClock, port: int | None = None) -> None:
    """Fail the oldest connection attempt (to ``port``): connection refused."""
    for index, attempt in enumerate(reactor.tcpClients):
        if port is None or attempt[1] == port:
            reactor.tcpClients.pop(index)
            attempt[2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            return
    raise AssertionError("no connection attempt to port %s" % (port,))


def ready(server: FakeConnection, scripts: tuple[Script, ...] = (SCRIPT,)) -> None:
    """Answer a new command connection's ROLE (a master) and SCRIPT LOADs."""
    assert server.commands() == [[b"ROLE"]]
    server.reply(MASTER)
    assert server.commands() == [[b"SCRIPT", b"LOAD", s.source.encode()] for s in scripts]
    server.reply(*[s.sha for s in scripts])
