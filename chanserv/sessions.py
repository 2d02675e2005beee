"""
Django sessions for channel consumers, the Channels 1.x decorators:
``channel_session``, ``http_session``, ``channel_and_http_session``, and
``enforce_ordering`` re-exported from its 1.x home.  Pool threads only;
consumers of one reply channel that use ``channel_session`` run one at a
time within a process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from chanserv.handler import AsgiRequest
from chanserv.message import Message, find_message
from chanserv.ordering import enforce_ordering, requeue_messages, socket_locks, wait_channel_name
from chanserv.session_store import (
    open_channel_session,
    reply_channel_name,
    save_if_changed,
    session_for_reply_channel,
    track,
)

__all__ = [
    "channel_and_http_session",
    "channel_session",
    "enforce_ordering",
    "http_session",
    "requeue_messages",
    "session_for_reply_channel",
    "wait_channel_name",
]

F = TypeVar("F", bound=Callable[..., Any])

# Marker on the Message: how deep the HTTP session decorators are nested now.
_HTTP_DEPTH = "_chanserv_http_session_depth"


# -- channel_session -----------------------------------------------------------


@contextmanager
def channel_session_scope(message: Message) -> Iterator[SessionBase]:
    """
    ``message.channel_session`` for the duration of the ``with`` block: the
    body of :func:`channel_session`, for code that needs it around a block.

    Holds the reply channel's turn in this process (re-entrant) while the
    session is loaded, used and saved; see
    :func:`~chanserv.session_store.open_channel_session`.

    :raises ValueError: the message has no reply channel.
    :raises ConsumeLater: another consumer created the session at the same
        moment; the worker consumes the message again.
    """
    with socket_locks.hold(reply_channel_name(message)), open_channel_session(message) as session:
        yield session


def channel_session(func: F) -> F:
    """
    Give the consumer ``message.channel_session``: a Django session keyed by
    the message's reply channel (see :func:`session_for_reply_channel`),
    created on first use and saved after the consumer -- even when it raises
    -- if it changed, nested values included.  Within one process the
    consumers of one reply channel that use it run one at a time (they hold
    :data:`chanserv.ordering.socket_locks`, re-entrant when nested), so two
    threads never lose one another's update.  Pool threads only.

    :raises ValueError: no Message among the first two arguments, or the
        message has no reply channel.
    :raises ConsumeLater: the session was created concurrently.
    """

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args, "channel_session")
        with channel_session_scope(message):
            return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


# -- http_session --------------------------------------------------------------


def _request_for(message: Message) -> Any:
    # Only the headers and the query string matter; the body (and its
    # channel, which would be drained) is left out.
    content = {k: v for k, v in message.content.items() if k not in ("body", "body_channel")}
    content.setdefault("method", "FAKE")
    query = content.get("query_string")
    if isinstance(query, bytes):
        try:
            query.decode("utf-8")
        except UnicodeDecodeError:
            content["query_string"] = b""  # unreadable: no session key from it
    try:
        return AsgiRequest(Message(content, message.channel.name, message.channel_layer))
    except Exception as e:
        raise ValueError(
            "Cannot parse HTTP message - are you sure this is a HTTP consumer? %s" % (e,)
        ) from e


def http_session_for_key(session_key: str) -> SessionBase:
    """The ``SESSION_ENGINE`` session ``session_key``, loaded and tracked."""
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key=session_key)
    session.keys()  # load now, not on first access
    track(session)
    return session


def http_session_key(message: Message) -> str | None:
    """
    The HTTP session key of a message: the ``SESSION_COOKIE_NAME`` cookie,
    else the ``session_key`` query parameter, else None.

    The query parameter is what the tutorial documents for WebSockets served
    on another domain than the site (cookies do not follow).  It is a bearer
    token in a URL: whoever knows it *is* that user, and a page can make a
    victim's browser connect with a key the attacker chose (session
    fixation); the cookie always wins when both are present.  chanserv's
    access log shows ``session_key=[redacted]`` instead of the value.
    """
    request = _request_for(message)
    key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not key:
        key = request.GET.get("session_key")
    return key or None


@contextmanager
def http_session_scope(message: Message) -> Iterator[SessionBase | None]:
    """
    ``message.http_session`` for the duration of the ``with`` block; the body
    of :func:`http_session`.  Saved on a normal exit if it changed.
    """
    depth = getattr(message, _HTTP_DEPTH, 0)
    if depth:
        setattr(message, _HTTP_DEPTH, depth + 1)
        try:
            yield message.http_session
        finally:
            setattr(message, _HTTP_DEPTH, depth)
        return
    key = http_session_key(message)
    session = http_session_for_key(key) if key else None
    message.http_session = session
    setattr(message, _HTTP_DEPTH, 1)
    try:
        yield session
    except BaseException:
        setattr(message, _HTTP_DEPTH, 0)
        raise
    setattr(message, _HTTP_DEPTH, 0)
    # Whatever is there now: channel_and_http_session may have put it there.
    save_if_changed(message.http_session)


def http_session(func: F) -> F:
    """
    Give the consumer ``message.http_session``: the Django session named by
    the ``SESSION_COOKIE_NAME`` cookie or the ``session_key`` query parameter
    (see :func:`http_session_key`), or None when there is neither.  A
    missing method (WebSocket messages have none) is taken as ``"FAKE"``.

    The session is never created here; after the consumer returns it is
    saved if it changed (not when the consumer raises, as in Channels 1.x).

    :raises ValueError: no Message among the first two arguments, or the
        message cannot be read as an HTTP request (no ``path``...).
    """

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args, "http_session")
        with http_session_scope(message):
            return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def channel_and_http_session(func: F) -> F:
    """
    :func:`http_session` and :func:`channel_session` together, with the HTTP
    session carried over to later messages: when the message brings an HTTP
    session key, it is stored in the channel session under
    ``SESSION_COOKIE_NAME``; when it brings none (a ``websocket.receive``),
    ``message.http_session`` is loaded from the stored key.
    """

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        message = find_message(args, "channel_and_http_session")
        with http_session_scope(message), channel_session_scope(message) as channel:
            http = message.http_session
            name = settings.SESSION_COOKIE_NAME
            if http is not None and name not in channel:
                channel[name] = http.session_key
            elif http is None and isinstance(channel.get(name), str):
                message.http_session = http_session_for_key(channel[name])
            return func(*args, **kwargs)

    return inner  # type: ignore[return-value]
