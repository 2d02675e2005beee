"""
Pins of every private name of Twisted, autobahn and Django that chanserv
uses (``chanserv._compat``; Twisted's HTTP/2 has its own pins in
``tests/server/test_tls_h2_pins.py``).

Each test checks that the name still exists and still does what chanserv
relies on; a failure names the dependency, its installed version and the
compat function to revisit, so an incompatible release fails here, clearly.
"""

from __future__ import annotations

import inspect
import io
import signal
import unittest
from importlib.metadata import version
from typing import Any

from django.core.signals import request_finished
from django.http import HttpResponse
from django.test import RequestFactory, SimpleTestCase
from twisted.internet import base as reactor_base
from twisted.internet.testing import StringTransport
from twisted.web import http

from chanserv._compat import autobahn as autobahn_compat
from chanserv._compat import automat as automat_compat
from chanserv._compat import django as django_compat
from chanserv._compat import twisted as twisted_compat
from tests.server.wshelpers import Harness


def pinned(condition: object, dependency: str, what: str, where: str) -> None:
    """Fail, naming ``dependency`` and its version, unless ``condition``."""
    assert condition, "%s %s: %s -- revisit %s" % (dependency, version(dependency), what, where)


# -- Twisted --------------------------------------------------------------------------


class RefusalRecorder(twisted_compat.HookedHTTPChannel):
    refused = 0

    def twisted_refused(self) -> None:
        self.refused += 1
        super().twisted_refused()


def _feed(data: bytes) -> tuple[RefusalRecorder, StringTransport]:
    channel = RefusalRecorder()
    channel.requestFactory = http.Request  # type: ignore[assignment]
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return channel, transport


def test_twisted_refuses_a_malformed_chunked_body_through_the_hooked_method() -> None:
    """Twisted refuses a malformed chunk via the hooked method, answering 400 and closing."""
    channel, transport = _feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    pinned(
        channel.refused == 1,
        "twisted",
        "a malformed chunk no longer reaches HTTPChannel._respondToBadRequestAndDisconnect",
        "chanserv._compat.twisted.HookedHTTPChannel",
    )
    pinned(
        transport.value().startswith(b"HTTP/1.1 400 ") and transport.disconnecting,
        "twisted",
        "HTTPChannel._respondToBadRequestAndDisconnect no longer answers 400 and closes",
        "chanserv._compat.twisted.HookedHTTPChannel.twisted_refused",
    )


def test_twisted_refuses_conflicting_framing_through_the_hooked_method() -> None:
    """Twisted refuses two Content-Length headers through the hooked refusal method."""
    channel, _ = _feed(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    )
    pinned(
        channel.refused == 1,
        "twisted",
        "two Content-Length headers no longer reach _respondToBadRequestAndDisconnect",
        "chanserv._compat.twisted.HookedHTTPChannel",
    )


def test_twisted_records_the_signal_that_stopped_the_reactor() -> None:
    """sigTerm records the signal in _exitSignal, which twistd reads and chanserv can forget."""

    class Reactor:
        _exitSignal = reactor_base.ReactorBase._exitSignal
        callFromThread = staticmethod(lambda f, *a: None)
        stop = None

    reactor = Reactor()
    reactor_base.ReactorBase.sigTerm(reactor, signal.SIGTERM)  # type: ignore[arg-type]
    pinned(
        reactor._exitSignal == signal.SIGTERM,
        "twisted",
        "ReactorBase.sigTerm no longer records the signal in _exitSignal",
        "chanserv._compat.twisted.forget_exit_signal",
    )
    from twisted.application import app

    pinned(
        "reactor._exitSignal" in inspect.getsource(app),
        "twisted",
        "twistd no longer reads reactor._exitSignal to re-raise the signal",
        "chanserv._compat.twisted.forget_exit_signal",
    )
    assert twisted_compat.forget_exit_signal(reactor, (signal.SIGTERM,))
    assert reactor._exitSignal is None
    assert not twisted_compat.forget_exit_signal(reactor, (signal.SIGTERM,))


def test_twisted_tcp_write_buffer_counters_say_when_nothing_waits() -> None:
    """A TCP transport's _tempDataLen and dataBuffer count what write() buffered, until doWrite."""
    import socket

    from twisted.internet import tcp

    left, right = socket.socketpair()
    left.setblocking(False)
    try:
        transport = tcp.Server.__new__(tcp.Server)
        abstract_init = tcp.Connection.__init__
        pinned(
            "_tempDataLen" in inspect.getsource(tcp.abstract.FileDescriptor.write)
            and "_writeDisconnected" in inspect.getsource(tcp.abstract.FileDescriptor.write),
            "twisted",
            "FileDescriptor.write no longer keeps _tempDataLen / checks _writeDisconnected",
            "chanserv._compat.twisted.write_now",
        )

        class Reactor:
            added: list[object] = []

            def addWriter(self, w: object) -> None:
                self.added.append(w)

            def removeWriter(self, w: object) -> None:
                pass

        abstract_init(transport, left, None, Reactor())  # type: ignore[arg-type]
        transport.connected = 1
        pinned(
            transport._tempDataLen == 0 and not transport.dataBuffer,
            "twisted",
            "a new TCP transport no longer starts with an empty _tempDataLen / dataBuffer",
            "chanserv._compat.twisted.write_now",
        )
        transport.write(b"buffered")
        pinned(
            transport._tempDataLen == len(b"buffered") and Reactor.added == [transport],
            "twisted",
            "write() no longer counts buffered bytes in _tempDataLen",
            "chanserv._compat.twisted.write_now",
        )
        # write_now sees the buffer and queues behind it: order holds.
        twisted_compat.write_now(transport, b"-after")
        assert transport._tempDataLen == len(b"buffered-after")
        transport.doWrite()
        assert right.recv(100) == b"buffered-after"
        pinned(
            transport._tempDataLen == 0 and not transport.dataBuffer,
            "twisted",
            "doWrite() no longer empties _tempDataLen / dataBuffer once all is sent",
            "chanserv._compat.twisted.write_now",
        )
        # Nothing waits now: write_now sends at once, registering no writer.
        Reactor.added.clear()
        twisted_compat.write_now(transport, b"direct")
        assert right.recv(100) == b"direct" and Reactor.added == []
    finally:
        left.close()
        right.close()


# -- autobahn -------------------------------------------------------------------------


def test_autobahn_keeps_the_handshake_key_only_until_the_101() -> None:
    """autobahn keeps the handshake key where chanserv finds it and forgets it after the 101."""
    h = Harness()
    client = h.connect()
    protocol: Any = client.protocol
    pinned(
        autobahn_compat.HANDSHAKE_KEY_ATTRIBUTE in protocol.__dict__,
        "autobahn",
        "the client's Sec-WebSocket-Key is no longer kept in %r"
        % (autobahn_compat.HANDSHAKE_KEY_ATTRIBUTE,),
        "chanserv._compat.autobahn.forget_handshake_key",
    )
    connect = h.receive("websocket.connect")
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True})
    assert client.status() == 101
    assert autobahn_compat.HANDSHAKE_KEY_ATTRIBUTE not in protocol.__dict__
    client.text("still works")
    assert [m["text"] for m in h.receive_all("websocket.receive")] == ["still works"]


# -- automat --------------------------------------------------------------------------


def test_automat_machines_look_transitions_up_in_a_dict() -> None:
    """automat keeps an automaton chanserv indexes, so transitions skip automat's scan."""
    from typing import Protocol as _Protocol

    from automat import NoTransition, TypeMachineBuilder

    class Inputs(_Protocol):
        def go(self) -> None: ...

    class Core:
        pass

    builder = TypeMachineBuilder(Inputs, Core)
    start = builder.state("start")
    end = builder.state("end")
    start.upon(Inputs.go).to(end).returns(None)
    built = builder.build()
    automaton: Any = getattr(built, automat_compat.AUTOMATON_ATTRIBUTE, None)
    pinned(
        automaton is not None
        and callable(getattr(automaton, "outputForInput", None))
        and callable(getattr(automaton, "allTransitions", None)),
        "automat",
        "a built TypeMachine no longer keeps an automaton with outputForInput "
        "and allTransitions in %r" % (automat_compat.AUTOMATON_ATTRIBUTE,),
        "chanserv._compat.automat.indexed",
    )
    looked_up: list[str] = []
    scan = automaton.outputForInput
    automaton.outputForInput = lambda state, symbol: (
        looked_up.append(symbol),
        scan(state, symbol),
    )[1]
    machine = automat_compat.indexed(built)
    # The table answers: automat's scan is not consulted for a known input...
    instance = machine(Core())
    instance.go()
    assert looked_up == []
    # ...and an input with no transition still gets automat's NoTransition.
    try:
        instance.go()
    except NoTransition:
        pass
    else:
        raise AssertionError("no NoTransition for an input without a transition")
    assert looked_up == ["go"]


# -- Django ---------------------------------------------------------------------------


class FormRequest(django_compat.StreamedRequest):
    def __init__(self, body: bytes) -> None:
        self.method = "POST"
        self.path = self.path_info = "/"
        self.META = {
            "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8",
            "CONTENT_LENGTH": str(len(body)),
        }
        self.parse_content_type()
        self.set_body(io.BytesIO(body))

    def transport_scheme(self) -> str:
        return "https"


def test_django_request_subclasses_provide_the_body_stream() -> None:
    """Django's HttpRequest takes content type, POST, scheme and read() from a subclass."""
    where = "chanserv._compat.django.StreamedRequest"
    request = FormRequest(b"a=1&b=2")
    pinned(
        request.content_type == "application/x-www-form-urlencoded",
        "django",
        "HttpRequest._set_content_type_params no longer sets content_type",
        where,
    )
    pinned(
        request.POST.dict() == {"a": "1", "b": "2"} and not request.FILES,
        "django",
        "HttpRequest._load_post_and_files no longer fills _post/_files from _stream",
        where,
    )
    pinned(
        request.scheme == "https", "django", "HttpRequest.scheme no longer asks _get_scheme", where
    )
    streamed = FormRequest(b"raw")
    pinned(
        streamed.read() == b"raw" and streamed._read_started,
        "django",
        "HttpRequest.read no longer reads _stream and sets _read_started",
        where,
    )


def test_django_runs_the_innermost_handler_step_through_get_response() -> None:
    """Django's load_middleware calls the handler's innermost step for every request."""
    seen: list[str] = []

    class Recorder(django_compat.Handler):
        def view_response(self, request: Any) -> Any:
            seen.append(request.path)
            return super().view_response(request)

    handler = Recorder()
    handler.load_middleware()
    response = handler.get_response(RequestFactory().get("/no-such-page/"))
    pinned(
        seen == ["/no-such-page/"],
        "django",
        "BaseHandler.load_middleware no longer calls _get_response innermost",
        "chanserv._compat.django.Handler",
    )
    assert response.status_code == 404
    response.close()


def test_django_sends_request_finished_from_the_response_handler_class() -> None:
    """Django's response close() sends request_finished from the handler class chanserv sets."""
    senders: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        senders.append(sender)

    request_finished.connect(receiver)
    try:
        response = HttpResponse()
        django_compat.set_response_handler(response, FormRequest)
        response.close()
    finally:
        request_finished.disconnect(receiver)
    pinned(
        senders == [FormRequest],
        "django",
        "HttpResponseBase.close no longer sends request_finished from _handler_class",
        "chanserv._compat.django.set_response_handler",
    )


def test_django_sessions_take_a_chosen_key() -> None:
    """A Django session given a chosen key by set_session_key saves under that key."""
    from django.contrib.sessions.backends.cache import SessionStore

    session = SessionStore(session_key="chn" + "0" * 29)
    session.keys()  # loads: an unknown key is forgotten
    assert session.session_key is None
    django_compat.set_session_key(session, "chn" + "0" * 29)
    session["x"] = 1
    session.save(must_create=True)  # as channel_session does for a new socket
    pinned(
        session.session_key == "chn" + "0" * 29 and session.exists("chn" + "0" * 29),
        "django",
        "SessionBase._session_key no longer sets the key a save writes",
        "chanserv._compat.django.set_session_key",
    )
    session.delete()


def test_django_test_cases_run_the_hooks_around_each_test() -> None:
    """SimpleTestCase runs the chanserv hooks before setUp and after tearDown."""
    events: list[str] = []

    class Case(django_compat.TestCaseHooks, SimpleTestCase):
        @classmethod
        def before_test_setup(cls) -> None:
            events.append("before setup")

        def setUp(self) -> None:
            events.append("setUp")

        def test_it(self) -> None:
            """The probe test's body; it records when it runs relative to the hooks."""
            events.append("test")

        def tearDown(self) -> None:
            events.append("tearDown")

        def before_test_teardown(self) -> None:
            events.append("before teardown")

    result = unittest.TestResult()
    Case("test_it")(result)
    assert result.wasSuccessful(), result.errors + result.failures
    pinned(
        events == ["before setup", "setUp", "test", "tearDown", "before teardown"],
        "django",
        "SimpleTestCase no longer runs _pre_setup before setUp and _post_teardown after "
        "tearDown (got %r)" % (events,),
        "chanserv._compat.django.TestCaseHooks",
    )


def test_django_signal_receivers_keep_their_dispatch_uid_and_connects_clear_the_cache() -> None:
    """ReceiverCheck sees exactly its receivers, and any connect or disconnect is noticed."""
    from django.dispatch import Signal

    signal = Signal(use_caching=True)
    signal.sender_receivers_cache = {}

    def ours(**kwargs: object) -> None:
        pass

    signal.connect(ours, dispatch_uid="ours", weak=False)
    check = django_compat.ReceiverCheck(signal, ["ours"])
    pinned(
        check.only_ours(),
        "django",
        "Signal.receivers entries no longer start with (dispatch_uid, sender id)",
        "chanserv._compat.django.ReceiverCheck",
    )
    signal.connect(lambda **kw: None, dispatch_uid="theirs", weak=False)
    pinned(
        not check.only_ours(),
        "django",
        "Signal.connect no longer clears sender_receivers_cache",
        "chanserv._compat.django.ReceiverCheck",
    )
    signal.disconnect(dispatch_uid="theirs")
    pinned(
        check.only_ours(),
        "django",
        "Signal.disconnect no longer clears sender_receivers_cache",
        "chanserv._compat.django.ReceiverCheck",
    )
    signal.connect(lambda **kw: None, sender=int, weak=False)
    assert not check.only_ours()  # a receiver for one sender counts too


def test_django_marks_the_atomic_blocks_a_test_case_opens() -> None:
    """Inside a TestCase only its own blocks are marked; a nested atomic block is not."""
    from django.db import transaction
    from django.test import TestCase

    from chanserv._compat.django import only_test_case_atomics
    from tests.consumer_support import _setup_databases

    _setup_databases()  # the shared test database, before this thread connects
    seen: list[tuple[bool, bool]] = []

    class Probe(TestCase):
        def test_it(self) -> None:
            """The probe test: is it inside only the test case's blocks, then in a nested one?"""
            outer = only_test_case_atomics("default")
            with transaction.atomic():
                seen.append((outer, only_test_case_atomics("default")))

    result = unittest.TestResult()
    unittest.TestSuite([Probe("test_it")]).run(result)  # setUpClass, then the test
    assert result.wasSuccessful(), result.errors + result.failures
    pinned(
        seen == [(True, False)],
        "django",
        "TestCase no longer marks its atomic blocks _from_testcase (got %r)" % (seen,),
        "chanserv._compat.django.only_test_case_atomics",
    )
    assert only_test_case_atomics("default") is False
