"""
End-to-end tests of the tutorial's examples (examples/hello, echo, chat) and
of the interface server's back-pressure: real ``twistd -n chanserv``
processes, real sockets, each with its own SQLite file, migrated first as
the examples' READMEs say.

One server per example is shared by the tests of this module; the
back-pressure tests start their own, with their own flags.
"""

from __future__ import annotations

import errno
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.e2e.harness import REPO, TwistdProcess, free_port

EXAMPLES = REPO / "examples"
E2E_PROJECT = Path(__file__).parent / "project"
EXAMPLE_NAMES = ("hello", "echo", "chat")

#: Seconds any single network step may take before the test fails.
TIMEOUT = 10.0


def migrate(example: str, db: Path) -> None:
    """Run the example's ``manage.py migrate`` into ``db``, as its README says."""
    env = dict(os.environ, CHANSERV_EXAMPLE_DB=str(db), PYTHONPATH=str(REPO))
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py must pick its own
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0", "--no-input"],
        cwd=EXAMPLES / example,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def start_example(example: str, workdir: Path, args: tuple[str, ...] = ()) -> TwistdProcess:
    """Migrate a fresh database in ``workdir`` and start the example on a free port."""
    db = workdir / ("%s.sqlite3" % example)
    migrate(example, db)
    assert db.exists()
    proc = TwistdProcess(
        EXAMPLES / example,
        "%s.settings" % example,
        args=args,
        port=free_port(),
        env={"CHANSERV_EXAMPLE_DB": str(db)},
    )
    return proc.start()


def stop_cleanly(proc: TwistdProcess) -> None:
    """
    SIGTERM the process; it must shut down in order, without a traceback.

    The exit code is 0 or -SIGTERM: twistd ends by re-raising the signal
    that stopped it (``twisted.scripts.twistd.runApp``), which is Twisted's
    behaviour, not a failure.
    """
    code = proc.stop()
    out = proc.output()
    assert code in (0, -signal.SIGTERM), out
    assert "chanserv stopped" in out, out
    assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TwistdProcess]]:
    """The three examples, migrated and started side by side (it saves seconds)."""
    workdir = tmp_path_factory.mktemp("examples")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(start_example, name, workdir) for name in EXAMPLE_NAMES}
    started = {name: f.result() for name, f in futures.items() if f.exception() is None}
    try:
        for future in futures.values():
            future.result()  # raises the first start-up failure, if any
        yield started
        for proc in started.values():
            stop_cleanly(proc)
    finally:
        for proc in started.values():
            proc.__exit__()


@pytest.fixture
def hello(servers: dict[str, TwistdProcess]) -> TwistdProcess:
    return servers["hello"]


@pytest.fixture
def echo(servers: dict[str, TwistdProcess]) -> TwistdProcess:
    return servers["echo"]


@pytest.fixture
def chat(servers: dict[str, TwistdProcess]) -> TwistdProcess:
    return servers["chat"]


def request(
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = TIMEOUT,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a new connection: (status, lowercased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


def ws(port: int, path: str = "/chat/") -> ClientConnection:
    return connect("ws://127.0.0.1:%d%s" % (port, path), open_timeout=TIMEOUT)


# -- hello: the tutorial's http_consumer ------------------------------------


def test_hello_consumer_answers_every_path(hello: TwistdProcess) -> None:
    """The hello example answers any path with its decoded ASGI path, as UTF-8 HTML."""
    status, headers, body = request(hello.port, "/some/path")
    assert status == 200
    assert body == b"Hello world! You asked for /some/path"
    assert headers["content-type"] == "text/html; charset=utf-8"

    # The query string is not part of the ASGI path; percent-escapes are
    # decoded (ASGI paths are text) and the reply is UTF-8.
    status, _, body = request(hello.port, "/caf%C3%A9/?q=1", method="POST", body=b"x=1")
    assert status == 200
    assert body.decode("utf-8") == "Hello world! You asked for /café/"


def test_hello_keeps_the_connection_alive(hello: TwistdProcess) -> None:
    """The hello example answers several requests on one kept-alive HTTP connection."""
    conn = http.client.HTTPConnection("127.0.0.1", hello.port, timeout=TIMEOUT)
    try:
        for path in ("/one", "/two", "/"):
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == b"Hello world! You asked for " + path.encode()
    finally:
        conn.close()


# -- echo: the tutorial's ws_message echo -----------------------------------


def test_echo_page_is_served_by_a_django_view(echo: TwistdProcess) -> None:
    """The echo example's page is a Django view with a WebSocket client; other paths 404."""
    status, headers, body = request(echo.port, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b"new WebSocket(" in body
    assert b'id="messages"' in body
    # Django's URL resolver answers everything else.
    status, _, _ = request(echo.port, "/no/such/page/")
    assert status == 404


def test_echo_sends_every_message_back(echo: TwistdProcess) -> None:
    """The echo example returns each text or binary frame unchanged, empty or 70 kB."""
    with ws(echo.port) as socket:
        for message in ["hello world", "", "ünïcødé ✓", b"\x00\xff binary", b"", "x" * 70000]:
            socket.send(message)
            assert socket.recv(timeout=TIMEOUT) == message


def test_echo_sockets_do_not_see_each_other(echo: TwistdProcess) -> None:
    """The echo example answers each socket alone, never another socket."""
    with ws(echo.port, "/a/") as first, ws(echo.port, "/b/") as second:
        first.send("to first")
        second.send("to second")
        assert second.recv(timeout=TIMEOUT) == "to second"
        assert first.recv(timeout=TIMEOUT) == "to first"
        first.send("again")
        assert first.recv(timeout=TIMEOUT) == "again"
        # Had "again" gone to the second socket too, it would come first.
        second.send("ping")
        assert second.recv(timeout=TIMEOUT) == "ping"


# -- chat: the tutorial's Groups chat ----------------------------------------


def test_chat_page_is_served_by_a_django_view(chat: TwistdProcess) -> None:
    """The chat example's page is a Django view with its message list, input and socket."""
    status, headers, body = request(chat.port, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    for needle in (b'id="messages"', b'id="message-input"', b'id="send"', b"new WebSocket("):
        assert needle in body


def test_chat_clients_receive_each_others_messages(chat: TwistdProcess) -> None:
    """The chat example broadcasts each message to every socket, and goes on after a leave."""
    with ws(chat.port) as alice, ws(chat.port) as bob:
        alice.send("hi from alice")
        assert alice.recv(timeout=TIMEOUT) == "[user] hi from alice"
        assert bob.recv(timeout=TIMEOUT) == "[user] hi from alice"
        bob.send("hi from bob")
        assert bob.recv(timeout=TIMEOUT) == "[user] hi from bob"
        assert alice.recv(timeout=TIMEOUT) == "[user] hi from bob"
        bob.send("")
        assert alice.recv(timeout=TIMEOUT) == "[user] "
        assert bob.recv(timeout=TIMEOUT) == "[user] "

        # After alice leaves (ws_disconnect discards her), the group goes on.
        alice.close()
        with ws(chat.port) as carol:
            carol.send("hi from carol")
            assert bob.recv(timeout=TIMEOUT) == "[user] hi from carol"
            assert carol.recv(timeout=TIMEOUT) == "[user] hi from carol"


# -- back-pressure and timeouts (tests/e2e/project) --------------------------


def wait_for_file(path: Path, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "%s never appeared" % path
        time.sleep(0.02)


def release(gate: Path, timeout: float = TIMEOUT) -> bool:
    """
    Let ``gated_http`` go on: open its FIFO for writing and close it, as soon
    as the consumer has it open for reading.  False if it never does.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: nobody is reading the FIFO yet
                raise
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def test_full_request_channel_gives_503_and_serving_goes_on(tmp_path: Path) -> None:
    """
    One worker thread, ``http.request`` capacity 1: while a consumer holds
    the thread and one request waits in the channel, every other request is
    answered 503 at once; afterwards the server serves again.
    """
    markers = tmp_path / "markers"
    markers.mkdir()
    gate = markers / "gate"
    os.mkfifo(gate)
    env = {
        "E2E_DB": str(tmp_path / "db.sqlite3"),
        "E2E_CAPACITY": "1",
        "E2E_MARKER_DIR": str(markers),
    }
    port = free_port()
    args = ["--threads", "1"]
    with (
        TwistdProcess(E2E_PROJECT, "e2eproj.settings", args=args, port=port, env=env) as proc,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        try:
            held = pool.submit(request, port, "/gated/", timeout=60)
            wait_for_file(markers / "started")  # the only thread is now held
            others = [pool.submit(request, port, "/slow/?delay=0", timeout=60) for _ in range(6)]
            # One of the six fits in the channel and waits there; the other
            # five are refused without waiting for the thread.
            refused = []
            for future in as_completed(others, timeout=TIMEOUT):
                refused.append(future.result()[0])
                if len(refused) == 5:
                    break
            assert refused == [503] * 5
            assert not held.done()
        finally:
            released = release(gate)
        assert released, "the gated consumer never waited on its gate"
        assert held.result()[::2] == (200, b"released")
        assert sorted(f.result()[0] for f in others) == [200] + [503] * 5
        waiting = [f.result() for f in others if f.result()[0] == 200]
        assert waiting[0][2] == b"slept 0.0"
        # Serving goes on.
        assert request(port, "/hello/")[::2] == (200, b"Hello world")
        assert request(port, "/slow/?delay=0")[::2] == (200, b"slept 0.0")
        stop_cleanly(proc)


def test_consumer_slower_than_http_timeout_gives_503(tmp_path: Path) -> None:
    """A consumer slower than --http-timeout gets its client a 503; serving goes on after."""
    markers = tmp_path / "markers"
    markers.mkdir()
    gate = markers / "gate"
    os.mkfifo(gate)
    env = {"E2E_DB": str(tmp_path / "db.sqlite3"), "E2E_MARKER_DIR": str(markers)}
    port = free_port()
    args = ["--http-timeout", "1"]
    with TwistdProcess(E2E_PROJECT, "e2eproj.settings", args=args, port=port, env=env) as proc:
        try:
            # The consumer holds on until released; the client gets 503
            # after the timeout (plus at most one sweep interval).
            assert request(port, "/gated/", timeout=30)[0] == 503
            wait_for_file(markers / "started")
        finally:
            released = release(gate)
        assert released, "the gated consumer never waited on its gate"
        # Its late reply goes nowhere, harmlessly; the server goes on serving.
        assert request(port, "/hello/")[::2] == (200, b"Hello world")
        assert request(port, "/slow/?delay=0")[::2] == (200, b"slept 0.0")
        stop_cleanly(proc)
