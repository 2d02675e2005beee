"""
:func:`enforce_ordering`: the messages of one WebSocket consumed in their
``order`` (``websocket.connect`` is 0, the receives 1, 2, ...), whatever
thread or process takes them off the layer.  Import it from
:mod:`chanserv.sessions`, as in Channels 1.x.

This module owns turn-taking on a reply channel: :data:`socket_locks`, the
process's per-reply-channel turns, which the session decorators of
:mod:`chanserv.sessions` hold too (so that two threads never load and save
one channel session at once); the ordered waiting, the wait channel and its
requeue.  It builds on the channel session store of
:mod:`chanserv.session_store` and on the in-process mechanism of
:mod:`chanserv.locks`; :mod:`chanserv.sessions` builds on it, never the
reverse.

The next expected order is kept in the channel session under
``__channels_next_order``.  Only the consumer of the message whose order it
is writes it, so a stale copy can never overwrite a newer one.

**Within one process** the threads handling one socket coordinate through
:data:`socket_locks`:

- a message whose predecessor is being handled by another thread of this
  process waits for it, with no time limit, since that thread will finish;
- a message whose predecessor is not in this process waits for it
  :data:`LOCAL_WAIT` seconds with a local-only layer (the predecessor is
  somewhere in this process's queue), :data:`REMOTE_WAIT` otherwise.  It then
  takes the cross-process path below.

So with the in-memory layer the wait channel is used only after a message
was lost or requeued, and ``--threads 8`` runs a socket's messages one after
the other in order, each thread handing over to the next directly.

**Across processes** the Channels 1.x protocol is used, with its race fixed:
an early message is sent to the socket's wait channel
``"__wait__." + reply_channel.replace("!", "?")`` with ``original_channel``
added, then the stored next order is read again *from the store*; if it moved
meanwhile, the consumer that moved it may have emptied the wait channel
before this message arrived there, so the wait channel is emptied here.
Whoever runs an in-order message empties the wait channel after saving the
new order, sending each message back to its ``original_channel``.

**A socket never stalls forever** (Channels 1.x's did, channels #195/#606):
it is closed with code 1011, and the reason logged at error level, when

- the wait channel is full, or a waiting message cannot be put back;
- a gap persists for ``CHANNEL_ORDERING_GAP_TIMEOUT`` seconds (setting,
  default :data:`DEFAULT_GAP_TIMEOUT`; it must exceed the run time of the
  slowest ordered consumer).  With a local-only layer one thread per socket
  (at most :data:`chanserv.locks.MAX_GAP_WATCHERS` per process) waits that
  long for the missing message, woken at once if it comes, and closes the
  socket when it does not.  With a cross-process layer the first early
  message records when the gap was first seen -- in a record beside the
  channel session (key ``"chw"`` + the same hash), never in the session
  itself, where a stale write could undo the order counter -- and an early
  message that finds the gap older than the timeout closes the socket: a
  socket whose client then sends nothing more is closed on its next message.

Further fixes over 1.x: a message whose order was already consumed (older
than the next expected one) is dropped with a warning instead of bouncing
through the wait channel for ever; a consumer raising ``ConsumeLater`` does
not advance the order; when no ordered consumer saw ``websocket.connect``
(order 0), the first receive (order 1) starts the sequence; the sends of an
ordered consumer are flushed before the next message may run, so replies go
out in order too.

Put ``@enforce_ordering`` outermost (as the tutorial does): inside another
session decorator it cannot wait and sends early messages straight to the
wait channel.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError

from chanserv.channel import pending_message_store, send_waiting
from chanserv.exceptions import ChannelFull, ConsumeLater
from chanserv.layers.base import MAX_NAME_LENGTH
from chanserv.locks import SocketLocks, SocketState, Turn
from chanserv.log import Logger
from chanserv.message import Message, find_message
from chanserv.session_store import (
    keyed_session,
    open_channel_session,
    save_if_changed,
    session_for_reply_channel,
)

if TYPE_CHECKING:
    from django.contrib.sessions.backends.base import SessionBase

__all__ = [
    "DEFAULT_GAP_TIMEOUT",
    "LOCAL_WAIT",
    "ORDER_KEY",
    "REMOTE_WAIT",
    "enforce_ordering",
    "requeue_messages",
    "socket_locks",
    "wait_channel_name",
]

log = Logger()

#: The process's per-reply-channel turns: held by the session decorators
#: (one consumer of a socket at a time) and by :func:`enforce_ordering`
#: (in ``order``).
socket_locks = SocketLocks()

#: Channel-session key of the next order to consume (the Channels 1.x name).
ORDER_KEY = "__channels_next_order"
#: Key, in the gap record, of ``{"next", "since", "closed"}``.
GAP_KEY = "gap"
#: Seconds a gap may persist before the socket is closed, unless the
#: ``CHANNEL_ORDERING_GAP_TIMEOUT`` setting says otherwise.
DEFAULT_GAP_TIMEOUT = 10.0
#: Seconds an early message waits in its thread for a predecessor that is
#: not in this process, with a local-only layer...
LOCAL_WAIT = 1.0
#: ... and with a layer shared between processes.
REMOTE_WAIT = 0.05
#: The close code of a socket whose ordering broke down (internal error).
CLOSE_CODE = 1011

#: Wall-clock time, shared between processes (tests replace it).
wall_clock: Callable[[], float] = time.time


def wait_channel_name(reply_channel: str) -> str:
    """
    The wait channel of a reply channel: ``"__wait__." + reply_channel`` with
    ``!`` made ``?`` (single-reader), or, when that would be too long a
    name, ``"__wait__.h?"`` + the SHA-1 of the reply channel.
    """
    name = "__wait__." + reply_channel.replace("!", "?")
    if len(name) < MAX_NAME_LENGTH:
        return name
    return "__wait__.h?" + hashlib.sha1(reply_channel.encode("utf-8")).hexdigest()


# -- enforce_ordering -------------------------------------------------------------


def _gap_timeout() -> float:
    return float(getattr(settings, "CHANNEL_ORDERING_GAP_TIMEOUT", DEFAULT_GAP_TIMEOUT))


def _local_only(layer: Any) -> bool:
    value = getattr(layer, "local_only", False)
    try:
        return bool(value() if callable(value) else value)
    except Exception:
        return False


def _order_of(message: Message) -> int:
    if "order" not in message.content:
        raise ValueError(
            "No `order` value in message; @enforce_ordering can only be used on "
            "messages containing it."
        )
    value = message.content["order"]
    try:
        if isinstance(value, bool):
            raise TypeError()
        order = int(value)
    except (TypeError, ValueError):
        raise ValueError("The message's `order` must be an int, not %r" % (value,)) from None
    if order < 0:
        raise ValueError("The message's `order` must not be negative, not %r" % (value,))
    return order


def _stored_next(session: Any) -> int | None:
    value = session.get(ORDER_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def enforce_ordering(func: Any = None, slight: bool = False) -> Any:
    """
    Run the decorated consumer for a message only when it is that socket's
    turn: its ``order`` is the next one (see the module documentation).
    Usable bare (``@enforce_ordering``) or called (``@enforce_ordering()``);
    it includes :func:`~chanserv.sessions.channel_session`.

    :raises ValueError: ``slight=True`` (removed in Channels 1.0), and, when
        the consumer is called, a message with no reply channel or without
        an int ``order``.
    """
    if slight:
        raise ValueError(
            "Slight ordering is now always on due to Channels changes. Please remove the decorator."
        )

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            return _consume_in_order(func, args, kwargs)

        return inner

    if func is not None:
        return decorator(func)
    return decorator


_RAN, _EARLY, _STALE = "ran", "early", "stale"


def _consume_in_order(func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    message = find_message(args, "enforce_ordering")
    if message.reply_channel is None:
        raise ValueError("enforce_ordering only works with messages that have a reply_channel.")
    order = _order_of(message)
    name = message.reply_channel.name
    gap_timeout = _gap_timeout()
    local = _local_only(message.channel_layer)
    local_wait = LOCAL_WAIT if local else REMOTE_WAIT
    known: int | None = None
    while True:
        with socket_locks.hold_in_order(
            name, order, known, local_wait, gap_timeout if local else None
        ) as turn:
            if turn.state.closed:
                log.debug(
                    "Message {order} for closed socket {name} dropped", order=order, name=name
                )
                return None
            outcome, value = _attempt(turn, message, order, func, args, kwargs)
            if outcome == _RAN:
                return value
            if outcome == _STALE:
                return None
            if turn.nested or turn.waited_out:
                _park(turn, message, order, value, gap_timeout)
                return None
            known = value  # learnt only now: wait for it, then try again


def _attempt(
    turn: Turn, message: Message, order: int, func: Callable[..., Any], args: Any, kwargs: Any
) -> tuple[str, Any]:
    advanced = False
    try:
        # This thread holds the socket's turn (hold_in_order).
        with open_channel_session(message) as session:
            stored = _stored_next(session)
            # Without an ordered connect consumer, order 1 starts the sequence.
            expected = stored if stored is not None else (1 if order == 1 else 0)
            socket_locks.learn(turn.state, expected)
            if order < expected:
                log.warn(
                    "Message {order} for {name} came after {expected} was due; it was "
                    "already consumed or is a requeued copy, and was dropped",
                    order=order,
                    name=message.reply_channel.name,  # type: ignore[union-attr]
                    expected=expected,
                )
                return _STALE, None
            if order > expected:
                return _EARLY, expected
            try:
                result = func(*args, **kwargs)
            except ConsumeLater:
                raise  # consumed again later: the order does not move
            except BaseException:
                session[ORDER_KEY] = order + 1
                save_if_changed(session)
                advanced = True
                raise
            session[ORDER_KEY] = order + 1
            save_if_changed(session)
            advanced = True
            return _RAN, result
    finally:
        if advanced:
            socket_locks.learn(turn.state, order + 1)
            _flush_pending_sends()
            try:
                requeue_messages(message)
            except Exception:
                log.failure(
                    "Emptying the wait channel of {name} failed", name=message.reply_channel
                )


def _flush_pending_sends() -> None:
    # Send the consumer's held messages before the next message may run.
    if pending_message_store.is_active():
        pending_message_store.send_and_flush()
        pending_message_store.activate()


def _gap_record(name: str) -> SessionBase:
    return keyed_session("chw", name)


def _save_record(record: SessionBase) -> None:
    try:
        record.save(must_create=not record.exists(record.session_key))
    except CreateError:
        record.save()  # created by another process just now


def _park(turn: Turn, message: Message, order: int, expected: int, gap_timeout: float) -> None:
    """An early message, after waiting: wait channel, or close the socket."""
    name = message.reply_channel.name  # type: ignore[union-attr]
    if turn.watcher:
        _close(
            turn.state,
            message,
            expected,
            "message {expected} did not arrive within {timeout}s",
            timeout=gap_timeout,
        )
        return
    record = _gap_record(name)
    gap = record.get(GAP_KEY)
    now = wall_clock()
    if isinstance(gap, dict) and gap.get("closed"):
        socket_locks.close(turn.state)
        log.debug("Message {order} for closed socket {name} dropped", order=order, name=name)
        return
    if isinstance(gap, dict) and gap.get("next") == expected:
        since = gap.get("since")
        if isinstance(since, (int, float)) and now - since >= gap_timeout:
            _close(
                turn.state,
                message,
                expected,
                "message {expected} did not arrive within {timeout}s",
                timeout=gap_timeout,
                record=record,
            )
            return
    else:
        record[GAP_KEY] = {"next": expected, "since": now}
        _save_record(record)
    content = dict(message.content)
    content["original_channel"] = message.channel.name
    try:
        _layer(message).send(wait_channel_name(name), content)
    except ChannelFull:
        _close(
            turn.state,
            message,
            expected,
            "its wait channel is full while waiting for message {expected}",
            record=record,
        )
        return
    # The message that was due may have run, and emptied the wait channel,
    # between our reading the order and our send: read it again, from the store.
    now_next = _stored_next(session_for_reply_channel(name))
    if now_next is not None and now_next != expected:
        socket_locks.learn(turn.state, now_next)
        requeue_messages(message)


def _layer(message: Message) -> Any:
    if message.channel_layer is not None:
        return message.channel_layer
    return message.reply_channel.channel_layer  # type: ignore[union-attr]


def _close(
    state: SocketState | None,
    message: Message,
    expected: int,
    reason: str,
    record: SessionBase | None = None,
    **fields: Any,
) -> None:
    name = message.reply_channel.name  # type: ignore[union-attr]
    if state is not None:
        socket_locks.close(state)
    log.error(
        "Closing WebSocket {name} with code 1011: enforce_ordering cannot go on, " + reason,
        name=name,
        expected=expected,
        **fields,
    )
    try:
        if record is None:
            record = _gap_record(name)
        record[GAP_KEY] = {"next": expected, "since": wall_clock(), "closed": True}
        _save_record(record)
    except Exception:
        log.failure("Recording that {name} was closed failed", name=name)
    try:
        message.reply_channel.send({"close": CLOSE_CODE}, immediately=True)  # type: ignore[union-attr]
    except Exception:
        log.failure("Sending the close of {name} failed", name=name)


def requeue_messages(message: Message) -> None:
    """
    Empty the wait channel of ``message``'s reply channel, sending each
    message back to its ``original_channel``.  If one cannot be sent back
    (that channel stayed full), the socket is closed with 1011: the message
    is lost, so ordering could never go on.
    """
    layer = _layer(message)
    name = message.reply_channel.name  # type: ignore[union-attr]
    wait = wait_channel_name(name)
    try:
        limit = int(layer.get_capacity(wait)) + 1
    except Exception:
        limit = 1000
    for _ in range(limit):
        channel, content = layer.receive([wait], block=False)
        if channel is None:
            return
        original = content.pop("original_channel", None)
        if not isinstance(original, str):
            log.error("A message on {wait} had no original_channel; dropped", wait=wait)
            continue
        try:
            layer.valid_channel_name(original)
            send_waiting(layer, original, layer.prepare(content), 2.0)
        except ChannelFull:
            _close(
                None,
                message,
                int(content.get("order", -1)),
                "{original} is full and message {expected} could not be put back on it",
                original=original,
            )
            return
