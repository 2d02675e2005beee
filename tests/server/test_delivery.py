"""
Nothing is dropped silently on the way to a client: replies queue (bounded)
for a WebSocket client that does not read and overflow into a counted close
1013; a lost layer state closes with 1012 (503 before the accept); replies
for a connection that is gone are counted and its memberships removed; and
``websocket.disconnect`` waits for room instead of being dropped.
"""

from __future__ import annotations

from typing import Any

from chanserv.server.replies import ReplyRegistry
from chanserv.server.websocket import HARD_FACTOR, OVERFLOW_GRACE
from tests.server.wshelpers import CLOSE, TEXT, Harness, close_code


def texts(client: Any) -> list[str]:
    return [payload.decode() for opcode, payload in client.frames() if opcode == TEXT]


def close_codes(client: Any) -> list[int | None]:
    return [close_code(payload) for opcode, payload in client.frames() if opcode == CLOSE]


def test_replies_wait_while_the_client_does_not_read_and_go_out_in_order() -> None:
    """Replies to a client that does not read are queued and go out in order when it reads."""
    h = Harness()
    client, connect = h.open()
    protocol = client.protocol
    protocol.pauseProducing()  # what the transport does when its buffer is full
    for word in ("one", "two", "three"):
        h.reply(connect["reply_channel"], {"text": word})
    assert texts(client) == []
    protocol.resumeProducing()
    assert texts(client) == ["one", "two", "three"]
    assert close_codes(client) == []


def test_a_close_reply_goes_out_after_the_queued_messages() -> None:
    """A close in a reply waits behind the queued messages, its own text included."""
    h = Harness()
    client, connect = h.open()
    client.protocol.pauseProducing()
    h.reply(connect["reply_channel"], {"text": "last words", "close": 4000})
    assert close_codes(client) == []
    client.protocol.resumeProducing()
    assert texts(client) == ["last words"]
    assert close_codes(client) == [4000]


def test_overflow_in_messages_closes_1013_counts_and_spares_the_others() -> None:
    """A client past its bound for OVERFLOW_GRACE is closed 1013 and counted; others go on."""
    h = Harness(capacity=5)
    slow, slow_connect = h.open()
    fast, fast_connect = h.open()
    for connect in (slow_connect, fast_connect):
        h.layer.group_add("room", connect["reply_channel"])
    slow.protocol.pauseProducing()
    for i in range(6):  # the sixth is one past the reply channel's capacity
        h.layer.send_group("room", {"text": str(i)})
        h.reactor.run_pending()
    assert texts(fast) == [str(i) for i in range(6)]
    assert close_codes(slow) == []  # a burst gets OVERFLOW_GRACE to drain
    h.tick(OVERFLOW_GRACE)
    assert texts(slow) == []
    assert close_codes(slow) == [1013]
    assert h.registry.dropped == 6
    assert h.registry.overflow_closes == 1
    stats = h.layer.channel_statistics(slow_connect["reply_channel"])
    assert stats["channel_full_count"] == 6
    assert h.layer.channel_statistics(fast_connect["reply_channel"])["channel_full_count"] == 0
    assert h.layer.global_statistics()["channel_full_count"] == 6


def test_overflow_in_bytes_closes_1013() -> None:
    """A queue kept over ws_send_queue_size bytes closes the client 1013, replies dropped."""
    h = Harness(ws_send_queue_size=1000)
    client, connect = h.open()
    client.protocol.pauseProducing()
    h.reply(connect["reply_channel"], {"text": "x" * 600})
    assert close_codes(client) == []
    h.reply(connect["reply_channel"], {"text": "y" * 600})
    h.tick(OVERFLOW_GRACE)
    assert close_codes(client) == [1013]
    assert h.registry.dropped == 2


def test_a_burst_past_the_bound_that_the_client_drains_in_time_is_delivered() -> None:
    """A burst past the bound that the client drains within OVERFLOW_GRACE is all delivered."""
    h = Harness(capacity=5)
    client, connect = h.open()
    client.protocol.pauseProducing()
    for i in range(12):  # over the capacity, within HARD_FACTOR times it
        h.reply(connect["reply_channel"], {"text": str(i)})
    h.tick(OVERFLOW_GRACE / 2)
    client.protocol.resumeProducing()  # the client read
    h.tick(OVERFLOW_GRACE)
    assert texts(client) == [str(i) for i in range(12)]
    assert close_codes(client) == []
    assert h.registry.dropped == 0


def test_a_queue_past_its_hard_bound_overflows_at_once() -> None:
    """A queue past HARD_FACTOR times its bound closes 1013 at once, without the grace."""
    h = Harness(capacity=5)
    client, connect = h.open()
    client.protocol.pauseProducing()
    for i in range(5 * HARD_FACTOR + 1):
        h.reply(connect["reply_channel"], {"text": str(i)})
    assert close_codes(client) == [1013]
    assert h.registry.dropped == 5 * HARD_FACTOR + 1


def test_a_client_that_reads_again_in_time_loses_nothing() -> None:
    """A client that pauses and reads again within its bound loses no reply."""
    h = Harness(capacity=5)
    client, connect = h.open()
    for round_ in range(3):
        client.protocol.pauseProducing()
        for i in range(5):
            h.reply(connect["reply_channel"], {"text": "%d.%d" % (round_, i)})
        client.protocol.resumeProducing()
    assert texts(client) == ["%d.%d" % (r, i) for r in range(3) for i in range(5)]
    assert h.registry.dropped == 0


def test_state_lost_closes_open_sockets_1012_and_rejects_pending_handshakes_503() -> None:
    """A lost layer state closes open sockets 1012 and refuses pending handshakes with 503."""
    h = Harness()
    opened, _ = h.open()
    pending = h.connect()
    opened.protocol.layer_state_lost()
    pending.protocol.layer_state_lost()
    h.reactor.run_pending()
    assert close_codes(opened) == [1012]
    assert pending.status() == 503


class RecordingLayer:
    """The reply-dispatch side of a layer, recording what the registry asks."""

    def __init__(self) -> None:
        self.receivers: dict[str, tuple[Any, Any]] = {}
        self.discarded: list[str] = []
        self.full: list[tuple[str, int]] = []

    def add_local_receiver(self, prefix: str, callback: Any, on_lost: Any = None) -> None:
        self.receivers[prefix] = (callback, on_lost)

    def remove_local_receiver(self, prefix: str) -> None:
        del self.receivers[prefix]

    def discard_local_channel(self, channel: str) -> None:
        self.discarded.append(channel)

    def count_full(self, channel: str, count: int) -> None:
        self.full.append((channel, count))


class RecordingConnection:
    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []
        self.lost = 0

    def deliver(self, message: dict[str, Any]) -> None:
        self.delivered.append(message)

    def layer_state_lost(self) -> None:
        self.lost += 1


def test_registry_tells_every_connection_when_the_layer_lost_its_state() -> None:
    """When the layer loses its state the registry tells every connection, counting it once."""
    layer = RecordingLayer()
    registry = ReplyRegistry(layer)
    registry.startService()
    connections = [RecordingConnection() for _ in range(3)]
    for connection in connections:
        registry.register(registry.new_reply_channel(), connection)
    _, on_lost = layer.receivers[registry.prefix]
    on_lost()
    assert [c.lost for c in connections] == [1, 1, 1]
    assert registry.state_losses == 1


def test_registry_counts_replies_for_gone_connections_and_removes_their_memberships() -> None:
    """Replies for a gone connection are counted and its group memberships discarded again."""
    layer = RecordingLayer()
    registry = ReplyRegistry(layer)
    registry.startService()
    here = registry.new_reply_channel()
    gone = registry.new_reply_channel()
    connection = RecordingConnection()
    registry.register(here, connection)
    registry.register(gone, RecordingConnection())
    registry.unregister(gone)
    assert layer.discarded == [gone]  # a connection that goes leaves its groups
    dispatch, _ = layer.receivers[registry.prefix]
    dispatch([(here, {"text": "a"}), (gone, {"text": "b"}), (gone, {"text": "c"})])
    assert connection.delivered == [{"text": "a"}]
    assert registry.gone == 2
    assert layer.discarded == [gone, gone]  # once more, for a late group_add
    registry.overflowed(here, 7)
    assert layer.full == [(here, 7)]
    assert (registry.dropped, registry.overflow_closes) == (7, 1)


def test_closing_removes_the_socket_from_its_groups() -> None:
    """A WebSocket that closes is removed from the groups its reply channel was in."""
    h = Harness()
    client, connect = h.open()
    h.layer.group_add("room", connect["reply_channel"])
    assert h.layer.group_channels("room") == [connect["reply_channel"]]
    client.close()
    client.lose()
    assert h.layer.group_channels("room") == []


def test_websocket_disconnect_waits_for_room_instead_of_being_dropped() -> None:
    """websocket.disconnect to a full channel waits for room and is sent, not dropped."""
    h = Harness(channel_capacity={"websocket.disconnect": 1})
    client, connect = h.open()
    h.layer.send("websocket.disconnect", {"filler": True})  # the channel is now full
    client.close()
    client.lose()
    assert client.protocol in h.factory.connections  # still owes its disconnect
    assert h.receive("websocket.disconnect") == {"filler": True}
    h.reactor.run_pending()
    disconnect = h.receive("websocket.disconnect")
    assert disconnect is not None
    assert disconnect["reply_channel"] == connect["reply_channel"]
    assert client.protocol not in h.factory.connections
    assert h.factory.disconnects_lost == 0


def test_websocket_disconnect_outwaits_a_channel_kept_full_until_its_messages_expire() -> None:
    """websocket.disconnect outwaits a full channel until its old messages expire, then goes."""
    h = Harness(channel_capacity={"websocket.disconnect": 1})
    client, _ = h.open()
    h.layer.send("websocket.disconnect", {"filler": True})
    client.close()
    client.lose()
    for _ in range(int(h.layer.expiry) - 1):
        h.tick(1)
    assert client.protocol in h.factory.connections
    # The filler expires with the layer's expiry, which makes room: the
    # disconnect gets through rather than being lost.
    h.tick(1)
    h.tick(1)
    messages = h.receive_all("websocket.disconnect")
    assert [m.get("filler") for m in messages] == [None]
    assert h.factory.disconnects_lost == 0
