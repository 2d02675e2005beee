"""
TLS that browsers accept, end to end: the chat example in a real ``twistd
-n chanserv`` process listening on ``-e ssl:...`` with a self-signed
certificate made by the ``openssl`` command.

- ``curl`` with its default ALPN (``h2``, ``http/1.1``) gets 200 over
  https, as HTTP/2; ``--http1.1`` still gets HTTP/1.1;
- what the HTTP/1.1 side refuses (a lowercase method, ``%00`` in the path,
  an oversized header, a body over ``--max-body-size``) gets the same 4xx
  over HTTP/2, and the access log says which protocol carried it;
- headless Chromium loads the chat page over ``https://`` (HTTP/2) and chats
  over ``wss://`` (HTTP/1.1) in two tabs.

``curl`` and ``openssl`` are Debian's (``apt-get install curl openssl``);
Chromium is ``/usr/bin/chromium``, as in test_browser.py.  Without them the
tests fail -- they are not skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.harness import TwistdProcess, free_port
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, chat_in_two_tabs
from tests.e2e.test_examples import EXAMPLES, migrate, stop_cleanly

#: The example's request body limit for these tests.
MAX_BODY = 64 * 1024


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s is missing: apt-get install %s" % (name, name), pytrace=False)
    return path


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a certificate for localhost and 127.0.0.1, made by ``openssl``."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            _tool("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


class TLSServer:
    """The chat example on a TLS endpoint."""

    def __init__(self, proc: TwistdProcess, port: int) -> None:
        self.proc = proc
        self.port = port
        self.base = "https://127.0.0.1:%d" % port

    def wait_for_tls(self, timeout: float = 30.0) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost"):
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def curl(self, path: str, *args: str) -> tuple[int, str, bytes]:
        """``(status, HTTP version, body)`` of one ``curl`` request to ``path``."""
        result = subprocess.run(
            [
                _tool("curl"),
                "--silent",
                "--show-error",
                "--insecure",
                "--max-time",
                "20",
                "--output",
                "-",
                "--write-out",
                "\n%{http_code} %{http_version}",
                *args,
                self.base + path,
            ],
            capture_output=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        body, _, trailer = result.stdout.rpartition(b"\n")
        status, version = trailer.decode().split()
        return int(status), version, body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    workdir = tmp_path_factory.mktemp("tls")
    key, cert = self_signed(workdir)
    db = workdir / "chat.sqlite3"
    migrate("chat", db)
    port = free_port()
    endpoint = "ssl:port=%d:interface=127.0.0.1:privateKey=%s:certKey=%s" % (port, key, cert)
    proc = TwistdProcess(
        EXAMPLES / "chat",
        "chat.settings",
        args=["-e", endpoint, "--access-log=-", "--max-body-size=%d" % MAX_BODY],
        env={"CHANSERV_EXAMPLE_DB": str(db)},
    )
    try:
        proc.start()
        tls = TLSServer(proc, port)
        tls.wait_for_tls()
        yield tls
        stop_cleanly(proc)
    finally:
        proc.__exit__()


def test_curl_with_default_alpn_gets_the_page_over_http2(server: TLSServer) -> None:
    """Over TLS, curl's default ALPN gets the page over HTTP/2, access-logged as such."""
    status, version, body = server.curl("/")
    assert (status, version) == (200, "2")
    assert b"<title>chanserv chat</title>" in body
    assert '"GET / HTTP/2" 200' in server.proc.output()


def test_curl_http2_and_http11(server: TLSServer) -> None:
    """The TLS endpoint serves HTTP/2 or HTTP/1.1, whichever the client asks for by ALPN."""
    assert server.curl("/", "--http2")[:2] == (200, "2")
    assert server.curl("/", "--http1.1")[:2] == (200, "1.1")
    assert '"GET / HTTP/1.1" 200' in server.proc.output()


@pytest.mark.parametrize(
    ("path", "args", "status"),
    [
        ("/", ("--request", "get"), 400),
        ("/a%00b", (), 400),
        ("/", ("--header", "X-Big: " + "a" * 20000), 431),
        ("/", ("--data-binary", "@-"), 413),
    ],
    ids=["lowercase-method", "nul-in-path", "header-too-large", "body-too-large"],
)
@pytest.mark.parametrize("protocol", ["--http2", "--http1.1"])
def test_refusals_are_the_same_over_http2_and_http11(
    server: TLSServer, path: str, args: tuple[str, ...], status: int, protocol: str, tmp_path: Path
) -> None:
    """Bad requests get the same status over HTTP/2 as over HTTP/1.1; serving goes on."""
    if args == ("--data-binary", "@-"):
        big = tmp_path / "big.bin"
        big.write_bytes(b"x" * (MAX_BODY + 1))
        args = ("--data-binary", "@%s" % big)
    got, version, _ = server.curl(path, protocol, *args)
    assert got == status
    assert version == ("2" if protocol == "--http2" else "1.1")
    # The server keeps serving both.
    assert server.curl("/", protocol)[0] == 200


def test_http2_refusals_are_access_logged(server: TLSServer) -> None:
    """A request refused over HTTP/2 is access-logged with its status, with no traceback."""
    server.curl("/a%00b", "--http2")
    assert '"GET /a%00b HTTP/2" 400' in server.proc.output()
    assert "Traceback" not in server.proc.output()


def launch_chromium(playwright: Any) -> Browser:
    """Debian's Chromium, headless, accepting the self-signed certificate."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("%s is missing: apt-get install chromium" % CHROMIUM, pytrace=False)
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--ignore-certificate-errors"]
    )


def test_browser_chats_over_https_and_wss(server: TLSServer, tmp_path: Path) -> None:
    """Chromium loads the page over h2 and chats over wss:// in two tabs."""
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(ignore_https_errors=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server.base + "/")
            protocol = page.evaluate(
                "performance.getEntriesByType('navigation')[0].nextHopProtocol"
            )
            assert protocol == "h2"
            context.close()
            chat_in_two_tabs(browser, server.base + "/", server.proc, tmp_path)
        finally:
            browser.close()
    out = server.proc.output()
    assert out.count('"WSCONNECT /chat/"') >= 2
    assert "Traceback" not in out
