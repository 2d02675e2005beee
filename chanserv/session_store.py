"""
Where the session of a reply channel is kept: the engine, the key, loading,
change tracking (nested changes included) and saving; it takes no locks.
Pool threads only: every function may touch the session store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase

from chanserv._compat.django import set_session_key
from chanserv.channel import Channel
from chanserv.exceptions import ConsumeLater
from chanserv.message import Message

__all__ = [
    "keyed_session",
    "open_channel_session",
    "reply_channel_name",
    "save_if_changed",
    "session_for_reply_channel",
    "track",
]

SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"

#: Marker on the Message: how deep :func:`open_channel_session` is nested now.
_CHANNEL_DEPTH = "_chanserv_channel_session_depth"
# Marker on a session: its serialised content when it was last loaded or saved.
_SNAPSHOT = "_chanserv_snapshot"


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
    The session of a reply channel (a name or a
    :class:`~chanserv.channel.Channel`), loaded.

    Its key is ``"chn"`` + the first 29 hex digits of the SHA-1 of the name
    (32 characters); the engine is ``CHANNEL_SESSION_ENGINE``, or
    ``SESSION_ENGINE`` when that is not set.  Nothing is written: the session
    may not exist in the store yet.

    :raises ValueError: the engine is (a subclass of) the signed-cookies one;
        the message names the setting to change.
    """
    name = reply_channel.name if isinstance(reply_channel, Channel) else reply_channel
    return keyed_session("chn", name)


def reply_channel_name(message: Message) -> str:
    """
    The name of ``message``'s reply channel, which keys its channel session.

    :raises ValueError: the message has none.
    """
    if message.reply_channel is None:
        raise ValueError(
            "No reply_channel sent with the message; channel_session only works "
            "with messages that have a reply_channel."
        )
    return message.reply_channel.name


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


@contextmanager
def open_channel_session(message: Message) -> Iterator[SessionBase]:
    """
    ``message.channel_session`` for the duration of the ``with`` block.  The
    caller holds the reply channel's turn in this process
    (:data:`chanserv.ordering.socket_locks`): the store is not transactional.

    The outermost block of a message loads the session (creating it with
    ``save(must_create=True)`` when it does not exist, except for a
    ``websocket.disconnect``), and on exit -- also when the block raises --
    saves it if it changed.  A nested block only yields the session.

    :raises ValueError: the message has no reply channel.
    :raises ConsumeLater: another consumer created the session at the same
        moment (``CreateError``); the worker consumes the message again.
    """
    depth = getattr(message, _CHANNEL_DEPTH, None)
    if depth:
        setattr(message, _CHANNEL_DEPTH, depth + 1)
        try:
            yield message.channel_session
        finally:
            setattr(message, _CHANNEL_DEPTH, depth)
        return
    name = reply_channel_name(message)
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
        message.channel_session = session
    track(session)
    setattr(message, _CHANNEL_DEPTH, 1)
    try:
        yield session
    finally:
        setattr(message, _CHANNEL_DEPTH, 0)
        save_if_changed(message.channel_session)
