"""The reply-channel registry over the in-memory layer."""

from __future__ import annotations

import re
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from chanserv.interfaces import IReplyDispatch
from chanserv.layers import base
from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.server.replies import ReplyRegistry
from tests.support import ClockReactor


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail = fail

    def deliver(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.fail:
            raise RuntimeError("boom")


@pytest.fixture
def clock() -> ClockReactor:
    return ClockReactor()


@pytest.fixture
def layer(clock: ClockReactor) -> InMemoryChannelLayer:
    layer = InMemoryChannelLayer(clock=clock)
    layer.attach_reactor(clock)
    return layer


@pytest.fixture
def registry(layer: InMemoryChannelLayer) -> ReplyRegistry:
    registry = ReplyRegistry(layer)
    registry.startService()
    return registry


def test_provides_the_reply_dispatch(registry: ReplyRegistry) -> None:
    """ReplyRegistry provides IReplyDispatch."""
    assert verifyObject(IReplyDispatch, registry)


def test_prefix_and_names(registry: ReplyRegistry, layer: InMemoryChannelLayer) -> None:
    """The prefix is a valid receive name; reply channels under it are valid and unique."""
    assert re.fullmatch(r"chanserv\.response\.[A-Za-z]{12}!", registry.prefix)
    assert layer.valid_channel_name(registry.prefix, receive=True)
    names = {registry.new_reply_channel() for _ in range(1000)}
    assert len(names) == 1000
    for name in names:
        assert re.fullmatch(re.escape(registry.prefix) + r"[A-Za-z]{16}", name)
        assert layer.valid_channel_name(name)


def test_each_registry_has_its_own_prefix(layer: InMemoryChannelLayer) -> None:
    """Two registries on one layer get different reply-channel prefixes."""
    assert ReplyRegistry(layer).prefix != ReplyRegistry(layer).prefix


def test_replies_reach_their_connection_in_order(
    registry: ReplyRegistry, layer: InMemoryChannelLayer, clock: ClockReactor
) -> None:
    """Replies reach their registered connection in send order, in one batch on the reactor."""
    a, b = Recorder(), Recorder()
    name_a, name_b = registry.new_reply_channel(), registry.new_reply_channel()
    registry.register(name_a, a)
    registry.register(name_b, b)
    for i in range(3):
        layer.send(name_a, {"n": i})
        layer.send(name_b, {"m": i})
    assert a.messages == []  # delivered on the reactor, in one batch
    clock.run_pending()
    assert a.messages == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert b.messages == [{"m": 0}, {"m": 1}, {"m": 2}]


def test_unknown_channel_is_dropped_and_others_still_delivered(
    registry: ReplyRegistry, layer: InMemoryChannelLayer, clock: ClockReactor
) -> None:
    """A reply to an unregistered channel is dropped; the rest of the batch still arrives."""
    a = Recorder()
    name = registry.new_reply_channel()
    registry.register(name, a)
    layer.send(registry.new_reply_channel(), {"lost": True})
    layer.send(name, {"found": True})
    clock.run_pending()
    assert a.messages == [{"found": True}]


def test_a_failing_connection_does_not_stop_the_batch(
    registry: ReplyRegistry, layer: InMemoryChannelLayer, clock: ClockReactor
) -> None:
    """A connection that raises on delivery does not keep the batch from the others."""
    bad, good = Recorder(fail=True), Recorder()
    bad_name, good_name = registry.new_reply_channel(), registry.new_reply_channel()
    registry.register(bad_name, bad)
    registry.register(good_name, good)
    layer.send(bad_name, {"x": 1})
    layer.send(good_name, {"y": 2})
    clock.run_pending()
    assert bad.messages == [{"x": 1}]
    assert good.messages == [{"y": 2}]


def test_unregister(
    registry: ReplyRegistry, layer: InMemoryChannelLayer, clock: ClockReactor
) -> None:
    """An unregistered channel gets no more replies; unregistering it twice is harmless."""
    a = Recorder()
    name = registry.new_reply_channel()
    registry.register(name, a)
    assert name in registry and len(registry) == 1
    registry.unregister(name)
    registry.unregister(name)  # no-op
    layer.send(name, {"x": 1})
    clock.run_pending()
    assert a.messages == []
    assert len(registry) == 0


def test_connections_that_went_leave_nothing_in_the_layer(
    registry: ReplyRegistry, layer: InMemoryChannelLayer, clock: ClockReactor
) -> None:
    """Connections that went leave no counters, memberships or cached names in the layer.
    The storm: each in a group, answered, some answered again after it went.
    """
    names_cached = len(base._valid_names), len(base._valid_receive_names)
    for _ in range(3):
        names = [registry.new_reply_channel() for _ in range(100)]
        for name in names:
            registry.register(name, Recorder())
            layer.group_add("storm", name)
            layer.send(name, {"accept": True})
        clock.run_pending()
        layer.send_group("storm", {"text": "hi"})  # reaches the first half late
        for name in names[:50]:
            registry.unregister(name)
        clock.run_pending()
        for name in names[50:]:
            registry.unregister(name)
    assert len(registry) == 0
    assert registry.gone == 3 * 50
    assert layer._counters == {}
    assert layer.group_channels("storm") == []
    assert (len(base._valid_names), len(base._valid_receive_names)) == names_cached


def test_register_checks_names(registry: ReplyRegistry) -> None:
    """register refuses a name outside the registry's prefix, and one already registered."""
    with pytest.raises(ValueError):
        registry.register("chanserv.response.other!abc", Recorder())
    name = registry.new_reply_channel()
    registry.register(name, Recorder())
    with pytest.raises(ValueError):
        registry.register(name, Recorder())


def test_stop_removes_the_local_receiver(
    registry: ReplyRegistry, layer: InMemoryChannelLayer, clock: ClockReactor
) -> None:
    """After stopService replies are no longer delivered; they stay queued on the prefix."""
    a = Recorder()
    name = registry.new_reply_channel()
    registry.register(name, a)
    d = registry.stopService()
    assert d.called
    layer.send(name, {"after": True})
    clock.run_pending()
    assert a.messages == []
    # The message stays queued for the prefix instead.
    assert layer.receive([registry.prefix]) == (name, {"after": True})
