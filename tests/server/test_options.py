"""Command-line options and ServerConfig validation."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.python import usage

from chanserv.server.config import DEFAULT_ENDPOINT, ServerConfig
from chanserv.server.options import ServerOptionsMixin, server_config_from_options


class Options(ServerOptionsMixin, usage.Options):
    optParameters = [
        ["graceful-timeout", None, 30.0, "As chanserv's own Options.", float]
    ] + ServerOptionsMixin.server_parameters
    optFlags = list(ServerOptionsMixin.server_flags)

    def postOptions(self) -> None:
        self["server_config"] = server_config_from_options(self)


def parse(*argv: str) -> ServerConfig:
    options = Options()
    options.parseOptions(list(argv))
    config: ServerConfig = options["server_config"]
    return config


def test_defaults() -> None:
    """No options: 127.0.0.1:8000, 120 s HTTP, 20/30 s pings, the access log in the process log."""
    config = parse()
    assert config == ServerConfig(access_log="-")
    assert config.endpoints == (DEFAULT_ENDPOINT,)
    assert config.endpoints == ("tcp:port=8000:interface=127.0.0.1",)
    assert (config.http_timeout, config.websocket_timeout) == (120, 86400)
    assert (config.websocket_connect_timeout, config.websocket_handshake_timeout) == (5, 5)
    assert (config.ping_interval, config.ping_timeout) == (20, 30)
    assert config.ws_protocols == ()
    assert config.http_send_queue_size == config.ws_send_queue_size == 1024 * 1024
    assert config.root_path == "" and not config.proxy_headers
    assert config.access_log == "-"  # on by default, into the process log


def test_access_log_can_be_turned_off_or_sent_to_a_file() -> None:
    """--no-access-log turns the access log off; --access-log=PATH sends it to a file."""
    assert parse("--no-access-log").access_log is None
    assert parse("--access-log", "/var/log/access.log").access_log == "/var/log/access.log"


@pytest.mark.parametrize(
    "argv,endpoints",
    [
        (["-p", "9000"], ["tcp:port=9000:interface=127.0.0.1"]),
        (["-b", "0.0.0.0"], ["tcp:port=8000:interface=0.0.0.0"]),
        (["--bind", "[::1]", "--port", "8001"], ["tcp:port=8001:interface=\\:\\:1"]),
        (["-b", "::"], ["tcp:port=8000:interface=\\:\\:"]),
        (["-b", "localhost"], ["tcp:port=8000:interface=localhost"]),
        (["-e", "tcp:8002"], ["tcp:8002"]),
        (["-e", "tcp:8002", "--endpoint", "unix:/tmp/x.sock"], ["tcp:8002", "unix:/tmp/x.sock"]),
        (["-e", "tcp:8002", "-p", "8003"], ["tcp:8002", "tcp:port=8003:interface=127.0.0.1"]),
        (["-u", "/run/a:b.sock"], ["unix:/run/a\\:b.sock"]),
    ],
)
def test_endpoints(argv: list[str], endpoints: list[str]) -> None:
    """-p, -b, -u and -e build endpoint strings, IPv6 and colons escaped, -e ones first."""
    assert list(parse(*argv).endpoints) == endpoints


def test_fd_endpoint() -> None:
    """--fd N listens on an inherited socket as the endpoint fd:fileno=N."""
    with socket.socket() as sock:
        config = parse("--fd", str(sock.fileno()))
        assert config.endpoints == ("fd:fileno=%d" % sock.fileno(),)


def test_all_knobs() -> None:
    """Every server option reaches its ServerConfig field; sizes take K/M, -1 means no limit."""
    config = parse(
        "-t",
        "60",
        "--websocket-timeout",
        "-1",
        "--websocket-connect-timeout",
        "7",
        "--websocket-handshake-timeout",
        "3",
        "--ping-interval",
        "0",
        "--ping-timeout",
        "9",
        "--ws-protocol",
        "graphql-ws",
        "--ws-protocol",
        "chat, superchat",
        "--root-path",
        "/app",
        "--proxy-headers",
        "--access-log",
        "-",
        "--max-body-size",
        "2M",
        "--max-ws-message-size",
        "512K",
        "--max-ws-frame-size",
        "65536",
        "--ws-receive-full-timeout",
        "12",
        "--http-send-queue-size",
        "256K",
        "--header-timeout",
        "4",
        "--body-timeout",
        "8",
        "--idle-timeout",
        "16",
        "--graceful-timeout",
        "2.5",
    )
    assert config.http_timeout == 60
    assert config.websocket_timeout is None
    assert config.websocket_connect_timeout == 7
    assert config.websocket_handshake_timeout == 3
    assert config.ping_interval == 0
    assert config.ping_timeout == 9
    assert config.ws_protocols == ("graphql-ws", "chat", "superchat")
    assert config.root_path == "/app"
    assert config.proxy_headers
    assert config.access_log == "-"
    assert config.max_body_size == 2 * 1024 * 1024
    assert config.max_ws_message_size == 512 * 1024
    assert config.max_ws_frame_size == 65536
    assert config.ws_receive_full_timeout == 12
    assert config.http_send_queue_size == 256 * 1024
    assert (config.header_timeout, config.body_timeout, config.idle_timeout) == (4, 8, 16)
    assert config.graceful_timeout == 2.5


def test_root_path_trailing_slash_is_dropped() -> None:
    """--root-path drops a trailing slash, so / becomes the empty root path."""
    assert parse("--root-path", "/app/").root_path == "/app"
    assert parse("--root-path", "/").root_path == ""


def test_no_body_limit() -> None:
    """--max-body-size -1 turns the request body limit off (None)."""
    assert parse("--max-body-size", "-1").max_body_size is None


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--http-timeout", "0"], "--http-timeout"),
        (["--http-timeout", "soon"], "http-timeout"),
        (["--websocket-timeout", "-2"], "--websocket-timeout"),
        (["--websocket-connect-timeout", "0"], "--websocket-connect-timeout"),
        (["--ping-interval", "-1"], "--ping-interval"),
        (["--max-body-size", "0"], "--max-body-size"),
        (["--max-body-size", "lots"], "max-body-size"),
        (["--http-send-queue-size", "0"], "--http-send-queue-size"),
        (["--root-path", "app"], "--root-path"),
        (["--ws-protocol", "bad/token"], "--ws-protocol"),
        (["--graceful-timeout", "-1"], "--graceful-timeout"),
        (["-p", "70000"], "--bind/--port"),
        (["-b", "fe80::zz"], "--bind/--port"),
        (["-e", "nonsense:1"], "--endpoint"),
        (["-e", "ssl:443:privateKey=/nonexistent.pem"], "--endpoint"),
        (["--fd", "-3"], "--fd"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], flag: str) -> None:
    """A bad option value is a UsageError whose message names the offending flag."""
    with pytest.raises(usage.UsageError) as error:
        parse(*argv)
    assert flag in str(error.value)


def test_config_checks_itself() -> None:
    """ServerConfig validates its fields on construction and on replace."""
    with pytest.raises(ValueError, match="endpoints"):
        ServerConfig(endpoints=())
    with pytest.raises(ValueError, match="endpoints"):
        ServerConfig(endpoints="tcp:80")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="body_chunk_size"):
        ServerConfig(body_chunk_size=0)
    with pytest.raises(ValueError, match="http_timeout"):
        ServerConfig(http_timeout=True)  # type: ignore[arg-type]
    config = ServerConfig(ws_protocols=["a"])  # type: ignore[arg-type]
    assert config.ws_protocols == ("a",)
    assert config.replace(http_timeout=5).http_timeout == 5
    with pytest.raises(ValueError):
        config.replace(http_timeout=-5)


def test_help_lists_the_flags() -> None:
    """The --help text lists the endpoint and WebSocket protocol flags."""
    text: Any = str(Options())
    for flag in ("--endpoint", "--bind", "--port", "--unix-socket", "--fd", "--ws-protocol"):
        assert flag in text
