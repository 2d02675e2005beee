"""
Doubles for the delay server's unit tests: :class:`QueuedPool`, a worker
pool whose tasks run when the test says so, in the test's thread, and
:class:`MemoryStore`, an ``IDelayStore`` in a dict whose clock is the
test's ``task.Clock``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from zope.interface import implementer

from chanserv.delay.store import IDelayStore, SendResult, Stored, ToStore
from chanserv.exceptions import ChannelFull


class QueuedPool:
    """``WorkerPool.submit`` without threads: :meth:`run` runs what was submitted."""

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[..., object], tuple[Any, ...], Any]] = []
        self.runs = 0

    def submit(self, task: Callable[..., object], *args: Any, on_done: Any = None) -> None:
        self.queue.append((task, args, on_done))

    def run(self, limit: int = 100) -> int:
        """Run queued tasks and their ``on_done``, and those these submit; how many ran."""
        ran = 0
        while self.queue and ran < limit:
            task, args, on_done = self.queue.pop(0)
            task(*args)
            if on_done is not None:
                on_done()
            ran += 1
        self.runs += ran
        return ran


@implementer(IDelayStore)
class MemoryStore:
    """
    Delayed messages in a dict, due by ``clock.seconds()``; shared by
    several services it claims as the database does (a message is sent
    by one of them only).  ``fail`` set to an exception makes every call
    raise it.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.rows: dict[int, tuple[float, str, str]] = {}
        self.next_id = 1
        self.fail: Exception | None = None
        self.calls: list[str] = []

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.fail is not None:
            raise self.fail

    def add(self, messages: Sequence[ToStore]) -> list[Stored]:
        self._check("add")
        now = self.clock.seconds()
        results: list[Stored] = []
        for channel, content, delay in messages:
            try:
                text = json.dumps(content)
            except TypeError as e:
                results.append((None, "its content cannot be stored as JSON (%s)" % e))
                continue
            self.rows[self.next_id] = (now + delay / 1000.0, channel, text)
            results.append((self.next_id, delay / 1000.0))
            self.next_id += 1
        return results

    def due_within(self, seconds: float, limit: int) -> list[tuple[int, float]]:
        self._check("due_within")
        now = self.clock.seconds()
        rows = sorted((due, i) for i, (due, _, _) in self.rows.items() if due <= now + seconds)
        return [(i, due - now) for due, i in rows[:limit]]

    def send(self, message_id: int, layer: Any, requeue_delay: float) -> SendResult:
        self._check("send")
        row = self.rows.get(message_id)
        if row is None:
            return SendResult("gone")
        due, channel, text = row
        now = self.clock.seconds()
        if due > now:
            return SendResult("not_due", channel, due - now)
        del self.rows[message_id]
        try:
            layer.send(channel, json.loads(text))
        except ChannelFull:
            self.rows[message_id] = (now + requeue_delay, channel, text)
            return SendResult("full", channel, requeue_delay)
        return SendResult("sent", channel)
