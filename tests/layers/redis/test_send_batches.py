"""
The sends of one reactor turn, over SEND_BATCH messages: one script call
after the other, and a channel refused in one is refused in the next
without being tried, so no later message to it gets in ahead of an earlier
one (a fake shard whose replies the test gives); and the shard each send
goes to.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.layers.redis import RedisChannelLayer
from chanserv.layers.redis.config import consistent_hash
from chanserv.layers.redis.operations import SEND_BATCH


class Shard:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], Deferred[list[int]]]] = []

    def eval(self, script: Any, keys: Any, args: list[Any]) -> Deferred[list[int]]:
        d: Deferred[list[int]] = Deferred()
        self.calls.append((args[7::2], d))  # the channels, two arguments each
        return d


def one_fake_shard(layer: RedisChannelLayer) -> tuple[Shard, Clock]:
    """Give ``layer``'s operations one fake shard and a Clock as their reactor."""
    shard = Shard()
    layer.operations.shards = [shard]  # type: ignore[list-item]
    layer.operations.reactor = clock = Clock()
    return shard, clock


def test_a_channel_refused_in_one_batch_is_not_tried_in_the_next() -> None:
    """The second batch waits for the first; full and blocked channels fail in it untried."""
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])
    ops = layer.operations
    shard, clock = one_fake_shard(layer)
    first = ["y"] * (SEND_BATCH - 2) + ["full", "blocked"]
    second = ["full", "z", "blocked"]
    results: list[Any] = []
    for channel in first + second:
        ops.send(channel, b"m").addBoth(results.append)
    clock.advance(0)
    # The second batch waits for the first one's answer.
    assert [channels for channels, _ in shard.calls] == [first]
    shard.calls[0][1].callback([1] * (SEND_BATCH - 2) + [0, 2])
    # Then only "z" is tried: "full" and "blocked" were refused before.
    assert [channels for channels, _ in shard.calls] == [first, ["z"]]
    assert results[: SEND_BATCH - 2] == [None] * (SEND_BATCH - 2)
    refused = results[SEND_BATCH - 2 :]
    assert [f.type for f in refused] == [ChannelFull, ChannelBlocked, ChannelFull, ChannelBlocked]
    shard.calls[1][1].callback([1])
    assert results[-1] is None
    assert len(results) == SEND_BATCH + 3


def test_sends_go_to_the_shard_of_their_non_local_name() -> None:
    """One shard takes every channel; with two, each goes where its non-local name hashes."""
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"])
    ops = layer.operations
    shards = [Shard(), Shard()]
    ops.shards = shards  # type: ignore[assignment]
    ops.reactor = clock = Clock()
    names = ["a", "b", "c", "d", "proc.x!1", "proc.x!2", "proc.y!1"]
    for name in names:
        ops.send(name, b"m")
    clock.advance(0)
    expected: list[list[str]] = [[], []]
    for name in names:
        expected[consistent_hash(name.split("!")[0] + "!" if "!" in name else name, 2)].append(name)
    assert [shard.calls[0][0] if shard.calls else [] for shard in shards] == expected
    assert all(expected), "the names should land on both shards"
    ops.shards = [Shard()]  # type: ignore[list-item]
    assert {ops.shard_index(name) for name in names} == {0}


class Sink:
    """Records what send_to gave it."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def callback(self, result: None) -> None:
        self.outcomes.append(("sent", result))

    def errback(self, reason: BaseException | Failure) -> None:
        self.outcomes.append(("refused", reason))


def test_send_to_gives_each_outcome_to_its_sink_in_the_same_batch_as_send() -> None:
    """send_to batches with send; each sink gets callback(None), or errback with the refusal or the failure."""
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])
    ops = layer.operations
    shard, clock = one_fake_shard(layer)
    sinks = [Sink(), Sink()]
    results: list[Any] = []
    ops.send_to("a", b"m", sinks[0])
    ops.send("b", b"m").addBoth(results.append)
    ops.send_to("full", b"m", sinks[1])
    clock.advance(0)
    assert [channels for channels, _ in shard.calls] == [["a", "b", "full"]]
    shard.calls[0][1].callback([1, 1, 0])
    assert sinks[0].outcomes == [("sent", None)]
    assert results == [None]
    [(kind, reason)] = sinks[1].outcomes
    assert kind == "refused" and isinstance(reason, ChannelFull)
    # A batch that fails gives every sink the failure.
    failing = Sink()
    ops.send_to("c", b"m", failing)
    clock.advance(0)
    shard.calls[1][1].errback(ConnectionError("lost (expected by the test)"))
    [(kind, reason)] = failing.outcomes
    assert kind == "refused" and isinstance(reason, Failure) and reason.check(ConnectionError)


def test_send_twisted_to_batches_and_refuses_bad_input_through_the_sink() -> None:
    """send_twisted_to joins the turn's batch; an unattached layer, a bad name or content fails the sink at once."""
    layer = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])
    unattached = Sink()
    layer.send_twisted_to("a", {"text": "x"}, unattached)
    [(kind, reason)] = unattached.outcomes
    assert kind == "refused" and reason.check(RuntimeError)
    shard, clock = one_fake_shard(layer)
    layer.reactor = clock
    bad_name, bad_content, good = Sink(), Sink(), Sink()
    layer.send_twisted_to("bad name", {"text": "x"}, bad_name)
    layer.send_twisted_to("a", {"text": object()}, bad_content)
    layer.send_twisted_to("a", {"text": "x"}, good)
    assert [reason.type for _, reason in bad_name.outcomes + bad_content.outcomes] == [
        TypeError,
        TypeError,
    ]
    clock.advance(0)
    assert [channels for channels, _ in shard.calls] == [["a"]]
    shard.calls[0][1].callback([1])
    assert good.outcomes == [("sent", None)]
