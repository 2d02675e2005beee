"""
Pins of the private Twisted HTTP/2 API that chanserv.server.http2 uses.

``twisted.web._http2`` says it is private; chanserv relies on the names
below (listed in the module docstring of ``chanserv.server.http2``).  Each
test names what it pins, so an incompatible Twisted release fails here,
clearly, rather than somewhere deep in a request.
"""

from __future__ import annotations

import inspect

import priority
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.http import H2Connection

from chanserv.server.http2 import take_over
from tests.server.http_helpers import Server
from tests.server.test_tls_h2 import Client


def test_h2connection_is_exported_by_twisted_web_http() -> None:
    """Twisted has HTTP/2 on and twisted.web.http.H2Connection is _http2's class."""
    from twisted.web import _http2, http

    assert http.H2_ENABLED, "twisted.web.http.H2_ENABLED: is twisted[http2] installed?"
    assert http.H2Connection is _http2.H2Connection


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("__init__", ["self", "reactor"]),
        ("_requestReceived", ["self", "event"]),
        ("_requestDone", ["self", "streamID"]),
        ("_tryToWriteControlData", ["self"]),
        ("endRequest", ["self", "streamID"]),
        ("pauseProducing", ["self"]),
        ("resumeProducing", ["self"]),
        ("remainingOutboundWindow", ["self", "streamID"]),
        ("_sendPrioritisedData", ["self", "args"]),
    ],
)
def test_h2connection_methods(name: str, parameters: list[str]) -> None:
    """Each private H2Connection method chanserv calls exists with its leading parameters."""
    method = getattr(H2Connection, name, None)
    assert method is not None, "twisted.web.http.H2Connection.%s is gone" % name
    assert list(inspect.signature(method).parameters)[: len(parameters)] == parameters, (
        "twisted.web.http.H2Connection.%s%s changed" % (name, inspect.signature(method))
    )


def test_h2connection_instance_attributes() -> None:
    """H2Connection has conn, streams and factory, and builds streams with requestFactory."""
    connection = H2Connection(Clock())
    for name in ("conn", "streams", "factory"):
        assert hasattr(connection, name), "H2Connection().%s is gone" % name
    assert connection.streams == {}
    # Streams are built with the connection's requestFactory attribute.
    assert "self.requestFactory" in inspect.getsource(H2Connection._requestReceived)


def test_h2stream_builds_its_request_with_the_request_factory() -> None:
    """H2Stream takes a requestFactory and calls it with queued=False to build its request."""
    from twisted.web._http2 import H2Stream

    parameters = list(inspect.signature(H2Stream.__init__).parameters)
    assert parameters == [
        "self",
        "streamID",
        "connection",
        "headers",
        "requestFactory",
        "site",
        "factory",
    ], "H2Stream(...) changed: %s" % (inspect.signature(H2Stream.__init__),)
    assert "requestFactory(self, queued=False)" in inspect.getsource(H2Stream.__init__)


def test_h2stream_attributes_and_methods_on_a_live_stream() -> None:
    """A live H2Stream has its id, command, path and the methods chanserv's request calls."""
    server = Server()
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    client.request(b"/pinned", b"POST", end=False)
    [channel] = client.connection._channels.values()
    stream = channel.stream
    assert (stream.streamID, stream.command, stream.path) == (1, b"POST", b"/pinned")
    assert stream.producing is True
    for name in (
        "pauseProducing",
        "resumeProducing",
        "connectionLost",
        "writeHeaders",
        "write",
        "writeSequence",
        "requestDone",
        "registerProducer",
        "unregisterProducer",
        "getPeer",
        "getHost",
        "isSecure",
    ):
        assert callable(getattr(stream, name, None)), "H2Stream.%s is gone" % name
    assert client.connection.streams[1] is stream


def test_h2stream_tells_its_producer_of_its_window() -> None:
    """H2Stream resumes and pauses its producer as its window opens and fills."""
    # chanserv.server.http2 registers a push producer with each responding
    # stream to hear when its flow-control window opens (windowUpdated) and
    # fills (flowControlBlocked).
    from twisted.web._http2 import H2Stream

    assert "self.producer.resumeProducing()" in inspect.getsource(H2Stream.windowUpdated)
    assert "self.producer.pauseProducing()" in inspect.getsource(H2Stream.flowControlBlocked)
    server = Server()
    server.factory.alternative_protocols[b"h2"] = take_over
    client = Client(server)
    client.request(b"/pinned")
    [channel] = client.connection._channels.values()
    assert channel.stream.producer is None
    connection = client.connection
    # The window less what is queued: nothing queued yet.
    window = connection.conn.local_flow_control_window(1)
    assert connection.remainingOutboundWindow(1) == window


def test_h2connection_send_loop_takes_streams_from_its_priority_tree() -> None:
    """H2Connection sends from a PriorityTree and, with no stream, waits on _sendingDeferred."""
    # chanserv.server.http2 replaces H2Connection.priority with a
    # priority.PriorityTree that blocks the streams without a flow-control
    # window, and restarts the send loop by firing _sendingDeferred.
    clock = Clock()
    connection = H2Connection(clock)
    assert isinstance(connection.priority, priority.PriorityTree), (
        "H2Connection().priority is no longer a priority.PriorityTree: %r" % connection.priority
    )
    assert connection._sendingDeferred is None, "H2Connection()._sendingDeferred is gone"
    source = inspect.getsource(H2Connection._sendPrioritisedData)
    for needle in ("next(self.priority)", "priority.DeadlockError"):
        assert needle in source, "H2Connection._sendPrioritisedData: no %s" % needle
    assert "self._sendingDeferred = None" in inspect.getsource(H2Connection.writeDataToStream), (
        "H2Connection.writeDataToStream no longer restarts the send loop through _sendingDeferred"
    )
    clock.advance(0)  # the loop's first run: no stream, so it waits
    assert isinstance(connection._sendingDeferred, Deferred), (
        "H2Connection._sendPrioritisedData no longer waits on _sendingDeferred "
        "when its priority tree has no stream to send"
    )
    assert clock.getDelayedCalls() == []


def test_priority_tree_blocks_and_deadlocks() -> None:
    """A PriorityTree raises DeadlockError when it is empty or all its streams are blocked."""
    tree = priority.PriorityTree()
    with pytest.raises(priority.DeadlockError):
        next(tree)
    tree.insert_stream(1)
    assert next(tree) == 1
    tree.block(1)
    with pytest.raises(priority.DeadlockError):
        next(tree)
    tree.unblock(1)
    assert next(tree) == 1
