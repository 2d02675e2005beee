"""Tests for chanserv.channel (Channel, Group) and chanserv.message."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.logger import capturedLogs

from chanserv import DEFAULT_CHANNEL_LAYER, Channel, Group, channel_layers
from chanserv.channel import pending_message_store
from chanserv.exceptions import ChannelFull, MessageTooLarge
from chanserv.layers import InMemoryChannelLayer
from chanserv.layers.base import BaseChannelLayer
from chanserv.message import Message
from chanserv.signals import consumer_finished, consumer_started


@pytest.fixture
def layer() -> InMemoryChannelLayer:
    return InMemoryChannelLayer()


@pytest.fixture(autouse=True)
def no_consumer_left_running() -> Iterator[None]:
    yield
    # A failing test must not leave this thread buffering for the next one.
    if pending_message_store.is_active():
        consumer_finished.send(sender=None)


def run_consumer(consumer: Callable[[], None]) -> None:
    """What the worker does around a consumer."""
    consumer_started.send(sender=None, environ={})
    try:
        consumer()
    finally:
        consumer_finished.send(sender=None)


def drain(layer: Any, channel: str) -> list[dict[str, Any]]:
    result = []
    while True:
        name, message = layer.receive([channel])
        if name is None:
            return result
        result.append(message)


# -- Channel ------------------------------------------------------------------


def test_channel_send_and_receive(layer: InMemoryChannelLayer) -> None:
    """Channel.send puts its content, bytes included, on the layer under the channel's name."""
    Channel("chat-messages", channel_layer=layer).send({"room": "lobby", "data": b"\x00"})
    assert layer.receive(["chat-messages"]) == ("chat-messages", {"room": "lobby", "data": b"\x00"})


def test_channel_send_copies_the_content(layer: InMemoryChannelLayer) -> None:
    """Channel.send sends the content as it is at the call; later changes are not sent."""
    content: dict[str, Any] = {"list": [1]}
    Channel("a", channel_layer=layer).send(content)
    content["list"].append(2)
    assert drain(layer, "a") == [{"list": [1]}]


def test_channel_send_refuses_non_dicts(layer: InMemoryChannelLayer) -> None:
    """Channel.send raises TypeError for content that is not a dict and sends nothing."""
    for content in ("text", ["a"], None, 5):
        with pytest.raises(TypeError):
            Channel("a", channel_layer=layer).send(content)  # type: ignore[arg-type]
    assert drain(layer, "a") == []


@pytest.mark.parametrize("name", ["bad name", "a?", "ü", "x" * 100, ""])
def test_channel_send_refuses_invalid_names(layer: InMemoryChannelLayer, name: str) -> None:
    """Channel.send raises TypeError for an invalid channel name."""
    with pytest.raises(TypeError):
        Channel(name, channel_layer=layer).send({"a": 1})


def test_channel_send_refuses_contents_no_layer_can_carry(layer: InMemoryChannelLayer) -> None:
    """Channel.send refuses unserialisable content (TypeError) and oversize messages."""
    with pytest.raises(TypeError):
        Channel("a", channel_layer=layer).send({"obj": object()})
    with pytest.raises(TypeError):
        Channel("a", channel_layer=layer).send({1: "int key"})  # type: ignore[dict-item]
    small = InMemoryChannelLayer(max_message_size=100)
    with pytest.raises(MessageTooLarge):
        Channel("a", channel_layer=small).send({"text": "x" * 200})


def test_channel_send_raises_channel_full(layer: InMemoryChannelLayer) -> None:
    """Channel.send raises ChannelFull when the channel is at capacity."""
    full = InMemoryChannelLayer(capacity=1)
    Channel("a", channel_layer=full).send({"n": 1})
    with pytest.raises(ChannelFull):
        Channel("a", channel_layer=full).send({"n": 2})


def test_channel_names_and_identity(layer: InMemoryChannelLayer) -> None:
    """A Channel takes a str or bytes name; Channels of one name are equal and hash alike."""
    channel = Channel(b"daphne.response.ab!cd", channel_layer=layer)
    assert channel.name == "daphne.response.ab!cd"
    assert str(channel) == "daphne.response.ab!cd"
    assert "daphne.response.ab!cd" in repr(channel)
    assert channel == Channel("daphne.response.ab!cd")
    assert channel != Channel("other")
    assert channel != "daphne.response.ab!cd"
    assert len({channel, Channel("daphne.response.ab!cd")}) == 1


def test_channel_resolves_its_layer_by_alias() -> None:
    """A Channel without a layer uses the 'default' alias's layer."""
    channel = Channel("a")
    assert channel.alias == DEFAULT_CHANNEL_LAYER == "default"
    assert channel.channel_layer is channel_layers["default"]
    channel.send({"via": "alias"})
    assert drain(channel_layers["default"], "a") == [{"via": "alias"}]


# -- Group --------------------------------------------------------------------


def test_group_add_send_discard(layer: InMemoryChannelLayer) -> None:
    """Group.send reaches every added member once; discarded members no longer get messages."""
    group = Group("chat", channel_layer=layer)
    group.add(Channel("one", channel_layer=layer))
    group.add("two")
    group.add(b"three")
    group.add("two")  # idempotent
    assert sorted(group.channel_names()) == ["one", "three", "two"]
    group.send({"text": "hi"})
    assert drain(layer, "one") == drain(layer, "two") == drain(layer, "three") == [{"text": "hi"}]
    group.discard("two")
    group.discard("never-added")
    group.send({"text": "again"})
    assert drain(layer, "two") == []
    assert drain(layer, "one") == [{"text": "again"}]
    assert "chat" in repr(group)


def test_group_send_skips_full_members(layer: InMemoryChannelLayer) -> None:
    """Group.send skips a full member and still delivers to the others."""
    small = InMemoryChannelLayer(capacity=1)
    group = Group("g", channel_layer=small)
    group.add("full")
    group.add("empty")
    Channel("full", channel_layer=small).send({"n": 0})
    group.send({"n": 1})
    assert drain(small, "full") == [{"n": 0}]
    assert drain(small, "empty") == [{"n": 1}]


def test_group_send_refuses_non_dicts(layer: InMemoryChannelLayer) -> None:
    """Group.send raises ValueError for content that is not a dict."""
    with pytest.raises(ValueError):
        Group("chat", channel_layer=layer).send("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["bad name", "a!b", "a?b", "x" * 100])
def test_group_refuses_invalid_names(layer: InMemoryChannelLayer, name: str) -> None:
    """A Group with an invalid name raises TypeError on send and on add."""
    group = Group(name, channel_layer=layer)
    with pytest.raises(TypeError):
        group.send({"a": 1})
    with pytest.raises(TypeError):
        group.add("member")


def test_group_add_refuses_invalid_channel_names(layer: InMemoryChannelLayer) -> None:
    """Group.add raises TypeError for an invalid channel name."""
    with pytest.raises(TypeError):
        Group("g", channel_layer=layer).add("bad name")


# -- Message ------------------------------------------------------------------


def test_message_is_dict_like(layer: InMemoryChannelLayer) -> None:
    """A Message reads like a dict of its content and knows its channel and layer."""
    content = {"reply_channel": "daphne.response.a!b", "text": "hi", "order": 1}
    message = Message(content, "websocket.receive", layer)
    assert message.content is content
    assert message.channel == Channel("websocket.receive")
    assert message.channel.channel_layer is layer
    assert message.channel_layer is layer
    assert message["text"] == "hi"
    assert "text" in message and "bytes" not in message
    assert message.get("bytes") is None and message.get("bytes", b"") == b""
    assert sorted(message) == sorted(content)
    assert list(message.keys()) == list(content.keys())
    assert list(message.values()) == list(content.values())
    assert list(message.items()) == list(content.items())
    with pytest.raises(KeyError):
        message["bytes"]
    assert "websocket.receive" in repr(message)


def test_message_reply_channel(layer: InMemoryChannelLayer) -> None:
    """Message.reply_channel is a Channel on the message's layer, or None without one."""
    message = Message({"reply_channel": "daphne.response.a!b"}, "websocket.connect", layer)
    assert message.reply_channel == Channel("daphne.response.a!b")
    assert message.reply_channel is not None
    assert message.reply_channel.channel_layer is layer
    assert Message({}, "chat-messages", layer).reply_channel is None


def test_message_copy_is_deep(layer: InMemoryChannelLayer) -> None:
    """Message.copy() copies the content deeply and keeps the channel and layer."""
    message = Message({"nested": {"a": [1]}}, "x", layer)
    clone = message.copy()
    clone["nested"]["a"].append(2)
    assert message["nested"] == {"a": [1]}
    assert clone.channel.name == "x" and clone.channel_layer is layer


# -- sends held while a consumer runs ------------------------------------------


def test_sends_in_a_consumer_are_held_until_it_finishes(layer: InMemoryChannelLayer) -> None:
    """Sends made inside a consumer are held until it finishes, then sent in order."""
    seen_during: list[Any] = []

    def consumer() -> None:
        Channel("a", channel_layer=layer).send({"n": 1})
        Channel("a", channel_layer=layer).send({"n": 2})
        seen_during.append(layer.receive(["a"]))

    run_consumer(consumer)
    assert seen_during == [(None, None)]
    assert drain(layer, "a") == [{"n": 1}, {"n": 2}]


def test_held_channel_and_group_sends_keep_their_order(layer: InMemoryChannelLayer) -> None:
    """Held Channel and Group sends are flushed in the order they were made."""
    Group("g", channel_layer=layer).add("a")

    def consumer() -> None:
        Channel("a", channel_layer=layer).send({"n": 1})
        Group("g", channel_layer=layer).send({"n": 2})
        Channel("a", channel_layer=layer).send({"n": 3})
        Group("g", channel_layer=layer).send({"n": 4})

    run_consumer(consumer)
    assert drain(layer, "a") == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]


def test_held_sends_are_copied_when_sent(layer: InMemoryChannelLayer) -> None:
    """A held send carries the content as it was at send(), not as it is at the flush."""

    def consumer() -> None:
        content: dict[str, Any] = {"n": [1]}
        Channel("a", channel_layer=layer).send(content)
        content["n"].append(2)

    run_consumer(consumer)
    assert drain(layer, "a") == [{"n": [1]}]


def test_immediately_bypasses_the_buffer(layer: InMemoryChannelLayer) -> None:
    """send(immediately=True) on a Channel or Group goes at once, inside a consumer."""
    Group("g", channel_layer=layer).add("b")
    seen_during: list[Any] = []

    def consumer() -> None:
        Channel("a", channel_layer=layer).send({"n": 1})
        Channel("a", channel_layer=layer).send({"n": 2}, immediately=True)
        Group("g", channel_layer=layer).send({"g": 1}, immediately=True)
        seen_during.append(drain(layer, "a"))
        seen_during.append(drain(layer, "b"))

    run_consumer(consumer)
    assert seen_during == [[{"n": 2}], [{"g": 1}]]
    assert drain(layer, "a") == [{"n": 1}]


def test_a_consumer_that_raises_still_sends(layer: InMemoryChannelLayer) -> None:
    """A consumer that raises still has its held sends flushed, and buffering ends."""

    def consumer() -> None:
        Channel("a", channel_layer=layer).send({"n": 1})
        raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError):
        run_consumer(consumer)
    assert drain(layer, "a") == [{"n": 1}]
    assert not pending_message_store.is_active()


def test_bad_sends_raise_in_the_consumer_at_once(layer: InMemoryChannelLayer) -> None:
    """Invalid sends inside a consumer raise at the call, not at the flush."""
    errors: list[type[Exception]] = []

    def consumer() -> None:
        Channel("a", channel_layer=layer).send({"n": 1})
        for bad in (
            lambda: Channel("a", channel_layer=layer).send({"obj": object()}),
            lambda: Channel("bad name", channel_layer=layer).send({"n": 2}),
            lambda: Group("g", channel_layer=layer).send([]),  # type: ignore[arg-type]
        ):
            try:
                bad()
            except (TypeError, ValueError) as e:
                errors.append(type(e))

    run_consumer(consumer)
    assert errors == [TypeError, TypeError, ValueError]
    assert drain(layer, "a") == [{"n": 1}]


def test_sends_outside_a_consumer_go_at_once(layer: InMemoryChannelLayer) -> None:
    """Outside a consumer, Channel.send sends at once."""
    assert not pending_message_store.is_active()
    Channel("a", channel_layer=layer).send({"n": 1})
    assert drain(layer, "a") == [{"n": 1}]


def test_buffering_is_per_thread(layer: InMemoryChannelLayer) -> None:
    """Sends are held only in the consumer's thread; another thread's go at once."""
    from_other_thread: list[Any] = []

    def other() -> None:
        Channel("a", channel_layer=layer).send({"from": "other"})
        from_other_thread.append(layer.receive(["a"]))

    def consumer() -> None:
        Channel("a", channel_layer=layer).send({"from": "consumer"})
        t = threading.Thread(target=other)
        t.start()
        t.join()

    run_consumer(consumer)
    assert from_other_thread == [("a", {"from": "other"})]
    assert drain(layer, "a") == [{"from": "consumer"}]


def test_a_new_consumer_starts_with_an_empty_buffer(layer: InMemoryChannelLayer) -> None:
    """consumer_started drops sends held by an earlier, unfinished consumer in the thread."""
    consumer_started.send(sender=None, environ={})
    Channel("a", channel_layer=layer).send({"n": "lost with its consumer"})
    run_consumer(lambda: Channel("a", channel_layer=layer).send({"n": 2}))
    assert drain(layer, "a") == [{"n": 2}]


def test_flush_waits_for_room_in_a_full_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flush waits for room in a full channel and sends once a reader frees it."""
    small = InMemoryChannelLayer(capacity=1)
    small.receive_block_timeout = 30.0
    monkeypatch.setattr(pending_message_store, "full_timeout", 30.0)
    Channel("a", channel_layer=small).send({"n": 0})
    finished = threading.Event()

    def worker_thread() -> None:
        run_consumer(lambda: Channel("a", channel_layer=small).send({"n": 1}))
        finished.set()

    worker = threading.Thread(target=worker_thread)
    worker.start()
    # Reading frees the room the flush waits for; it is pushed, not polled.
    assert small.receive(["a"], block=True) == ("a", {"n": 0})
    assert small.receive(["a"], block=True) == ("a", {"n": 1})
    worker.join(30)
    assert finished.is_set()


def test_flush_waits_on_a_blocked_channel_past_full_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flush waits on a blocked channel past full_timeout and sends once it is unblocked."""
    # Its interface blocked the reply channel: the client is slow, not
    # gone.  A held chunk must not be dropped (a hole in the response).
    layer = InMemoryChannelLayer()
    monkeypatch.setattr(pending_message_store, "full_timeout", 0.01)
    layer.block_local_channel("http.response.x!a")
    finished = threading.Event()

    def worker_thread() -> None:
        run_consumer(lambda: Channel("http.response.x!a", channel_layer=layer).send({"n": 1}))
        finished.set()

    worker = threading.Thread(target=worker_thread)
    worker.start()
    assert not finished.wait(0.3)  # many full_timeouts later, still waiting
    layer.unblock_local_channel("http.response.x!a")
    worker.join(30)
    assert finished.is_set()
    assert drain(layer, "http.response.x!") == [{"n": 1}]


def test_flush_drops_and_logs_a_message_that_finds_no_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A held message finding no room by full_timeout is dropped and logged; others still go."""
    small = InMemoryChannelLayer(capacity=1)
    Channel("a", channel_layer=small).send({"n": 0})
    monkeypatch.setattr(pending_message_store, "full_timeout", 0.0)

    def consumer() -> None:
        Channel("a", channel_layer=small).send({"n": 1})
        Channel("b", channel_layer=small).send({"n": 2})

    with capturedLogs() as events:
        run_consumer(consumer)
    assert drain(small, "a") == [{"n": 0}]
    assert drain(small, "b") == [{"n": 2}]
    assert [e["channel"] for e in events if e.get("log_level").name == "error"] == ["a"]


class FailingLayer(BaseChannelLayer):
    """A layer whose channel "full" is always full and "broken" always fails."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_prepared(self, channel: str, data: bytes) -> None:
        if channel == "full":
            raise ChannelFull(channel)
        if channel == "broken":
            raise ConnectionError("layer unreachable")
        self.sent.append((channel, self.unpack(data)))


def test_flush_goes_on_after_a_failed_send() -> None:
    """A held send that fails (full or layer error) is logged and the flush goes on."""
    failing = FailingLayer()

    def consumer() -> None:
        Channel("full", channel_layer=failing).send({"n": 1})
        Channel("broken", channel_layer=failing).send({"n": 2})
        Channel("ok", channel_layer=failing).send({"n": 3})

    with capturedLogs() as events:
        run_consumer(consumer)
    assert failing.sent == [("ok", {"n": 3})]
    assert sum(1 for e in events if e.get("log_level").name in ("error", "critical")) == 2
