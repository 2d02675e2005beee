"""
The private names of Django that chanserv uses (checked on Django 4.2.30 to
5.2.19, pinned by ``tests/test_compat_pins.py``): the request, handler,
response, session and test-case hooks that Django leaves to its handlers.
The request, handler and session helpers run in pool threads; the test-case
hooks in the test's own thread (any thread, no reactor).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Collection
from typing import IO, Any

from django import http
from django.contrib.sessions.backends.base import SessionBase
from django.core.handlers import base
from django.dispatch import Signal

__all__ = [
    "Handler",
    "ReceiverCheck",
    "StreamedRequest",
    "TestCaseHooks",
    "only_test_case_atomics",
    "set_response_handler",
    "set_session_key",
]


class StreamedRequest(http.HttpRequest):
    """
    An ``HttpRequest`` whose body is a file-like object, as Django's own
    request classes are.  A subclass builds ``META`` and ``method``, calls
    :meth:`parse_content_type`, then :meth:`set_body`; it may override
    :meth:`transport_scheme`.  Does not call ``HttpRequest.__init__`` (nor
    do Django's subclasses).
    """

    def parse_content_type(self) -> None:
        """Set ``content_type``, ``content_params`` and ``encoding`` from ``META``."""
        self._set_content_type_params(self.META)

    def set_body(self, stream: IO[bytes]) -> None:
        """Make ``stream`` (not read yet) the body that every reader reads."""
        self._stream = stream
        self._read_started = False

    @property
    def body_stream(self) -> IO[bytes]:
        """The body's file-like object (after ``body`` or ``POST``, a copy)."""
        stream: IO[bytes] = self._stream
        return stream

    def transport_scheme(self) -> str:
        """``http`` or ``https`` as the connection says (``scheme`` asks this)."""
        return "http"

    def _get_scheme(self) -> str:
        return self.transport_scheme()

    def _get_post(self) -> Any:
        if not hasattr(self, "_post"):
            self._load_post_and_files()
        return self._post

    def _set_post(self, post: Any) -> None:
        self._post = post

    def _get_files(self) -> Any:
        if not hasattr(self, "_files"):
            self._load_post_and_files()
        return self._files

    POST = property(_get_post, _set_post)
    FILES = property(_get_files)


class Handler(base.BaseHandler):
    """
    Django's ``BaseHandler`` with its innermost step,
    :meth:`view_response`, open to subclasses.
    """

    def view_response(self, request: http.HttpRequest) -> http.HttpResponseBase:
        """
        Resolve the URL, run the view middleware and the view, render a
        template response: Django's innermost handler step, inside every
        middleware.  Worker thread.
        """
        response: http.HttpResponseBase = super()._get_response(request)
        return response

    def _get_response(self, request: http.HttpRequest) -> http.HttpResponseBase:
        return self.view_response(request)


def set_response_handler(response: http.HttpResponseBase, handler_class: type) -> None:
    """Closing ``response`` sends ``request_finished`` from ``handler_class``."""
    response._handler_class = handler_class


def set_session_key(session: SessionBase, key: str) -> None:
    """Give ``session`` the key ``key`` (its next ``save`` writes that key)."""
    session._session_key = key


class _ClassOrInstanceMethod:
    """
    A method bound to the instance when looked up on one, else to the class:
    Django 5.2 runs ``TransactionTestCase._pre_setup`` on the class (once,
    eagerly, from ``setUpClass``) as well as on instances; Django 4.2 on
    instances only.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.__func__ = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return types.MethodType(self.__func__, obj if obj is not None else objtype)


class TestCaseHooks:
    """
    A mixin, before a Django test case class, whose class-level
    :meth:`before_test_setup` runs before Django's per-test setup (the test
    client, fixtures; then the user's ``setUp``), and
    :meth:`before_test_teardown` before Django's per-test teardown (after the
    user's ``tearDown``).  If Django's setup fails,
    :meth:`undo_before_test_setup` runs and the error propagates.
    """

    @classmethod
    def before_test_setup(cls) -> None:
        """Runs first, once per test (on Django 5.2, maybe from ``setUpClass``)."""

    @classmethod
    def undo_before_test_setup(cls) -> None:
        """Django's setup failed after :meth:`before_test_setup`."""

    def before_test_teardown(self) -> None:
        """Runs once per test, before Django's teardown."""

    @_ClassOrInstanceMethod
    def _pre_setup(target: Any) -> None:  # the class or an instance
        owner: Any = target if isinstance(target, type) else type(target)
        owner.before_test_setup()
        try:
            super()._pre_setup()  # type: ignore[misc]
        except BaseException:
            owner.undo_before_test_setup()
            raise

    def _post_teardown(self) -> None:
        self.before_test_teardown()
        super()._post_teardown()  # type: ignore[misc]


def only_test_case_atomics(using: str) -> bool:
    """
    Whether this thread's connection to database ``using`` is inside atomic
    blocks that a Django ``TestCase`` opened around the running test, and
    no others: what the test does there will never commit (the test case
    rolls it back), so an ``on_commit`` callback would never run.  Django
    marks those blocks ``_from_testcase`` (it allows a durable block inside
    them for the same reason).  Any thread.
    """
    from django.db import transaction

    blocks = transaction.get_connection(using).atomic_blocks
    return bool(blocks) and all(getattr(block, "_from_testcase", False) for block in blocks)


class ReceiverCheck:
    """
    Tells cheaply whether a ``Signal`` created with ``use_caching=True`` and
    a plain-dict ``sender_receivers_cache`` has exactly the receivers
    connected with ``dispatch_uids`` and no others -- so that its sender may
    call them directly instead of paying for ``Signal.send`` twice per
    consumed message.  Any thread.

    Uses Django's private layout of ``Signal.receivers`` (each entry starts
    with ``(dispatch_uid or id, sender id)``) and its clearing of
    ``sender_receivers_cache`` on every connect and disconnect, where the
    answer is remembered (pinned by ``tests/test_compat_pins.py``).
    """

    def __init__(self, signal: Signal, dispatch_uids: Collection[str]) -> None:
        self._signal = signal
        self._uids = sorted(dispatch_uids)
        self._key = object()  # never a sender: only this check stores it

    def only_ours(self) -> bool:
        """True when the receivers connected are exactly ours."""
        cache = self._signal.sender_receivers_cache
        known = cache.get(self._key)
        if known is None:
            with self._signal.lock:
                uids = sorted(str(entry[0][0]) for entry in self._signal.receivers)
                known = cache[self._key] = uids == self._uids
        return bool(known)
