"""
The deployment examples of ``examples/deploy/`` (shown in docs/deployment.rst)
hold together: every supervisor and systemd command line is one ``twistd``
accepts (its own options, then chanserv's, parsed by the real option
classes with the Django and layer checks stubbed), the stop timeouts outlast
``--graceful-timeout``, and the nginx configuration proxies WebSockets to the
very address the interface node listens on.  nginx itself is not needed: its
configuration is read by a small tokenizer.  Main thread.
"""

from __future__ import annotations

import configparser
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions

from chanserv import tap
from chanserv.server.config import ServerConfig

DEPLOY = Path(__file__).resolve().parent.parent / "examples" / "deploy"
SUPERVISOR = DEPLOY / "supervisor" / "chanserv.conf"
SYSTEMD = DEPLOY / "systemd"
NGINX = DEPLOY / "nginx" / "mysite.conf"


# -- reading the files -------------------------------------------------------------------


def supervisor_programs() -> dict[str, configparser.SectionProxy]:
    """The ``[program:NAME]`` sections of the supervisord example, by NAME."""
    parser = configparser.RawConfigParser(comment_prefixes=(";", "#"), strict=True)
    parser.read_string(SUPERVISOR.read_text())
    return {
        name.split(":", 1)[1]: parser[name]
        for name in parser.sections()
        if name.startswith("program:")
    }


def systemd_service(name: str) -> dict[str, str]:
    """The ``[Service]`` section of a unit, ``\\``-continued lines joined."""
    section: dict[str, str] = {}
    current = None
    logical = re.sub(r"\\\n\s*", " ", (SYSTEMD / name).read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line
            continue
        if current == "[Service]":
            key, _, value = line.partition("=")
            section[key.strip()] = value.strip()
    return section


def parse_twistd(command: str, monkeypatch: pytest.MonkeyPatch) -> ServerOptions:
    """
    ``command`` (``/path/to/twistd ARGS``) parsed as twistd parses it,
    through chanserv's plugin, without importing the settings module or
    building the layer (``mysite`` does not exist here).
    """
    monkeypatch.setattr(tap.Options, "_setup_django", lambda self: None)
    monkeypatch.setattr(tap.Options, "_load_layer", lambda self: None)
    argv = shlex.split(command)
    assert Path(argv[0]).name == "twistd", command
    options = ServerOptions()
    options.parseOptions(argv[1:])
    assert options.subCommand == "chanserv", command
    return options


@dataclass
class Block:
    """One nginx directive: its name, arguments and (for a block) children."""

    name: str
    args: list[str]
    children: list[Block] = field(default_factory=list)

    def find(self, name: str) -> list[Block]:
        """The direct children called ``name``."""
        return [child for child in self.children if child.name == name]

    def walk(self) -> Iterator[Block]:
        """This directive and everything inside it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


_TOKEN = re.compile(r"""\s*(?:(#[^\n]*)|("[^"]*"|'[^']*')|([{};])|([^\s{};"'#]+))""")


def parse_nginx(text: str) -> Block:
    """
    An nginx configuration as a tree of :class:`Block` (quotes removed).

    :raises AssertionError: unbalanced braces or a directive without ``;``.
    """
    root = Block("", [])
    stack = [root]
    words: list[str] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match is not None, "cannot read %r" % (text[position : position + 40],)
        position = match.end()
        comment, quoted, punctuation, word = match.groups()
        if comment:
            continue
        if quoted is not None:
            words.append(quoted[1:-1])
        elif word is not None:
            words.append(word)
        elif punctuation == "{":
            block = Block(words[0], words[1:])
            stack[-1].children.append(block)
            stack.append(block)
            words = []
        elif punctuation == ";":
            assert words, "an empty directive"
            stack[-1].children.append(Block(words[0], words[1:]))
            words = []
        else:
            assert not words, "no ';' after %r" % (words,)
            stack.pop()
            assert stack, "unbalanced '}'"
    assert not words and len(stack) == 1, "unterminated block or directive"
    return root


def seconds(value: str) -> float:
    """An nginx time (``130s``, ``2m``, ``90``) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[unit]


def size(value: str) -> int:
    """An nginx size (``10m``, ``512k``, ``1024``) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmMgG])?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"k": 1024, "m": 1024**2, "g": 1024**3, None: 1}[unit and unit.lower()]


def interface_addresses(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """``host:port`` of every interface node the supervisor and systemd examples start."""
    commands = [
        supervisor_programs()["mysite-interface"]["command"],
        systemd_service("mysite-interface.service")["ExecStart"],
    ]
    found = set()
    for command in commands:
        config = parse_twistd(command, monkeypatch).subOptions["server_config"]
        for endpoint in config.endpoints:
            match = re.fullmatch(r"tcp:port=(\d+):interface=(.+)", endpoint)
            assert match, endpoint
            found.add("%s:%s" % (match.group(2), match.group(1)))
    return found


# -- supervisor and systemd ----------------------------------------------------------------

COMMANDS = [
    ("supervisor", "mysite-interface", "interface"),
    ("supervisor", "mysite-worker", "worker"),
    ("systemd", "mysite-interface.service", "interface"),
    ("systemd", "mysite-worker@.service", "worker"),
]


def command_and_stop_timeout(kind: str, name: str) -> tuple[str, float]:
    """The command line and the seconds the supervisor waits after SIGTERM."""
    if kind == "supervisor":
        program = supervisor_programs()[name]
        assert program["stopsignal"] == "TERM"
        return program["command"], float(program["stopwaitsecs"])
    service = systemd_service(name)
    assert service["KillSignal"] == "SIGTERM"
    return service["ExecStart"], float(service["TimeoutStopSec"])


@pytest.mark.parametrize("kind, name, mode", COMMANDS, ids=[c[1] for c in COMMANDS])
def test_every_command_is_one_twistd_accepts_in_the_foreground(
    kind: str, name: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each example command parses with twistd's and chanserv's options: foreground, stdout log."""
    command, _ = command_and_stop_timeout(kind, name)
    options = parse_twistd(command, monkeypatch)
    assert options["nodaemon"], "a supervised process must not daemonise (-n)"
    assert options["pidfile"] == "", "--pidfile= : no pid file"
    assert options["logfile"] == "-", "-l - : log to stdout for the supervisor"
    assert options.subOptions["mode"] == mode
    assert options.subOptions["settings"] == "mysite.settings"


@pytest.mark.parametrize("kind, name, mode", COMMANDS, ids=[c[1] for c in COMMANDS])
def test_the_supervisor_waits_longer_than_the_graceful_stop(
    kind: str, name: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stopwaitsecs / TimeoutStopSec outlast --graceful-timeout, so a drain is never killed."""
    command, stop_timeout = command_and_stop_timeout(kind, name)
    graceful = parse_twistd(command, monkeypatch).subOptions["graceful-timeout"]
    assert stop_timeout > graceful + 5, (stop_timeout, graceful)


def test_interface_nodes_listen_locally_behind_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both interface examples listen on 127.0.0.1:8000 only, trusting the proxy's headers."""
    assert interface_addresses(monkeypatch) == {"127.0.0.1:8000"}
    for command in (
        supervisor_programs()["mysite-interface"]["command"],
        systemd_service("mysite-interface.service")["ExecStart"],
    ):
        assert parse_twistd(command, monkeypatch).subOptions["server_config"].proxy_headers


def test_a_misspelt_option_in_a_command_would_be_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parsing above can fail: a misspelt chanserv option stops twistd with one line."""
    command = supervisor_programs()["mysite-worker"]["command"].replace("--threads", "--treads")
    with pytest.raises(SystemExit, match="did you mean '--threads'"):
        parse_twistd(command, monkeypatch)
    with pytest.raises(usage.UsageError):
        parse_twistd(command.replace("-n ", "--no-such-twistd-flag "), monkeypatch)


# -- nginx -------------------------------------------------------------------------------------


def nginx() -> Block:
    return parse_nginx(NGINX.read_text())


def proxied_locations(config: Block) -> list[Block]:
    """The ``location`` blocks that ``proxy_pass`` to chanserv."""
    return [
        block for block in config.walk() if block.name == "location" and block.find("proxy_pass")
    ]


def headers(location: Block) -> dict[str, str]:
    """``proxy_set_header NAME VALUE`` of a location, by lower-case NAME."""
    return {d.args[0].lower(): d.args[1] for d in location.find("proxy_set_header")}


def test_nginx_tokenizer_rejects_broken_configurations() -> None:
    """The nginx reader fails on a missing ';' or an unbalanced brace, so the checks can fail."""
    with pytest.raises(AssertionError):
        parse_nginx("server { listen 80 }")
    with pytest.raises(AssertionError):
        parse_nginx("server { listen 80; ")
    with pytest.raises(AssertionError):
        parse_nginx("listen 80; }")
    parsed = parse_nginx("server { listen 80; # a comment\n}")
    assert parsed.children[0].find("listen")[0].args == ["80"]


def test_nginx_upstream_is_the_interface_nodes_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """nginx's upstream servers are exactly where the supervisor and systemd interfaces listen."""
    config = nginx()
    [upstream] = [b for b in config.walk() if b.name == "upstream"]
    servers = {server.args[0] for server in upstream.find("server")}
    assert servers == interface_addresses(monkeypatch)
    locations = proxied_locations(config)
    assert locations
    for location in locations:
        assert location.find("proxy_pass")[0].args == ["http://%s" % upstream.args[0]]


def test_nginx_proxies_websockets() -> None:
    """Every proxied location speaks HTTP/1.1 upstream and passes Upgrade and Connection on."""
    config = nginx()
    [mapping] = [b for b in config.walk() if b.name == "map"]
    assert mapping.args == ["$http_upgrade", "$connection_upgrade"]
    values = {entry.name: entry.args for entry in mapping.children}
    assert values["default"] == ["upgrade"]
    for location in proxied_locations(config):
        assert location.find("proxy_http_version")[0].args == ["1.1"]
        sent = headers(location)
        assert sent["upgrade"] == "$http_upgrade"
        assert sent["connection"] == "$connection_upgrade"


def test_nginx_sets_the_headers_chanserv_trusts() -> None:
    """X-Forwarded-For is replaced (chanserv trusts its first address) and the scheme is sent."""
    for location in proxied_locations(nginx()):
        sent = headers(location)
        assert sent["x-forwarded-for"] == "$remote_addr"
        assert sent["x-forwarded-proto"] == "$scheme"
        assert sent["host"] == "$host"


def test_nginx_waits_longer_than_chanserv_and_takes_its_bodies() -> None:
    """proxy_read_timeout outlasts --http-timeout and pings; bodies up to --max-body-size pass."""
    defaults = ServerConfig()
    config = nginx()
    for location in proxied_locations(config):
        timeout = seconds(location.find("proxy_read_timeout")[0].args[0])
        assert timeout > defaults.http_timeout
        assert timeout > defaults.ping_interval + defaults.ping_timeout
    [body] = [b for b in config.walk() if b.name == "client_max_body_size"]
    assert defaults.max_body_size is not None
    assert size(body.args[0]) >= defaults.max_body_size


def test_nginx_terminates_tls_and_redirects_plain_http() -> None:
    """One server block listens with TLS and has a certificate; port 80 only redirects."""
    servers = [b for b in nginx().walk() if b.name == "server" and b.children]
    tls = [s for s in servers if any("ssl" in d.args for d in s.find("listen"))]
    assert len(tls) == 1
    assert tls[0].find("ssl_certificate") and tls[0].find("ssl_certificate_key")
    [plain] = [s for s in servers if s is not tls[0]]
    assert plain.find("return")[0].args[0] == "301"
    assert not proxied_locations(plain)
