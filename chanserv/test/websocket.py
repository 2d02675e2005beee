"""
:class:`WSClient`: a :class:`~chanserv.test.base.Client` that plays a
browser's WebSocket -- headers, cookies, the Django session and login, JSON
frames, ``order`` numbers -- with the signatures, defaults and messages
of Channels 1.x's (``headers`` a dict, ``query_string`` a str).  Runs in
the test's own thread (any thread), with no reactor.
"""

from __future__ import annotations

import copy
import hashlib
import json as json_module
import types
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings

from chanserv.channel import DEFAULT_CHANNEL_LAYER
from chanserv.sessions import session_for_reply_channel
from chanserv.test.base import Client
from chanserv.types import Content, ContentMapping, JSONValue

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.sessions.backends.base import SessionBase

__all__ = ["WSClient"]


def _channel_session_key(reply_channel: str) -> str:
    # The key chanserv.sessions.session_for_reply_channel gives the reply
    # channel's session, computed without loading it (no database needed).
    return "chn" + hashlib.sha1(reply_channel.encode("utf-8")).hexdigest()[:29]


def _encoded_cookies(cookies: Mapping[str, str]) -> bytes:
    """A ``Cookie`` header value: ``name=value; ...``, quoted where needed."""
    jar: SimpleCookie = SimpleCookie()
    for name, value in cookies.items():
        jar[name] = value
    return "; ".join(morsel.OutputString() for morsel in jar.values()).encode("latin-1")


class WSClient(Client):
    """
    A WebSocket client for tests.

    :param alias: the channel layer to use.
    :param ordered: give every message sent the next ``order`` (0, 1, 2...),
        for consumers under :func:`~chanserv.sessions.enforce_ordering`.
    """

    def __init__(self, alias: str = DEFAULT_CHANNEL_LAYER, *, ordered: bool = False) -> None:
        super().__init__(alias)
        self._ordered = ordered
        self._session: Any = None
        self._headers: dict[str, str | bytes] = {}
        self._cookies: dict[str, str] = {}
        self._session_cookie = True
        self.order = 0

    # -- headers and cookies ---------------------------------------------------

    def set_cookie(self, key: str, value: str) -> None:
        """Send cookie ``key`` with the messages."""
        self._cookies[key] = value

    def set_header(self, key: str, value: str | bytes) -> None:
        """
        Send header ``key`` with the messages, under the name as given (as
        Channels 1.x did); it replaces a header of the same name in any case.

        :raises ValueError: ``key`` is ``cookie`` (any case): use :meth:`set_cookie`.
        :raises TypeError: ``value`` is neither str nor bytes.
        """
        if key.lower() == "cookie":
            raise ValueError("Use set_cookie method for cookie header")
        if not isinstance(value, (str, bytes)):
            raise TypeError("header %r must be str or bytes, not %r" % (key, value))
        for name in [name for name in self._headers if name.lower() == key.lower()]:
            del self._headers[name]
        self._headers[key] = value

    def get_cookies(self) -> dict[str, str]:
        """
        The cookies the next message carries: those set, plus the session
        cookie (:attr:`session`'s key) until the first message is sent.
        """
        cookies = dict(self._cookies)
        if self._session_cookie and apps.is_installed("django.contrib.sessions"):
            if self._session is not None:
                key = self._session.session_key
            else:
                key = _channel_session_key(self.reply_channel)
            if key:
                cookies[settings.SESSION_COOKIE_NAME] = key
        return cookies

    @property
    def headers(self) -> dict[str, str | bytes]:
        """
        The headers the next message carries, ``{name: value}`` as Channels
        1.x sent them: those set, and ``cookie`` (bytes, empty when there is
        no cookie to send).
        """
        headers = copy.deepcopy(self._headers)
        headers.setdefault("cookie", _encoded_cookies(self.get_cookies()))
        return headers

    # -- the session and logging in ----------------------------------------------

    @property
    def session(self) -> SessionBase:
        """
        The Django session the session cookie names: at first the reply
        channel's (:func:`~chanserv.sessions.session_for_reply_channel`,
        created in the store if it is not there yet, so the channel session
        of the consumers can be prepared here), after :meth:`login` the
        logged-in one.

        :raises OSError: ``django.contrib.sessions`` is not installed.
        """
        if not apps.is_installed("django.contrib.sessions"):
            raise OSError("Add django.contrib.sessions to the INSTALLED_APPS to use session")
        if self._session is None:
            session = session_for_reply_channel(self.reply_channel)
            if not session.exists(session.session_key):
                # Stored now, so that writing to it and saving works (a
                # save() of a session missing from the store fails).
                session.save(must_create=True)
            self._session = session
        return self._session

    def login(self, **credentials: Any) -> bool:
        # Any: the credentials go to django.contrib.auth.authenticate unchanged; each
        # authentication backend takes its own.
        """
        Log in with ``django.contrib.auth.authenticate(**credentials)``, as
        the HTTP session the WebSocket's handshake carries.  Call it before
        the first message.  Returns False if the credentials are wrong, the
        user is inactive or sessions are not installed.
        """
        from django.contrib.auth import authenticate

        user = authenticate(**credentials)
        if user is not None and user.is_active and apps.is_installed("django.contrib.sessions"):
            self._login(user)
            return True
        return False

    def force_login(self, user: AbstractBaseUser, backend: str | None = None) -> None:
        """Log ``user`` in without credentials (``backend``: the first of ``AUTHENTICATION_BACKENDS``)."""
        if backend is None:
            backend = settings.AUTHENTICATION_BACKENDS[0]
        user.backend = backend
        self._login(user)

    def _login(self, user: Any) -> None:
        from django.contrib.auth import login

        request = types.SimpleNamespace(session=self.session, META={})
        login(request, user)
        self.session.save()

    # -- messages ----------------------------------------------------------------

    def _get_content(
        self, content: ContentMapping | None = None, text: JSONValue = None, path: str = "/"
    ) -> Content:
        """
        The message :meth:`send` sends, as Channels 1.x built it: ``content``
        (its keys win), then ``reply_channel``, ``path`` and, when ``path``
        has a ``?query``, ``query_string`` (a str); ``headers`` as a dict
        (:attr:`headers`); the next ``order`` when ``ordered``; ``text``
        (anything but a str as JSON).
        """
        message = copy.deepcopy(dict(content or {}))
        message.setdefault("reply_channel", self.reply_channel)
        if "?" in path:
            path, query = path.split("?", 1)
            message.setdefault("path", path)
            message.setdefault("query_string", query)
        else:
            message.setdefault("path", path)
        message.setdefault("headers", self.headers)
        if self._ordered:
            if "order" in message:
                raise ValueError('Do not use "order" manually with "ordered=True"')
            message["order"] = self.order
            self.order += 1
        if text is None:
            text = message.get("text")
        if text is not None:
            message["text"] = text if isinstance(text, str) else json_module.dumps(text)
        return message

    def send(
        self,
        to: str,
        content: ContentMapping | None = None,
        text: JSONValue = None,
        path: str = "/",
    ) -> None:
        """
        Send a message to channel ``to`` as Channels 1.x's test client did.

        :param content: keys to send (they win over the ones added here).
        :param text: the frame's text; anything but a str is sent as JSON.
        :param path: the path, with an optional ``?query`` that becomes the
            ``query_string`` of a ``websocket.connect`` (and is dropped from
            other messages, which carry none).
        :raises ValueError: ``order`` given while ``ordered``.

        A ``websocket.disconnect`` also carries ``code`` (1000 unless given),
        as the server's does.
        """
        if to != "websocket.connect" and "?" in path:
            path = path.split("?", 1)[0]
        message = self._get_content(content, text, path)
        if to == "websocket.disconnect":
            message.setdefault("code", 1000)
        self.channel_layer.send(to, message)
        self._session_cookie = False

    def send_and_consume(  # type: ignore[override]
        self,
        channel: str,
        content: ContentMapping | None = None,
        text: JSONValue = None,
        path: str = "/",
        fail_on_none: bool = True,
        check_accept: bool = True,
    ) -> Any:
        # Any: the result is whatever the project's consumer returned (Channels 1.x API).
        """:meth:`send`, then :meth:`consume` the message."""
        self.send(channel, content, text, path)
        return self.consume(channel, fail_on_none=fail_on_none, check_accept=check_accept)

    def consume(self, channel: str, fail_on_none: bool = True, check_accept: bool = True) -> Any:
        # Any: the result is whatever the project's consumer returned (Channels 1.x API).
        """
        :meth:`Client.consume <chanserv.test.base.Client.consume>`; after a
        ``websocket.connect``, with ``check_accept``, the first reply must
        be ``{"accept": True}`` (it is taken off the reply channel).

        :raises AssertionError: the connection was not accepted.
        """
        result = super().consume(channel, fail_on_none=fail_on_none)
        if channel == "websocket.connect" and check_accept:
            received = self.receive(json=False)
            if received != {"accept": True}:
                raise AssertionError("Connection rejected: %s != '{accept: True}'" % (received,))
        return result

    def receive(self, json: bool = True) -> JSONValue:
        """
        The next reply: its ``text`` (JSON-decoded unless ``json`` is False),
        or the whole message when it has no text (``{"accept": True}``,
        ``{"bytes": ...}``, ``{"close": ...}``), or None when there is none
        (or it is empty).
        """
        content = super().receive()
        if not content:
            return None
        if json and isinstance(content.get("text"), str):
            return json_module.loads(content["text"])
        return content.get("text", content)
