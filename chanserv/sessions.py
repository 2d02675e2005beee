"""
Django sessions for channel consumers: the Channels 1.x decorators.

- :func:`channel_session` gives ``message.channel_session``, a session keyed
  by the message's reply channel, so the consumers of one WebSocket share
  state across messages and worker threads or processes;
- :func:`http_session` gives ``message.http_session``, the browser's Django
  session found through its cookie (or a ``session_key`` query parameter);
- :func:`channel_and_http_session` remembers the HTTP session key in the
  channel session on connect and brings the HTTP session back on later
  messages;
- :func:`enforce_ordering` (in :mod:`chanserv.ordering`) runs a socket's
  messages in their ``order``.

Every decorator finds the :class:`~chanserv.message.Message` among the first
two positional arguments, so it works on functions and on methods alike, and
every one is idempotent when nested.  They run in worker threads.

Unlike Channels 1.x, a change made *in place* to a nested value
(``message.channel_session["prefs"]["theme"] = "dark"``) is saved too: the
session's content is serialised (with the session's own serializer) when it
is loaded and compared with its content after the consumer, and the session
is saved when it differs or when ``modified`` is set.

Within one process, the consumers of one reply channel that use
:func:`channel_session` run one at a time (a per-reply-channel lock, re-entrant
for nested decorators): session backends are not transactional, and two
threads saving the same session would otherwise lose one of the updates.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase

from chanserv._compat.django import set_session_key
from chanserv.channel import Channel
from chanserv.exceptions import ConsumeLater
from chanserv.locks import socket_locks
from chanserv.log import Logger
from chanserv.message import Message
from chanserv.ordering import enforce_ordering, requeue_messages

__all__ = [
    "channel_and_http_session",
    "channel_session",
    "enforce_ordering",
    "http_session",
    "requeue_messages",
    "session_for_reply_channel",
]

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])

SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"

# Markers on the Message: how deep the decorators are nested right now.
_CHANNEL_DEPTH = "_chanserv_channel_session_depth"
_HTTP_DEPTH = "_chanserv_http_session_depth"
# Marker on a session: its serialised content when it was last loaded or saved.
_SNAPSHOT = "_chanserv_snapshot"


def find_message(args: tuple[Any, ...], decorator: str) -> Message:
    """
    The :class:`Message` among the first two positional ``args`` (a
    function's ``message``, or a method's after ``self``).

    :raises ValueError: there is none.
    """
    for arg in args[:2]:
        if isinstance(arg, Message):
            return arg
    raise ValueError("%s called without a Message instance" % (decorator,))


# -- the channel session store -------------------------------------------------


def _channel_session_engine() -> Any:
    if getattr(settings, "CHANNEL_SESSION_ENGINE", None):
        setting, path = "CHANNEL_SESSION_ENGINE", settings.CHANNEL_SESSION_ENGINE
    else:
        setting, path = "SESSION_ENGINE", settings.SESSION_ENGINE
    engine = import_module(path)
    signed = import_module(SIGNED_COOKIES)
    if engine is signed or issubclass(engine.SessionStore, signed.SessionStore):
        raise ValueError(
            "Channel sessions cannot use signed cookie sessions: %s = %r keeps the "
            "data in the browser's cookie, and only an HTTP response can change it. "
            "Set CHANNEL_SESSION_ENGINE to a backend that stores data on the server, "
            "e.g. 'django.contrib.sessions.backends.db' or "
            "'django.contrib.sessions.backends.cache'." % (setting, path)
        )
    return engine


def keyed_session(prefix: str, name: str) -> SessionBase:
    """
    The channel-session-engine session ``prefix + sha1(name)[:29]``, loaded.

    The key is fixed: after the load (which forgets the key of a session that
    does not exist yet) it is set again, so a later ``save`` writes this key.
    """
    engine = _channel_session_engine()
    key = prefix + hashlib.sha1(name.encode("utf-8")).hexdigest()[:29]
    session = engine.SessionStore(session_key=key)
    session.keys()  # load now, not on first access
    set_session_key(session, key)
    return session


def session_for_reply_channel(reply_channel: str | Channel) -> SessionBase:
    """
    The session of a reply channel (a name or a :class:`Channel`), loaded.

    Its key is ``"chn"`` + the first 29 hex digits of the SHA-1 of the name
    (32 characters); the engine is ``CHANNEL_SESSION_ENGINE``, or
    ``SESSION_ENGINE`` when that is not set.  Nothing is written: the session
    may not exist in the store yet.

    :raises ValueError: the engine is (a subclass of) the signed-cookies one;
        the message names the setting to change.
    """
    name = reply_channel.name if isinstance(reply_channel, Channel) else reply_channel
    return keyed_session("chn", name)


# -- change tracking -----------------------------------------------------------


def _serialised(session: SessionBase) -> bytes | None:
    try:
        data: bytes = session.serializer().dumps(dict(session.items()))
        return data
    except Exception:
        return None  # unserialisable: saving will raise the real error


def track(session: SessionBase) -> None:
    """Remember ``session``'s content now, to detect in-place changes later."""
    setattr(session, _SNAPSHOT, _serialised(session))


def save_if_changed(session: SessionBase | None) -> bool:
    """
    Save ``session`` if ``modified`` is set or its serialised content differs
    from the one :func:`track` remembered; return whether it was saved.

    Never saves a session without a key -- one that was flushed, or an HTTP
    session whose key does not exist in the store -- so a new session is
    never created here.  After saving, ``modified`` is reset and the content
    remembered again, so nested decorators do not save twice.
    """
    if session is None:
        return False
    changed = session.modified
    if not changed and getattr(session, "accessed", False):
        before = getattr(session, _SNAPSHOT, None)
        changed = before is None or _serialised(session) != before
    if not changed:
        return False
    if session.session_key is None or session.is_empty():
        return False
    session.save()
    session.modified = False
    track(session)
    return True


# -- channel_session -----------------------------------------------------------


@contextmanager
def channel_session_scope(message: Message) -> Iterator[SessionBase]:
    """
    ``message.channel_session`` for the duration of the ``with`` block: the
    body of :func:`channel_session`, for code that needs it around a block.

    The outermost scope of a message takes the reply channel's lock, loads
    the session (creating it with ``save(must_create=True)`` when it does not
    exist, except for a ``websocket.disconnect``), and on exit -- also when the block raises -- saves it if it
    changed.  A nested scope only yields the session.

    :raises ValueError: the message has no reply channel.
    :raises ConsumeLater: another consumer created the session at the same
        moment (``CreateError``); the worker consumes the message again.
    """
    depth = getattr(message, _CHANNEL_DEPTH, None)
    if depth:
        setattr(message, _CHANNEL_DEPTH, depth + 1)
        try:
            yield message.channel_session  # type: ignore[attr-defined]
        finally:
            setattr(message, _CHANNEL_DEPTH, depth)
        return
    if message.reply_channel is None:
        raise ValueError(
            "No reply_channel sent with the message; channel_session only works "
            "with messages that have a reply_channel."
        )
    name = message.reply_channel.name
    with socket_locks.hold(name):
        # A session set on the message by other code (not by this scope) is
        # used as it is, as Channels 1.x did.
        session = getattr(message, "channel_session", None) if depth is None else None
        if session is None:
            session = session_for_reply_channel(name)
            # A websocket.disconnect of a socket that never had a session
            # (a refused handshake, say) creates none: nothing could read it.
            if (
                message.channel.name != "websocket.disconnect"
                and not session.keys()
                and not session.exists(session.session_key)
            ):
                try:
                    session.save(must_create=True)
                except CreateError:
                    raise ConsumeLater() from None
            message.channel_session = session  # type: ignore[attr-defined]
        track(session)
        setattr(message, _CHANNEL_DEPTH, 1)
        try:
            yield session
        finally:
            setattr(message, _CHANNEL_DEPTH, 0)
            save_if_changed(message.channel_session)  # type: ignore[attr-defined]


def channel_session(func: F) -> F:
    """
    Give the consumer ``message.channel_session``: a Django session keyed by
    the message's reply channel (see :func:`session_for_reply_channel`),
    created on first use and saved after the consumer -- even when it raises
    -- if it changed, nested values included.

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
    from chanserv.handler import AsgiRequest

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
            yield message.http_session  # type: ignore[attr-defined]
        finally:
            setattr(message, _HTTP_DEPTH, depth)
        return
    key = http_session_key(message)
    session = http_session_for_key(key) if key else None
    message.http_session = session  # type: ignore[attr-defined]
    setattr(message, _HTTP_DEPTH, 1)
    try:
        yield session
    except BaseException:
        setattr(message, _HTTP_DEPTH, 0)
        raise
    setattr(message, _HTTP_DEPTH, 0)
    # Whatever is there now: channel_and_http_session may have put it there.
    save_if_changed(message.http_session)  # type: ignore[attr-defined]


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
            http = message.http_session  # type: ignore[attr-defined]
            name = settings.SESSION_COOKIE_NAME
            if http is not None and name not in channel:
                channel[name] = http.session_key
            elif http is None and isinstance(channel.get(name), str):
                message.http_session = http_session_for_key(channel[name])  # type: ignore[attr-defined]
            return func(*args, **kwargs)

    return inner  # type: ignore[return-value]
