"""
The life of a WebSocket connection (chanserv.server.websocket's automat
machine): first the transition table itself, state by state, over a core
that records what the machine asks of it; then the paths through it that
only races reach, over the real protocol, the in-memory layer and a clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from automat import NoTransition
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chanserv.exceptions import ChannelFull
from chanserv.server.websocket import _LIFE, _OPEN
from tests.server.test_websocket import SlowLayer
from tests.server.wshelpers import CLOSE, TEXT, Harness, close_code, frame

# -- the table ---------------------------------------------------------------------------


class Core:
    """Stands for a WebSocketProtocol: records each output the machine runs."""

    path = "/chat"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        calls = self.calls

        class Factory:
            def log_action(self, action: str, protocol: Any) -> None:
                calls.append(("log", action))

        self.factory = Factory()

    def _stream_start(self) -> None:
        self.calls.append(("start",))

    def _stream_stop(self) -> None:
        self.calls.append(("stop",))

    def _send_connect(self) -> Deferred[Any]:
        self.calls.append(("send_connect",))
        return Deferred()

    def _enter_open(self) -> None:
        self.calls.append(("open",))

    def _refuse_now(self, code: int, reason: str, headers: Any = None) -> None:
        self.calls.append(("refuse", code))

    def _connect_refusal(self, failure: Failure) -> tuple[int, str]:
        return 503, "Connection queue at capacity"

    def _gone(self, code: int, was_open: bool) -> None:
        self.calls.append(("gone", code, was_open))

    def _check_handshake_timeout(self, now: float) -> None:
        self.calls.append(("handshake_timeout", now))

    def _check_connect_timeout(self, now: float) -> None:
        self.calls.append(("connect_timeout", now))

    def _check_close_timeout(self, now: float, since: float) -> None:
        self.calls.append(("close_timeout", now, since))

    def close(self, code: int) -> None:
        self.calls.append(("close", code))

    def _close_for_state_loss(self) -> None:
        self.calls.append(("close", 1012))

    def _cut(self) -> None:
        self.calls.append(("cut",))


FULL = Failure(ChannelFull())

#: How each state is reached from the start.
PATHS: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "upgrading": [],
    "handshaking": [("handshake", ())],
    "connecting": [("handshake", ()), ("connect_sent", ())],
    "open": [("handshake", ()), ("connect_sent", ()), ("opened", ())],
    "closing": [
        ("handshake", ()),
        ("connect_sent", ()),
        ("opened", ()),
        ("closing", (5.0,)),
    ],
    "refused": [("handshake", ()), ("connect_sent", ()), ("refuse", (403, "no", None))],
    "closed": [("handshake", ()), ("lost", (1006,))],
}


def replay(steps: list[tuple[str, tuple[Any, ...]]]) -> tuple[Any, Core]:
    core = Core()
    life = _LIFE(core)  # type: ignore[arg-type]
    for name, args in steps:
        getattr(life, name)(*args)
    core.calls.clear()
    return life, core


def state_after(steps: list[tuple[str, tuple[Any, ...]]]) -> str:
    """The state the inputs ``steps`` lead to, told by how it reacts."""
    life, core = replay(steps)
    try:
        life.tick(9.0)
    except NoTransition:
        life, core = replay(steps)
        try:
            life.lost(1000)
        except NoTransition:
            return "closed"
        return "open" if core.calls == [("gone", 1000, True)] else "refused"
    reaction = core.calls[0][0]
    if reaction == "connect_timeout":
        return "connecting"
    if reaction == "close_timeout":
        return "closing"
    life, _ = replay(steps)
    try:
        life.handshake()
    except NoTransition:
        return "handshaking"
    return "upgrading"


def test_the_paths_reach_their_states() -> None:
    """Each path in PATHS leads the WebSocket life machine to the state it is listed under."""
    for state, path in PATHS.items():
        assert state_after(path) == state


ANY_CLOSE = [("close", 1001)]

#: (state, input, its arguments, what the core is asked, the next state).
TABLE: list[tuple[str, str, tuple[Any, ...], list[tuple[Any, ...]], str]] = [
    ("upgrading", "handshake", (), [("send_connect",)], "handshaking"),
    ("upgrading", "refuse", (400, "bad", None), [("refuse", 400)], "refused"),
    ("upgrading", "tick", (9.0,), [("handshake_timeout", 9.0)], "upgrading"),
    ("upgrading", "shutdown", (1001,), [], "upgrading"),
    ("upgrading", "abort", (), [("cut",)], "upgrading"),
    ("upgrading", "lost", (1006,), [("gone", 1006, False)], "closed"),
    ("handshaking", "connect_sent", (), [("start",), ("log", "connecting")], "connecting"),
    ("handshaking", "connect_failed", (FULL,), [("stop",), ("refuse", 503)], "refused"),
    ("handshaking", "opened", (), [("open",)], "open"),
    ("handshaking", "refuse", (403, "no", None), [("refuse", 403)], "refused"),
    ("handshaking", "tick", (9.0,), [("handshake_timeout", 9.0)], "handshaking"),
    ("handshaking", "shutdown", (1001,), [("refuse", 503)], "refused"),
    ("handshaking", "state_lost", (), [("refuse", 503)], "refused"),
    ("handshaking", "abort", (), [("cut",)], "handshaking"),
    ("handshaking", "lost", (1006,), [("gone", 1006, False)], "closed"),
    ("connecting", "opened", (), [("open",)], "open"),
    ("connecting", "refuse", (403, "no", None), [("refuse", 403)], "refused"),
    ("connecting", "tick", (9.0,), [("connect_timeout", 9.0)], "connecting"),
    ("connecting", "shutdown", (1001,), [("refuse", 503)], "refused"),
    ("connecting", "state_lost", (), [("refuse", 503)], "refused"),
    ("connecting", "abort", (), [("cut",)], "connecting"),
    ("connecting", "lost", (1006,), [("gone", 1006, False)], "closed"),
    # Accepted before websocket.connect's send reported back (a race).
    ("open", "connect_sent", (), [("start",), ("log", "connecting")], "open"),
    ("open", "connect_failed", (FULL,), [("start",), ("log", "connecting")], "open"),
    ("open", "refuse", (403, "late", None), [], "open"),
    ("open", "closing", (5.0,), [], "closing"),
    ("open", "shutdown", (1001,), ANY_CLOSE, "open"),
    ("open", "state_lost", (), [("close", 1012)], "open"),
    ("open", "abort", (), [("cut",)], "open"),
    ("open", "lost", (1000,), [("gone", 1000, True)], "closed"),
    ("closing", "connect_sent", (), [("start",), ("log", "connecting")], "closing"),
    ("closing", "connect_failed", (FULL,), [("start",), ("log", "connecting")], "closing"),
    ("closing", "refuse", (403, "late", None), [], "closing"),
    ("closing", "tick", (9.0,), [("close_timeout", 9.0, 5.0)], "closing"),
    ("closing", "shutdown", (1001,), [], "closing"),
    ("closing", "state_lost", (), [], "closing"),
    ("closing", "abort", (), [("cut",)], "closing"),
    ("closing", "lost", (1000,), [("gone", 1000, True)], "closed"),
    ("refused", "connect_sent", (), [("start",), ("log", "connecting")], "refused"),
    ("refused", "connect_failed", (FULL,), [("stop",)], "refused"),
    ("refused", "refuse", (403, "again", None), [], "refused"),
    ("refused", "shutdown", (1001,), [], "refused"),
    ("refused", "state_lost", (), [], "refused"),
    ("refused", "abort", (), [("cut",)], "refused"),
    ("refused", "lost", (1006,), [("gone", 1006, False)], "closed"),
    # Gone while websocket.connect was on its way: the disconnect follows it.
    ("closed", "connect_sent", (), [("start",)], "closed"),
    ("closed", "connect_failed", (FULL,), [("stop",)], "closed"),
    ("closed", "refuse", (403, "late", None), [], "closed"),
    ("closed", "shutdown", (1001,), [], "closed"),
    ("closed", "state_lost", (), [], "closed"),
    ("closed", "abort", (), [], "closed"),
]


@pytest.mark.parametrize(
    ("state", "name", "args", "calls", "next_state"),
    TABLE,
    ids=["%s-%s" % (row[0], row[1]) for row in TABLE],
)
def test_transition(
    state: str, name: str, args: tuple[Any, ...], calls: list[tuple[Any, ...]], next_state: str
) -> None:
    """Each state answers each input with the outputs and the next state that TABLE lists."""
    life, core = replay(PATHS[state])
    getattr(life, name)(*args)
    assert core.calls == calls
    assert state_after([*PATHS[state], (name, args)]) == next_state


@pytest.mark.parametrize(
    ("state", "name", "args"),
    [
        ("upgrading", "connect_sent", ()),
        ("open", "handshake", ()),
        ("closed", "lost", (1006,)),
        ("refused", "opened", ()),
    ],
)
def test_impossible_inputs_are_refused(state: str, name: str, args: tuple[Any, ...]) -> None:
    """An input the machine never expects in a state raises NoTransition, not a silent guess."""
    # What autobahn and the protocol never do in that state: an error, not
    # a silent guess.
    life, _ = replay(PATHS[state])
    with pytest.raises(NoTransition):
        getattr(life, name)(*args)


# -- over the protocol: the paths races take -----------------------------------------------


def test_accept_before_the_connect_send_reports_back_holds_the_receives() -> None:
    """An accept before websocket.connect's send reports back opens; receives wait behind it."""
    h = Harness()
    slow = SlowLayer(h.layer)
    h.factory.layer = slow
    client = h.connect()
    connect = h.receive("websocket.connect")  # stored, its result not back yet
    assert connect is not None
    h.reply(connect["reply_channel"], {"accept": True})
    assert client.status() == 101
    client.text("early")
    assert h.receive_all("websocket.receive") == []  # behind websocket.connect
    slow.release()  # websocket.connect's result
    slow.release()
    assert [m["text"] for m in h.receive_all("websocket.receive")] == ["early"]
    assert h.access_log.actions == ["connected", "connecting"]


def test_shutdown_while_the_connect_send_is_out_is_503_and_still_disconnects() -> None:
    """Shutdown while websocket.connect is out refuses 503; a disconnect still follows it."""
    h = Harness()
    slow = SlowLayer(h.layer)
    h.factory.layer = slow
    client = h.connect()
    h.factory.close_all()
    assert client.status() == 503
    client.lose()
    slow.release()  # websocket.connect made it: the application must hear the end
    slow.release()
    assert [name for name, _ in h.consumer_messages()] == [
        "websocket.connect",
        "websocket.disconnect",
    ]
    assert h.factory.connections == set()


def test_client_gone_and_connect_failed_sends_no_disconnect() -> None:
    """A client gone before websocket.connect failed to send gets no websocket.disconnect."""
    h = Harness()
    slow = SlowLayer(h.layer)
    h.factory.layer = slow
    client = h.connect()
    client.lose()
    _, held = slow.held.pop(0)
    held.errback(ChannelFull())
    assert h.factory.connections == set()
    assert h.receive_all("websocket.disconnect") == []


@pytest.mark.parametrize("accepted", [False, True])
def test_state_loss_refuses_a_pending_handshake_and_closes_an_open_socket(accepted: bool) -> None:
    """A lost layer state refuses a pending handshake 503, closes an open socket 1012 once."""
    h = Harness()
    if accepted:
        client, _ = h.open()
    else:
        client = h.connect()
    client.protocol.layer_state_lost()
    if accepted:
        assert [(op, close_code(p)) for op, p in client.frames()] == [(CLOSE, 1012)]
        client.protocol.layer_state_lost()  # closing: nothing more
        assert len(client.frames()) == 1
    else:
        assert client.status() == 503


def test_client_close_is_answered_and_ends_in_disconnected() -> None:
    """A client close is answered 1000; websocket.disconnect carries the client's code."""
    h = Harness()
    client, _ = h.open()
    client.close(4000)
    assert [(op, close_code(p)) for op, p in client.frames()] == [(CLOSE, 1000)]
    h.factory.close_all(1001)  # closing: nothing more to send
    assert len(client.frames()) == 1
    client.lose()
    assert h.access_log.actions == ["connecting", "connected", "disconnected"]
    disconnect = h.receive("websocket.disconnect")
    assert disconnect is not None and disconnect["code"] == 4000


def test_abort_of_a_closed_connection_only_drops_what_it_holds() -> None:
    """abort_all drops the receives a closed socket still holds, yet sends its disconnect."""
    h = Harness(channel_capacity={"websocket.receive": 1})
    client, _ = h.open()
    client.send(b"".join(frame(TEXT, str(i).encode()) for i in range(3)))
    client.close()
    client.lose()
    assert h.factory.connections  # two messages held, then the disconnect
    h.factory.abort_all()
    assert len(h.receive_all("websocket.receive")) == 1
    disconnect = h.receive("websocket.disconnect")
    assert disconnect is not None and disconnect["order"] == 2
    assert h.factory.connections == set()


def test_text_while_connecting_accepts_then_sends_and_later_accepts_are_ignored() -> None:
    """Text before accept opens the socket and is sent; a later "accept": False is ignored."""
    h = Harness()
    client = h.connect()
    connect = h.expect("websocket.connect")
    h.reply(connect, {"text": "hi"})
    h.reply(connect, {"accept": False})  # open: not a refusal any more
    h.reply(connect, {"text": "again"})
    assert client.status() == 101
    assert client.frames() == [(TEXT, b"hi"), (TEXT, b"again")]


def test_the_transition_index_agrees_with_automat() -> None:
    """The indexed lookup gives automat's own transition for each pair, else NoTransition."""
    automaton: Any = _LIFE.__automat_automaton__
    for state, symbol, to, outputs in automaton.allTransitions():
        assert automaton.outputForInput(state, symbol) == (to, tuple(outputs))
    with pytest.raises(NoTransition):
        automaton.outputForInput(_OPEN, "handshake")


def test_an_idle_open_socket_holds_no_machine_nor_sender() -> None:
    """An idle open socket holds no machine or sender until an input or a message needs one."""
    h = Harness()
    client, _ = h.open()
    protocol = client.protocol
    assert "_machine" not in vars(protocol)
    assert protocol._receives is None
    client.text("one")  # the sender is made for the first message
    assert [m["text"] for m in h.receive_all("websocket.receive")] == ["one"]
    assert protocol._receives is not None
    h.factory.close_all(1001)  # an input: the machine is back, open
    assert [(op, close_code(p)) for op, p in client.frames()] == [(CLOSE, 1001)]
    client.lose()
    disconnect = h.expect("websocket.disconnect")
    assert (disconnect["code"], disconnect["order"]) == (1001, 2)
    assert h.access_log.actions == ["connecting", "connected", "disconnected"]


def test_an_idle_socket_that_never_spoke_still_disconnects_in_order() -> None:
    """An open socket that never spoke sends websocket.disconnect with order 1 when closed."""
    h = Harness()
    client, connect = h.open()
    client.close(1000)
    client.lose()
    disconnect = h.expect("websocket.disconnect")
    assert disconnect["reply_channel"] == connect["reply_channel"]
    assert (disconnect["code"], disconnect["order"]) == (1000, 1)
