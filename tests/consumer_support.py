"""
Support for the tests of the consumer decorators (sessions, auth, origins):
a real database, a real in-memory layer, and consumers run the way the
worker runs them -- between ``consumer_started`` and ``consumer_finished``,
with ``DenyConnection``, ``ChannelSocketException`` and ``ConsumeLater``
handled as the worker does.

Import the fixtures ``db`` and ``layer`` into a test module to use them::

    from tests.consumer_support import db_fixture, layer_fixture  # noqa: F401
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends import db as db_backend
from django.contrib.sessions.backends.base import CreateError

from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.exceptions import ChannelSocketException, ConsumeLater, DenyConnection
from chanserv.layers import InMemoryChannelLayer
from chanserv.layers.base import random_string
from chanserv.message import Message
from chanserv.signals import consumer_finished, consumer_started

_databases: list[Any] = []
_databases_lock = threading.Lock()


def _setup_databases() -> None:
    from django.test.utils import setup_databases

    with _databases_lock:
        if not _databases:
            _databases.append(setup_databases(verbosity=0, interactive=False))


@pytest.fixture(name="db")
def db_fixture() -> Iterator[None]:
    """The test database (sqlite in memory, migrated once), emptied after each test."""
    from django.contrib.auth.models import User
    from django.contrib.sessions.models import Session

    _setup_databases()
    yield
    Session.objects.all().delete()
    User.objects.all().delete()


@pytest.fixture(name="layer")
def layer_fixture() -> Iterator[ChannelLayerWrapper]:
    """A fresh in-memory layer, also installed as the "default" alias."""
    wrapper = ChannelLayerWrapper(InMemoryChannelLayer(), "default", [])
    previous = channel_layers.set("default", wrapper)
    yield wrapper
    channel_layers.set("default", previous)


def reply_channel_name() -> str:
    """A reply channel name like the interface server's: ``prefix!local``."""
    return "test.reply%s!%s" % (random_string(6), random_string(12))


def run_consumer(
    consumer: Any, channel: str, content: dict[str, Any], layer: Any, **kwargs: Any
) -> Message:
    """
    Run ``consumer`` on a message as the worker does and return the Message.
    Other exceptions propagate, after ``consumer_finished``.
    """
    message = Message(content, channel, layer)
    consumer_started.send(sender=None, environ={})
    try:
        consumer(message, **kwargs)
    except DenyConnection:
        if channel != "websocket.connect" or message.reply_channel is None:
            raise
        message.reply_channel.send({"close": True})
    except ChannelSocketException as e:
        e.run(message)
    except ConsumeLater:
        requeued = dict(content)
        requeued["__retries__"] = requeued.get("__retries__", 0) + 1
        layer.send(channel, requeued)
    finally:
        consumer_finished.send(sender=None)
    return message


def receive_all(layer: Any, channel: str) -> list[dict[str, Any]]:
    """Every message waiting on ``channel`` (a ``prefix!`` for replies)."""
    received = []
    while True:
        name, content = layer.receive([channel], block=False)
        if name is None:
            return received
        received.append(content)


def replies(layer: Any, reply_channel: str) -> list[dict[str, Any]]:
    """Every message waiting for the reply channel ``prefix!local``."""
    prefix = reply_channel[: reply_channel.index("!") + 1]
    return receive_all(layer, prefix)


def login_session(user: Any) -> str:
    """Save a database session logged in as ``user``; return its key."""
    session = db_backend.SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    key: str = session.session_key
    return key


class SessionStore(db_backend.SessionStore):
    """
    A database session engine (``CHANNEL_SESSION_ENGINE = "tests.consumer_support"``)
    whose creations fail with ``CreateError`` while :attr:`fail_create` is set,
    as when another consumer created the same session at the same moment.
    """

    fail_create = False

    def save(self, must_create: bool = False) -> None:
        if must_create and SessionStore.fail_create:
            raise CreateError()
        super().save(must_create=must_create)
