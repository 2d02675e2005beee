"""
:func:`enforce_ordering`: the messages of one WebSocket consumed in their
``order``, whatever thread or process takes them; this module owns the
process's turn-taking on reply channels (:data:`socket_locks`).  Pool
threads only: it blocks, and touches the session store.
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
    # Any: usable bare or called, it returns the wrapped consumer or a decorator, and the
    # consumer's signature is the project's (Channels 1.x API).
    """
    Run the decorated consumer for a message only when it is that socket's
    turn: its ``order`` is the next one (the mechanism is described in
    ``docs/internals.rst``).  Usable bare (``@enforce_ordering``) or called
    (``@enforce_ordering()``); it includes
    :func:`~chanserv.sessions.channel_session`.  Put it outermost, as the
    tutorial does: inside another session decorator it cannot wait and
    sends early messages straight to the wait channel.  A socket whose
    gap lasts ``CHANNEL_ORDERING_GAP_TIMEOUT`` seconds, or whose wait
    channel is full, is closed with 1011.  Pool threads only.

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
        pending_message_store.send_and_flush(hand_off=False)
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
