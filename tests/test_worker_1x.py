"""
The Channels 1.x synchronous Worker and WorkerGroup: run() in a thread of
the test, against the real in-memory layer attached to the global reactor
running in its own thread (tests.support.reactor_thread).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from twisted.logger import globalLogPublisher

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.channel import Channel
from chanserv.exceptions import ConsumeLater, DenyConnection
from chanserv.layers import InMemoryChannelLayer
from chanserv.routing import route
from chanserv.signals import consumer_finished, consumer_started, worker_ready
from chanserv.worker import Worker, WorkerGroup
from tests.support import in_reactor, reactor_thread

TIMEOUT = 10


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every log event published while the test runs."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.fixture
def make_layer() -> Iterator[Callable[..., ChannelLayerWrapper]]:
    """Builds in-memory layers attached to the test reactor, as the 'default' alias."""
    reactor = reactor_thread()
    layers: list[InMemoryChannelLayer] = []
    previous: list[Any] = []

    def make(routing: list[Any], **kwargs: Any) -> ChannelLayerWrapper:
        layer = InMemoryChannelLayer(**kwargs)
        # An idle run() notices termed within this many seconds.
        layer.receive_block_timeout = 0.2
        in_reactor(layer.attach_reactor, reactor)
        layers.append(layer)
        wrapper = ChannelLayerWrapper(layer, "default", routing)
        previous.append(channel_layers.set("default", wrapper))
        return wrapper

    yield make
    for layer in layers:
        in_reactor(layer.detach_reactor)
    if previous:
        channel_layers.set("default", previous[0])


class Runner:
    """Runs a worker's run() in a thread and keeps what it raised."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-1x-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        self.worker.termed = True
        self.join()

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "run() did not return"


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_channel_filters_match_1x() -> None:
    """apply_channel_filters keeps 1.x's results and order for only/exclude globs."""
    worker = Worker(None, only_channels=["yes.*", "maybe.*"])
    assert worker.apply_channel_filters(["yes.1", "no.1"]) == ["yes.1"]
    assert worker.apply_channel_filters(["yes.1", "no.1", "maybe.2", "yes"]) == ["yes.1", "maybe.2"]
    worker = Worker(None, exclude_channels=["no.*", "maybe.*"])
    assert worker.apply_channel_filters(["yes.1", "no.1", "maybe.2", "yes"]) == ["yes.1", "yes"]
    worker = Worker(None, exclude_channels=["no.*"], only_channels=["yes.*"])
    assert worker.apply_channel_filters(["yes.1", "no.1", "maybe.2", "yes"]) == ["yes.1"]
    worker = Worker(None, only_channels=["http.?equest", "websocket.[rc]*"])
    assert worker.apply_channel_filters(
        ["http.request", "websocket.connect", "websocket.receive", "websocket.disconnect"]
    ) == ["http.request", "websocket.connect", "websocket.receive"]
    assert Worker(None, only_channels=["Yes.*"]).apply_channel_filters(["yes.1"]) == []


def test_constructor_defaults_match_1x() -> None:
    """Worker takes 1.x's arguments with 1.x's defaults and starts neither termed nor busy."""
    worker = Worker("layer")
    assert (worker.channel_layer, worker.callback, worker.message_retries) == ("layer", None, 10)
    assert worker.signal_handlers is True
    assert (worker.only_channels, worker.exclude_channels) == (None, None)
    assert (worker.termed, worker.in_job) == (False, False)


def test_run_listens_only_on_filtered_channels(make_layer: Any) -> None:
    """run() receives on the routed channels left by the filters; others stay queued."""
    seen: list[str] = []
    layer = make_layer(
        [
            route("keep.a", lambda m: seen.append("keep.a")),
            route("skip.b", lambda m: seen.append("skip.b")),
        ]
    )
    layer.send("skip.b", {})
    layer.send("keep.a", {})
    runner = Runner(Worker(layer, signal_handlers=False, exclude_channels=["skip.*"]))
    wait_until(lambda: seen == ["keep.a"])
    runner.stop()
    assert layer.receive(["skip.b"]) == ("skip.b", {})


def test_run_dispatches_to_routed_consumers_and_calls_back(make_layer: Any) -> None:
    """run() routes each message to its consumer with its kwargs, after callback(channel, message)."""
    order: list[tuple[str, Any]] = []

    def chat(message: Any, room: str) -> None:
        order.append(("chat", (room, message["text"], threading.current_thread().name)))

    def other(message: Any) -> None:
        order.append(("other", message["n"]))

    def callback(channel: str, message: Any) -> None:
        order.append(("callback", (channel, message.channel.name)))

    layer = make_layer([route("chat", chat, room=r"^(?P<room>\w+)$"), route("other", other)])
    layer.send("chat", {"room": "lobby", "text": "hi"})
    layer.send("other", {"n": 1})
    worker = Worker(layer, callback=callback, signal_handlers=False)
    runner = Runner(worker)
    wait_until(lambda: len(order) == 4)
    runner.stop()
    assert sorted(order, key=repr) == sorted(
        [
            ("callback", ("chat", "chat")),
            ("chat", ("lobby", "hi", "test-1x-worker")),
            ("callback", ("other", "other")),
            ("other", 1),
        ],
        key=repr,
    )
    # The callback of each message comes right before its consumer.
    assert order[0][0] == "callback" and order[2][0] == "callback"
    assert worker.handled == 2 and worker.errors == 0
    assert runner.error is None


def test_run_brackets_consumers_with_signals(make_layer: Any) -> None:
    """Each consumer run is bracketed by consumer_started / consumer_finished (sender: the class)."""
    events: list[tuple[str, Any]] = []

    def started(sender: Any, **kwargs: Any) -> None:
        events.append(("started", sender))

    def finished(sender: Any, **kwargs: Any) -> None:
        events.append(("finished", sender))

    consumer_started.connect(started)
    consumer_finished.connect(finished)
    try:
        layer = make_layer([route("t", lambda m: events.append(("consumer", None)))])
        layer.send("t", {})
        runner = Runner(Worker(layer, signal_handlers=False))
        wait_until(lambda: len(events) == 3)
        runner.stop()
    finally:
        consumer_started.disconnect(started)
        consumer_finished.disconnect(finished)
    assert events == [("started", Worker), ("consumer", None), ("finished", Worker)]


def test_termed_by_a_consumer_stops_after_that_message(make_layer: Any) -> None:
    """Setting termed ends run() after the current message; the rest stay in the layer."""
    ran: list[int] = []

    def consumer(message: Any) -> None:
        ran.append(message["n"])
        worker.termed = True

    layer = make_layer([route("t", consumer)])
    for n in range(3):
        layer.send("t", {"n": n})
    worker = Worker(layer, signal_handlers=False)
    Runner(worker).join()
    assert ran == [0]
    assert worker.in_job is False
    assert layer.channel_statistics("t")["messages_pending"] == 2


def test_termed_while_idle_returns_promptly(make_layer: Any) -> None:
    """An idle run() returns within the layer's block time once termed is set from another thread."""
    layer = make_layer([route("t", lambda m: None)])
    worker = Worker(layer, signal_handlers=False)
    runner = Runner(worker)
    time.sleep(0.05)
    started = time.monotonic()
    runner.stop()
    assert time.monotonic() - started < 2


def test_consume_later_requeues_until_doomed_then_drops(make_layer: Any, logged: list[Any]) -> None:
    """ConsumeLater requeues with __retries__; the last try is __doomed__; then it is dropped."""
    tries: list[tuple[int, bool]] = []

    def consumer(message: Any) -> None:
        tries.append((message.content.get("__retries__", 0), getattr(message, "__doomed__", False)))
        raise ConsumeLater()

    layer = make_layer([route("t", consumer)])
    layer.send("t", {"n": 1})
    worker = Worker(layer, message_retries=2, signal_handlers=False)
    runner = Runner(worker)
    wait_until(lambda: worker.dropped == 1)
    runner.stop()
    assert tries == [(0, False), (1, False), (2, True)]
    assert worker.requeued == 2
    [event] = [e for e in logged if "Exceeded number of retries" in e.get("log_format", "")]
    assert event["channel"] == "t"


def test_consume_later_once_sends_once_as_1x(make_layer: Any) -> None:
    """1.x's test: a consumer deferring once runs twice, the requeue being one layer send."""
    calls: list[int] = []

    def consumer(message: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConsumeLater()

    layer = make_layer([route("test", consumer)])
    Channel("test").send({"test": "test"}, immediately=True)
    old_send = layer.send
    layer.send = mock.Mock(side_effect=old_send)
    worker = Worker(layer, signal_handlers=False)
    runner = Runner(worker)
    wait_until(lambda: len(calls) == 2)
    runner.stop()
    assert layer.send.call_count == 1
    assert (worker.requeued, worker.dropped) == (1, 0)


def test_requeue_to_a_full_channel_is_counted_and_logged(
    make_layer: Any, logged: list[Any]
) -> None:
    """A ConsumeLater whose channel stays full is dropped after requeue_timeout, counted and logged."""

    def consumer(message: Any) -> None:
        if message["n"] == 1:
            # Fill the channel (capacity 1) before deferring.
            Channel("t").send({"n": 2}, immediately=True)
            raise ConsumeLater()

    layer = make_layer([route("t", consumer)], capacity=1)
    layer.send("t", {"n": 1})
    worker = Worker(layer, signal_handlers=False)
    worker.requeue_timeout = 0.1
    worker.termed = False
    runner = Runner(worker)
    wait_until(lambda: worker.dropped == 1)
    runner.stop()
    assert worker.requeued == 0
    [event] = [e for e in logged if "stayed full" in e.get("log_format", "")]
    assert event["channel"] == "t" and event["dropped"] == 1


def test_deny_connection_closes_the_socket(make_layer: Any) -> None:
    """DenyConnection from a websocket.connect consumer sends {"close": True} on its reply channel."""

    def connect(message: Any) -> None:
        raise DenyConnection()

    layer = make_layer([route("websocket.connect", connect)])
    layer.send("websocket.connect", {"reply_channel": "sock!abc", "path": "/"})
    runner = Runner(Worker(layer, signal_handlers=False))
    deadline = time.monotonic() + TIMEOUT
    reply: Any = (None, None)
    while reply == (None, None) and time.monotonic() < deadline:
        reply = layer.receive(["sock!"], block=True)
    runner.stop()
    assert reply == ("sock!abc", {"close": True})


def test_failing_consumer_is_logged_with_traceback_and_loop_goes_on(
    make_layer: Any, logged: list[Any]
) -> None:
    """A consumer's exception is logged with its traceback and consumer name; the next message runs."""
    ran: list[int] = []

    def broken(message: Any) -> None:
        if message["n"] == 1:
            raise ValueError("boom")
        ran.append(message["n"])

    layer = make_layer([route("t", broken)])
    layer.send("t", {"n": 1})
    layer.send("t", {"n": 2})
    worker = Worker(layer, signal_handlers=False)
    runner = Runner(worker)
    wait_until(lambda: ran == [2])
    runner.stop()
    [event] = [e for e in logged if e.get("log_failure") is not None]
    assert event["log_format"] == "Error processing message with consumer {consumer}:"
    assert event["consumer"].endswith(
        "test_worker_1x.test_failing_consumer_is_logged_with_"
        "traceback_and_loop_goes_on.<locals>.broken"
    )
    assert event["log_failure"].check(ValueError)
    assert "raise ValueError" in event["log_failure"].getTraceback()
    assert (worker.handled, worker.errors) == (2, 1)
    assert runner.error is None


def test_system_exit_from_a_consumer_ends_run(make_layer: Any) -> None:
    """A consumer's SystemExit ends run() (1.x's bare except swallowed it), after consumer_finished."""
    finished: list[Any] = []

    def finisher(sender: Any, **kwargs: Any) -> None:
        finished.append(sender)

    def leaving(message: Any) -> None:
        raise SystemExit(3)

    consumer_finished.connect(finisher)
    try:
        layer = make_layer([route("t", leaving)])
        layer.send("t", {})
        runner = Runner(Worker(layer, signal_handlers=False))
        runner.join()
    finally:
        consumer_finished.disconnect(finisher)
    assert isinstance(runner.error, SystemExit) and runner.error.code == 3
    assert finished == [Worker]


def test_unrouted_message_is_counted_and_logged(make_layer: Any, logged: list[Any]) -> None:
    """A message no route matches is logged as an error and counted as dropped, and the loop goes on."""
    ran: list[str] = []
    layer = make_layer([route("t", lambda m: ran.append(m["path"]), path=r"^/yes$")])
    layer.send("t", {"path": "/no"})
    layer.send("t", {"path": "/yes"})
    worker = Worker(layer, signal_handlers=False)
    runner = Runner(worker)
    wait_until(lambda: ran == ["/yes"])
    runner.stop()
    assert worker.dropped == 1
    assert any("Could not find match" in e.get("log_format", "") for e in logged)


def test_run_refuses_the_reactor_thread(make_layer: Any) -> None:
    """run() on the reactor thread raises RuntimeError instead of blocking the reactor."""
    layer = make_layer([route("t", lambda m: None)])
    with pytest.raises(RuntimeError, match="reactor thread"):
        in_reactor(Worker(layer, signal_handlers=False).run)


def test_mock_consumer_as_in_1x(make_layer: Any) -> None:
    """1.x's normal run: a Mock consumer runs once, with no send, under a counting termed."""

    class PatchedWorker(Worker):
        def get_termed(self) -> bool:
            if not self.iterations:
                return True
            self.iterations -= 1
            return False

        def set_termed(self, value: Any) -> None:
            self.iterations = value

        termed = property(get_termed, set_termed)  # type: ignore[assignment]

    consumer = mock.Mock()
    layer = make_layer([route("test", consumer)])
    Channel("test").send({"test": "test"}, immediately=True)
    old_send = layer.send
    layer.send = mock.Mock(side_effect=old_send)
    worker = PatchedWorker(layer, signal_handlers=False)
    worker.termed = 2
    runner = Runner(worker)
    runner.join()
    assert consumer.call_count == 1
    assert layer.send.call_count == 0


def test_signal_handlers_in_the_main_thread(make_layer: Any) -> None:
    """In the main thread SIGTERM sets termed: a busy worker finishes its message, an idle one
    returns at once; the previous handlers are back afterwards."""
    previous = signal.getsignal(signal.SIGTERM)
    ran: list[int] = []

    def consumer(message: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        ran.append(message["n"])

    layer = make_layer([route("t", consumer)])
    layer.send("t", {"n": 1})
    layer.send("t", {"n": 2})
    worker = Worker(layer)
    worker.run()
    assert ran == [1] and worker.termed
    assert signal.getsignal(signal.SIGTERM) is previous

    idle = Worker(make_layer([route("idle", lambda m: None)]))
    # An idle receive that only the signal can end before the test's bound.
    idle.channel_layer.channel_layer.receive_block_timeout = 30
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    started = time.monotonic()
    timer.start()
    idle.run()
    assert time.monotonic() - started < 5
    assert idle.termed
    assert signal.getsignal(signal.SIGTERM) is previous


def test_worker_group_runs_threads_concurrently_and_stops_them(make_layer: Any) -> None:
    """WorkerGroup(n_threads=3) runs three consumers at once, sends worker_ready three times,
    and joins its threads once termed."""
    ready: list[Any] = []
    barrier = threading.Barrier(3, timeout=TIMEOUT)
    names: list[str] = []

    def consumer(message: Any) -> None:
        names.append(threading.current_thread().name)
        barrier.wait()

    def on_ready(sender: Any, **kwargs: Any) -> None:
        ready.append(sender)

    layer = make_layer([route("t", consumer)])
    for n in range(3):
        layer.send("t", {"n": n})
    group = WorkerGroup(layer, signal_handlers=False, n_threads=3)
    assert len(group.workers) == 2
    worker_ready.connect(on_ready)
    try:
        group.ready()
    finally:
        worker_ready.disconnect(on_ready)
    assert ready == [group, *group.workers]
    runner = Runner(group)
    wait_until(lambda: sum(w.handled for w in [group, *group.workers]) == 3)
    runner.stop()
    assert sorted(names) == ["chanserv-worker-1", "chanserv-worker-2", "test-1x-worker"]
    assert not any(t.is_alive() for t in group.threads)
    assert all(w.termed for w in group.workers)
    with pytest.raises(ValueError):
        WorkerGroup(layer, n_threads=0)


def test_run_on_a_foreign_asgi1_layer() -> None:
    """run() consumes from a third-party ASGI 1 layer named in CHANNEL_LAYERS, replies included."""
    from django.test import override_settings

    from chanserv.asgi import ChannelLayerManager
    from tests.test_asgi import Asgi1Layer

    def echo(message: Any) -> None:
        message.reply_channel.send({"text": message["text"].upper()})

    routing = [route("websocket.receive", echo)]
    setting = {"default": {"BACKEND": "tests.test_asgi.Asgi1Layer", "ROUTING": routing}}
    with override_settings(CHANNEL_LAYERS=setting):
        wrapper = ChannelLayerManager()["default"]
    foreign = wrapper.channel_layer.foreign_layer
    assert isinstance(foreign, Asgi1Layer)
    foreign.send("websocket.receive", {"reply_channel": "sock!1", "text": "hi"})
    worker = Worker(wrapper, signal_handlers=False)
    runner = Runner(worker)
    deadline = time.monotonic() + TIMEOUT
    reply: Any = (None, None)
    while reply == (None, None) and time.monotonic() < deadline:
        reply = foreign.receive(["sock!"], block=True)
    runner.stop()
    assert reply == ("sock!1", {"text": "HI"})
    assert worker.handled == 1


def test_run_without_channels_warns_and_waits_for_termed(
    make_layer: Any, logged: list[Any]
) -> None:
    """With every channel filtered out run() warns, receives nothing, and returns once termed."""
    layer = make_layer([route("t", lambda m: None)])
    layer.send("t", {})
    worker = Worker(layer, signal_handlers=False, only_channels=["nothing.*"])
    runner = Runner(worker)
    wait_until(lambda: any("no channels" in e.get("log_format", "") for e in logged))
    runner.stop()
    assert worker.handled == 0
    assert layer.receive(["t"]) == ("t", {})
