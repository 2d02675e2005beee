"""
A consumer's held sends, sent from the reactor thread in their order, so
that the worker thread that ran the consumer does not wait for their round
trips to Redis (see :class:`~chanserv.interfaces.ISendHandOff`).
:class:`HandOffBudget` is used from any thread; the rest runs on the
reactor thread only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelBlocked, ChannelFull
from chanserv.interfaces import SendSink
from chanserv.log import Logger

__all__ = ["HandOffBudget", "HandedOffSends", "HeldSend", "SendFailure"]

log = Logger()


class HeldSend(NamedTuple):
    """One held send: ``kind`` is ``"channel"`` or ``"group"``."""

    kind: str
    name: str
    payload: bytes


class SendFailure(NamedTuple):
    """A held send that could not be made, and why."""

    send: HeldSend
    failure: Failure


class HandOffBudget:
    """
    How much a layer holds of sends handed off and not yet through.

    A hand-off is taken while fewer than ``max_messages`` messages and
    ``max_bytes`` bytes are in flight (one hand-off of any size is taken
    when none is), so consumers that send faster than Redis or their
    clients take the messages end up waiting in their threads, as without
    hand-offs, instead of filling this process's memory.  Any thread.
    """

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        #: Messages and payload bytes handed off and not yet through.
        self.messages = 0
        self.bytes = 0

    def take(self, messages: int, size: int) -> bool:
        """Reserve room for a hand-off; False when the budget is used up."""
        with self._lock:
            if self.messages and (
                self.messages + messages > self.max_messages or self.bytes + size > self.max_bytes
            ):
                return False
            self.messages += messages
            self.bytes += size
            return True

    def give_back(self, messages: int, size: int) -> None:
        """Release what :meth:`take` reserved."""
        with self._lock:
            self.messages -= messages
            self.bytes -= size


class _Slot:
    """
    The :class:`~chanserv.interfaces.SendSink` of one channel
    send of a :class:`HandedOffSends`: its outcome, without a Deferred per
    send.  An error in handling it ends the hand-off as a crash does.
    """

    __slots__ = ("_k", "_owner")

    def __init__(self, owner: HandedOffSends, k: int) -> None:
        self._owner = owner
        self._k = k

    def callback(self, result: None) -> None:
        try:
            self._owner._sent(None, self._k)
        except Exception:
            self._owner._crashed(Failure())

    def errback(self, reason: BaseException | Failure) -> None:
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        try:
            self._owner._refused_or_failed(failure, self._k)
        except Exception:
            self._owner._crashed(Failure())


class HandedOffSends:
    """
    Sends ``sends`` in their order, then calls ``done(failures)`` once.

    The order is the one a thread sending them one by one gives:
    consecutive channel sends go out together (the layer batches the sends
    of one reactor turn into script calls per shard, run in order, and once
    it refused a channel in one it refuses that channel in the rest); a
    group send goes once everything before it is through, and what follows
    it once it is through.  A channel send refused as full is tried again,
    waiting for room, for up to ``full_timeout`` seconds -- while the
    channel is blocked (its client reads slowly), for up to
    ``blocked_timeout`` seconds -- before the sends after it go; then it
    is given up (a :class:`SendFailure`).  Any other failure is a
    :class:`SendFailure` at once, and the rest still go.

    :param send: ``send(channel, payload, sink)``: one send, batched per
        turn; its outcome goes to ``sink.callback(None)`` or
        ``sink.errback(reason)`` (an exception or a Failure), as to a
        Deferred's, without a Deferred per send.
    :param send_wait: ``send_wait(channel, payload, timeout)``: a send that
        waits up to ``timeout`` seconds for room.
    :param send_group: ``send_group(group, payload)``.
    """

    def __init__(
        self,
        sends: Sequence[HeldSend],
        send: Callable[[str, bytes, SendSink], None],
        send_wait: Callable[[str, bytes, float], Deferred[None]],
        send_group: Callable[[str, bytes], Deferred[None]],
        clock: IReactorTime,
        full_timeout: float,
        blocked_timeout: float,
        done: Callable[[list[SendFailure]], None],
    ) -> None:
        self._sends = sends
        self._send = send
        self._send_wait = send_wait
        self._send_group = send_group
        self._clock = clock
        self._full_timeout = full_timeout
        self._blocked_timeout = blocked_timeout
        self._done = done
        self._failures: list[SendFailure] = []
        # Indexes of the sends made, and of those given up.
        self._made: set[int] = set()
        self._failed: set[int] = set()
        # The channel sends going out together: where they end, how many
        # are still out, and which of them were refused as full.
        self._end = 0
        self._out = 0
        self._refused: list[int] = []
        self._finished = False

    def start(self) -> None:
        try:
            self._next(0)
        except Exception:
            self._crashed(Failure())

    def _next(self, i: int) -> None:
        sends = self._sends
        if i >= len(sends):
            self._finish()
            return
        if sends[i].kind == "group":
            d = self._send_group(sends[i].name, sends[i].payload)
            d.addCallbacks(
                self._group_sent, self._group_failed, callbackArgs=(i,), errbackArgs=(i,)
            )
            d.addErrback(self._crashed)
            return
        end = i
        while end < len(sends) and sends[end].kind == "channel":
            end += 1
        self._end = end
        self._out = end - i
        self._refused = []
        send = self._send
        for k in range(i, end):
            send(sends[k].name, sends[k].payload, _Slot(self, k))

    def _fail(self, i: int, failure: Failure) -> None:
        self._failed.add(i)
        self._failures.append(SendFailure(self._sends[i], failure))

    def _group_sent(self, _: Any, i: int) -> None:
        self._made.add(i)
        self._next(i + 1)

    def _group_failed(self, failure: Failure, i: int) -> None:
        self._fail(i, failure)
        self._next(i + 1)

    def _sent(self, _: Any, k: int) -> None:
        self._made.add(k)
        self._out -= 1
        if not self._out:
            self._retry_refused()

    def _refused_or_failed(self, failure: Failure, k: int) -> None:
        if failure.check(ChannelFull):
            self._refused.append(k)
        else:
            self._fail(k, failure)
        self._out -= 1
        if not self._out:
            self._retry_refused()

    def _retry_refused(self) -> None:
        if not self._refused:
            self._next(self._end)
            return
        # In their order, each waiting for room before the next is tried.
        self._refused.sort()
        self._retry(0, self._clock.seconds())

    def _retry(self, position: int, started: float) -> None:
        if position >= len(self._refused):
            self._next(self._end)
            return
        send = self._sends[self._refused[position]]
        d = self._send_wait(send.name, send.payload, self._full_timeout)
        d.addCallbacks(
            self._retried,
            self._retry_failed,
            callbackArgs=(position,),
            errbackArgs=(position, started),
        )
        d.addErrback(self._crashed)

    def _retried(self, _: Any, position: int) -> None:
        self._made.add(self._refused[position])
        self._retry(position + 1, self._clock.seconds())

    def _retry_failed(self, failure: Failure, position: int, started: float) -> None:
        if (
            failure.check(ChannelBlocked)
            and self._clock.seconds() - started < self._blocked_timeout
        ):
            self._retry(position, started)  # its client is slow, not gone: wait on
            return
        self._fail(self._refused[position], failure)
        self._retry(position + 1, self._clock.seconds())

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._done(self._failures)

    def _crashed(self, failure: Failure) -> None:
        # A bug here or in a send function: logged, and the hand-off still
        # ends, reporting every send not known to be made or given up (one
        # in flight may yet arrive: counted as lost all the same, never
        # silently missing).
        log.failure("Sending handed-off messages failed", failure)
        if self._finished:
            return
        for i in range(len(self._sends)):
            if i not in self._made and i not in self._failed:
                self._fail(i, failure)
        self._finish()
