"""
Django authentication for channel consumers: the Channels 1.x decorators
that put the logged-in user on ``message.user``, copied from the HTTP
session on ``websocket.connect`` and read back from the channel session on
later messages.  Pool threads only (they touch the session store).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.base import SessionBase

from chanserv.message import Message, find_message
from chanserv.sessions import channel_and_http_session, channel_session, http_session

__all__ = [
    "channel_and_http_session_user_from_http",
    "channel_session_user",
    "channel_session_user_from_http",
    "http_session_user",
    "transfer_user",
]

F = TypeVar("F", bound=Callable[..., Any])

_AUTH_KEYS = (BACKEND_SESSION_KEY, SESSION_KEY, HASH_SESSION_KEY)


def transfer_user(from_session: SessionBase, to_session: SessionBase) -> None:
    """
    Copy the login (``_auth_user_id``, ``_auth_user_backend`` and
    ``_auth_user_hash``) from one session to another -- only when all three
    are there, so a partial login is never copied.
    """
    if all(key in from_session for key in _AUTH_KEYS):
        for key in _AUTH_KEYS:
            to_session[key] = from_session[key]


class _SessionRequest:
    """The request ``django.contrib.auth.get_user`` needs: only a session."""

    def __init__(self, session: Any) -> None:
        self.session = session


def _user_from(session: Any) -> Any:
    if session is None:
        # Imported here: auth's models need the app registry, which a module
        # that routing imports may not have yet.
        from django.contrib.auth.models import AnonymousUser

        return AnonymousUser()
    return auth.get_user(_SessionRequest(session))


def _set_user(message: Message, attribute: str) -> None:
    if not hasattr(message, attribute):
        raise ValueError("Did not see a %s to get auth from" % (attribute.replace("_", " "),))
    message.user = _user_from(getattr(message, attribute))


def _transfer(message: Any) -> None:
    # Connect: copy the HTTP login into the channel session.  A later message
    # carries no cookie (Channels 1.x gave AnonymousUser there); its user is
    # the one of the HTTP session brought back by channel_and_http_session,
    # else the one already in the channel session.
    if message.http_session is not None:
        transfer_user(message.http_session, message.channel_session)
        if not message.user.is_authenticated:
            message.user = _user_from(message.http_session)
    else:
        message.user = _user_from(message.channel_session)


def http_session_user(func: F) -> F:
    """
    :func:`~chanserv.sessions.http_session`, plus ``message.user``: the user
    logged in to that session, or ``AnonymousUser`` (no session, not logged
    in, or a login the password change invalidated).
    """

    @http_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        _set_user(find_message(args, "http_session_user"), "http_session")
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def channel_session_user(func: F) -> F:
    """
    :func:`~chanserv.sessions.channel_session`, plus ``message.user``: the
    user whose login was transferred into the channel session (see
    :func:`channel_session_user_from_http`), or ``AnonymousUser``.
    """

    @channel_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        _set_user(find_message(args, "channel_session_user"), "channel_session")
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def channel_session_user_from_http(func: F) -> F:
    """
    For ``websocket.connect``: :func:`http_session_user` and
    :func:`~chanserv.sessions.channel_session`, with the login transferred
    from the HTTP session into the channel session, where
    :func:`channel_session_user` finds it on the socket's later messages.
    Used on a message without the HTTP session (a receive), ``message.user``
    is the channel session's user rather than ``AnonymousUser``.
    """

    @http_session_user
    @channel_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        _transfer(find_message(args, "channel_session_user_from_http"))
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def channel_and_http_session_user_from_http(func: F) -> F:
    """
    :func:`channel_session_user_from_http` with
    :func:`~chanserv.sessions.channel_and_http_session`: on later messages
    ``message.http_session`` is the connect's HTTP session again.
    """

    @http_session_user
    @channel_and_http_session
    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        _transfer(find_message(args, "channel_and_http_session_user_from_http"))
        return func(*args, **kwargs)

    return inner  # type: ignore[return-value]
