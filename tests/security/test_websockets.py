"""
chanserv.security.websockets: which Origin headers are accepted, and that a
denied handshake gets {"close": True} before anything else runs.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import override_settings

from chanserv import Group
from chanserv.auth import channel_session_user_from_http
from chanserv.exceptions import DenyConnection
from chanserv.message import Message
from chanserv.security.websockets import (
    AllowedHostsOnlyOriginValidator,
    BaseOriginValidator,
    allowed_hosts_only,
    match_allowed_origin,
    parse_origin,
)
from tests.consumer_support import (  # noqa: F401
    db_fixture,
    layer_fixture,
    login_session,
    replies,
    reply_channel_name,
    run_consumer,
)

ALLOWED = ["good.example", ".sub.example", "xn--bcher-kva.example", "[::1]"]


def handshake(*origins: Any, headers: Any = None) -> Message:
    pairs = [[b"host", b"good.example"]]
    pairs += [[b"origin", o] for o in origins]
    content = {
        "reply_channel": "test.reply!abcdefabcdef",
        "path": "/ws/",
        "headers": pairs if headers is None else headers,
        "query_string": b"",
        "order": 0,
    }
    return Message(content, "websocket.connect", None)


def accepted(validator: type[BaseOriginValidator], message: Message) -> bool:
    ran = []
    decorated = validator(lambda m: ran.append(m))
    try:
        decorated(message)
    except DenyConnection:
        assert ran == []
        return False
    assert ran == [message]
    return True


@pytest.mark.parametrize(
    "origin,expected",
    [
        (b"http://good.example", True),
        (b"https://good.example", True),
        (b"https://good.example:8443", True),  # no port in ALLOWED_HOSTS: any port
        (b"HTTPS://GOOD.EXAMPLE", True),  # scheme and host are case-insensitive
        (b"https://good.example.", True),  # trailing dot: the same name
        (b"https://a.sub.example", True),
        (b"https://sub.example", True),
        (b"https://deep.a.sub.example", True),
        (b"https://xn--bcher-kva.example", True),  # an IDN, as browsers send it
        (b"http://[::1]:8000", True),
        (b"https://evil.example", False),
        (b"https://good.example.evil.com", False),  # suffix trick
        (b"https://evil-good.example", False),
        (b"https://evilgood.example", False),
        (b"https://notsub.example", False),
        (b"https://good.example..", False),
        (b"https://.good.example", False),
        (b"null", False),
        (b"", False),
        (b"   ", False),
        (b"https://good.example,https://evil.example", False),  # a list
        (b"https://evil.example,https://good.example", False),
        (b"https://good.example https://evil.example", False),
        (b"https://good.example/", False),  # an origin has no path
        (b"https://good.example/path", False),
        (b"https://user@good.example", False),
        (b"https://good.example@evil.example", False),
        (b"https://good.example:99999", False),
        (b"https://good.example:", False),
        (b"good.example", False),  # no scheme
        (b"something-invalid", False),
        ("https://bücher.example".encode(), False),  # non-ASCII bytes
        (b"https://good\x00.example", False),
        (b"https://good.example\x0b", False),
        (b"\xff\xfe", False),
    ],
)
@override_settings(ALLOWED_HOSTS=ALLOWED)
def test_allowed_hosts_only_origins(origin: bytes, expected: bool) -> None:
    """Only a well-formed origin whose host matches ALLOWED_HOSTS passes, any port allowed."""
    assert accepted(AllowedHostsOnlyOriginValidator, handshake(origin)) is expected


@override_settings(ALLOWED_HOSTS=ALLOWED)
def test_missing_origin_is_denied() -> None:
    """A handshake with no Origin header, or no headers at all, is denied."""
    assert not accepted(allowed_hosts_only, handshake())
    no_headers = Message({"reply_channel": "a!b", "path": "/"}, "websocket.connect", None)
    assert not accepted(allowed_hosts_only, no_headers)


@override_settings(ALLOWED_HOSTS=ALLOWED)
def test_two_origin_headers_are_denied() -> None:
    """Two Origin headers are denied, even when both are allowed."""
    assert not accepted(
        allowed_hosts_only, handshake(b"https://good.example", b"https://good.example")
    )
    assert not accepted(
        allowed_hosts_only, handshake(b"https://good.example", b"https://evil.example")
    )


@override_settings(ALLOWED_HOSTS=ALLOWED)
def test_header_name_case_and_legacy_dict_headers() -> None:
    """The Origin header is found in any case and in legacy dict-shaped headers."""
    upper = handshake(headers=[[b"Origin", b"https://good.example"]])
    assert accepted(allowed_hosts_only, upper)
    legacy = handshake(headers={"origin": b"https://good.example"})
    assert accepted(allowed_hosts_only, legacy)
    text = handshake(headers=[["origin", "https://evil.example"]])
    assert not accepted(allowed_hosts_only, text)


@override_settings(ALLOWED_HOSTS=["*"])
def test_star_allows_any_host_but_not_null() -> None:
    """ALLOWED_HOSTS ["*"] allows any host, but not a null or missing origin."""
    assert accepted(allowed_hosts_only, handshake(b"https://anything.example:1234"))
    assert not accepted(allowed_hosts_only, handshake(b"null"))
    assert not accepted(allowed_hosts_only, handshake())


@override_settings(ALLOWED_HOSTS=[], DEBUG=True)
def test_debug_with_no_allowed_hosts_allows_localhost() -> None:
    """With DEBUG and no ALLOWED_HOSTS, only localhost, 127.0.0.1 and [::1] are allowed."""
    assert accepted(allowed_hosts_only, handshake(b"http://localhost:8000"))
    assert accepted(allowed_hosts_only, handshake(b"http://127.0.0.1:8000"))
    assert accepted(allowed_hosts_only, handshake(b"http://[::1]"))
    assert not accepted(allowed_hosts_only, handshake(b"http://example.com"))


@override_settings(ALLOWED_HOSTS=[], DEBUG=False)
def test_no_allowed_hosts_allows_nothing() -> None:
    """With no ALLOWED_HOSTS and DEBUG off, every origin is denied."""
    assert not accepted(allowed_hosts_only, handshake(b"http://localhost"))


class PinnedOrigins(AllowedHostsOnlyOriginValidator):
    allowed_origins = ["https://good.example", "chat.example:8443", "wss://ws.example:9000"]


@pytest.mark.parametrize(
    "origin,expected",
    [
        (b"https://good.example", True),
        (b"https://good.example:443", True),  # the default port, written out
        (b"http://good.example", False),  # scheme mismatch
        (b"https://good.example:8443", False),  # port mismatch
        (b"https://chat.example:8443", True),
        (b"http://chat.example:8443", True),  # no scheme in the entry: any scheme
        (b"https://chat.example", False),  # port mismatch (443)
        (b"wss://ws.example:9000", True),
        (b"wss://ws.example", False),
        (b"https://ws.example:9000", False),
        (b"null", False),
    ],
)
def test_entries_with_scheme_and_port(origin: bytes, expected: bool) -> None:
    """allowed_origins entries with a scheme or port must match it; default ports count."""
    assert accepted(PinnedOrigins, handshake(origin)) is expected


def test_null_origin_only_when_explicitly_allowed() -> None:
    """A "null" origin passes only with allow_null_origin or "null" in allowed_origins."""

    class AllowNull(AllowedHostsOnlyOriginValidator):
        allow_null_origin = True

    class ListsNull(AllowedHostsOnlyOriginValidator):
        allowed_origins = ["null"]

    assert accepted(AllowNull, handshake(b"null"))
    assert accepted(ListsNull, handshake(b"null"))
    assert not accepted(ListsNull, handshake(b"https://good.example"))


def test_custom_validator() -> None:
    """A BaseOriginValidator subclass accepts or denies by what its validate_origin returns."""

    class OnlyHttps(BaseOriginValidator):
        def validate_origin(self, message: Message, origin: str) -> bool:
            parsed = parse_origin(origin)
            return parsed is not None and parsed.scheme == "https"

    assert accepted(OnlyHttps, handshake(b"https://anything.example"))
    assert not accepted(OnlyHttps, handshake(b"http://anything.example"))
    assert not accepted(OnlyHttps, handshake(b"null"))


def test_base_validator_must_be_subclassed() -> None:
    """BaseOriginValidator itself raises NotImplementedError when it validates."""
    with pytest.raises(NotImplementedError):
        BaseOriginValidator(lambda m: None)(handshake(b"https://good.example"))


def test_parse_and_match_helpers() -> None:
    """parse_origin lowercases and strips a trailing dot; a malformed pattern never matches."""
    origin = parse_origin("HTTPS://Good.Example.:8443")
    assert origin is not None
    assert (origin.scheme, origin.host, origin.port, origin.effective_port) == (
        "https",
        "good.example",
        8443,
        8443,
    )
    assert parse_origin("null") is None
    assert match_allowed_origin(origin, "GOOD.example.")
    assert not match_allowed_origin(origin, "not a pattern")
    assert not match_allowed_origin(origin, "https://good.example:70000")


@override_settings(ALLOWED_HOSTS=ALLOWED)
def test_validator_on_a_method() -> None:
    """allowed_hosts_only decorates a consumer method too, keeping its name."""

    class Consumer:
        def __init__(self) -> None:
            self.seen: list[Any] = []

        @allowed_hosts_only
        def connect(self, message: Message) -> None:
            self.seen.append(message)

    consumer = Consumer()
    good = handshake(b"https://good.example")
    consumer.connect(good)
    assert consumer.seen == [good]
    with pytest.raises(DenyConnection):
        consumer.connect(handshake(b"https://evil.example"))
    assert consumer.seen == [good]
    assert Consumer.connect.__name__ == "connect"


# -- denial happens before the session decorators and the consumer ---------------------------


@allowed_hosts_only
@channel_session_user_from_http
def ws_add(message: Message) -> None:
    message.reply_channel.send({"accept": True})  # type: ignore[union-attr]
    Group("chat").add(message.reply_channel)  # type: ignore[arg-type]


def cookie_handshake(reply: str, origin: bytes | None, key: str) -> dict[str, Any]:
    headers = [
        [b"host", b"good.example"],
        [b"cookie", ("%s=%s" % (settings.SESSION_COOKIE_NAME, key)).encode()],
    ]
    if origin is not None:
        headers.append([b"origin", origin])
    return {
        "reply_channel": reply,
        "path": "/",
        "headers": headers,
        "query_string": b"",
        "order": 0,
    }


@pytest.mark.usefixtures("db")
@override_settings(ALLOWED_HOSTS=ALLOWED)
@pytest.mark.parametrize(
    "origin", [b"https://evil.example", b"null", None, b"https://good.example.evil.com"]
)
def test_cross_site_hijack_is_refused_before_any_session_write(
    layer: Any, origin: bytes | None
) -> None:
    """A cross-site handshake is closed before session decorators or the consumer run."""
    from django.contrib.auth.models import User

    victim = User.objects.create(username="victim", password="raw$x")
    key = login_session(victim)
    reply = reply_channel_name()
    run_consumer(ws_add, "websocket.connect", cookie_handshake(reply, origin, key), layer)
    assert replies(layer, reply) == [{"close": True}]
    assert layer.group_channels("chat") == []
    assert list(Session.objects.values_list("session_key", flat=True)) == [key]


@pytest.mark.usefixtures("db")
@override_settings(ALLOWED_HOSTS=ALLOWED)
def test_same_site_handshake_is_accepted(layer: Any) -> None:
    """A same-site handshake with a session cookie reaches the consumer and is accepted."""
    from django.contrib.auth.models import User

    key = login_session(User.objects.create(username="alice", password="raw$x"))
    reply = reply_channel_name()
    content = cookie_handshake(reply, b"https://good.example", key)
    run_consumer(ws_add, "websocket.connect", content, layer)
    assert replies(layer, reply) == [{"accept": True}]
    assert layer.group_channels("chat") == [reply]


def test_get_header_is_the_1x_lookup() -> None:
    """``get_header`` returns ``[value]`` of the exactly named header, else KeyError as in 1.x."""
    validator = AllowedHostsOnlyOriginValidator(ws_add)
    message = handshake(b"http://example.com")
    assert validator.get_header(message, b"origin") == [b"http://example.com"]
    with pytest.raises(KeyError) as info:
        validator.get_header(message, b"x-missing")
    assert info.value.args == ("No header named \"b'x-missing'\"",)
