"""
The rules every layer inherits from ``chanserv.layers.base``: names,
capacity patterns, message preparation, and the constructor's checks.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest

from chanserv.exceptions import MessageTooLarge
from chanserv.layers import base
from chanserv.layers.base import BaseChannelLayer, random_string

valid = BaseChannelLayer.valid_channel_name
valid_group = BaseChannelLayer.valid_group_name


@pytest.mark.parametrize(
    "name",
    ["a", "http.request", "A-b_c.9", "a!", "a!b", "a!b.c-d_e", "a?b", "a?Bc-9.x", "x" * 99],
)
def test_valid_channel_names(name: str) -> None:
    """ASCII names of up to 99 characters with at most one ! or ? are valid channel names."""
    assert valid(name) is True


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 100,
        "a b",
        "ü",
        "café",
        "a!é",
        "a?é",
        "a!b!c",
        "a?b?c",
        "a!b?c",
        "a?b!c",
        "a?",
        "!a",
        "?a",
        "a/b",
        "a\n",
        "a!b\n",
        "a\x00",
        b"abc",
        1,
        None,
        ["a"],
    ],
)
def test_invalid_channel_names(name: object) -> None:
    """Empty, over-long, non-ASCII, doubly marked or non-str channel names raise TypeError."""
    with pytest.raises(TypeError):
        valid(name)


def test_receive_names_stop_at_the_bang() -> None:
    """Names to receive on may end in !, never go past it; ?-names are fine."""
    assert valid("a!", receive=True)
    assert valid("a?b", receive=True)
    with pytest.raises(TypeError):
        valid("a!b", receive=True)


def test_name_cache_keeps_no_name_made_for_one_connection() -> None:
    """
    Reply channels (``prefix!local``) and body channels (``name?part``) are
    new for every connection or request: the cache of names found valid
    keeps their prefix-free kin only, so it does not grow with traffic.
    """
    valid("cache.plain")
    valid("cache.prefix!", receive=True)
    sizes = len(base._valid_names), len(base._valid_receive_names)
    for _ in range(1000):
        local = "cache.prefix!" + random_string(16)
        assert valid(local)
        assert valid("cache.body?" + random_string(16))
        assert valid("cache.body?" + random_string(16), receive=True)
        with pytest.raises(TypeError):
            valid(local, receive=True)
    assert (len(base._valid_names), len(base._valid_receive_names)) == sizes
    assert "cache.plain" in base._valid_names
    assert "cache.prefix!" in base._valid_receive_names
    # Still checked every time, not let through by a cached prefix.
    for name in ("cache.prefix!é", "cache.prefix!a!b", "cache.prefix!" + "x" * 90, "cache.body?"):
        with pytest.raises(TypeError):
            valid(name)


def test_channel_name_lists() -> None:
    """valid_channel_names() wants a list or tuple of valid names; a str or bytes is refused."""
    assert BaseChannelLayer.valid_channel_names(["a", "b!"], receive=True)
    assert BaseChannelLayer.valid_channel_names(("a",))
    for names in ("abc", b"abc", 5, None):
        with pytest.raises(TypeError):
            BaseChannelLayer.valid_channel_names(names)
    with pytest.raises(TypeError):
        BaseChannelLayer.valid_channel_names(["a", "b!c"], receive=True)


@pytest.mark.parametrize("name", ["g", "chat.room-1_b", "x" * 99])
def test_valid_group_names(name: str) -> None:
    """ASCII group names of up to 99 letters, digits, dots, dashes, underscores are valid."""
    assert valid_group(name)


@pytest.mark.parametrize("name", ["", "x" * 100, "a!b", "a?b", "a!", "a b", "ü", "g\n", b"g", 1])
def test_invalid_group_names(name: object) -> None:
    """Group names empty, too long, with ! ? or space, non-ASCII or not str raise TypeError."""
    with pytest.raises(TypeError):
        valid_group(name)


def test_non_local_name() -> None:
    """non_local_name() cuts a reply channel after its !; other names are left whole."""
    assert BaseChannelLayer.non_local_name("a.b!cd") == "a.b!"
    assert BaseChannelLayer.non_local_name("a.b!") == "a.b!"
    assert BaseChannelLayer.non_local_name("a.b?cd") == "a.b?cd"
    assert BaseChannelLayer.non_local_name("a.b") == "a.b"


def test_random_string() -> None:
    """random_string() gives distinct 12-letter ASCII strings, or the length asked for."""
    values = {random_string() for _ in range(100)}
    assert len(values) == 100
    assert all(len(v) == 12 and v.isascii() and v.isalpha() for v in values)
    assert len(random_string(20)) == 20


def test_new_channel_pattern_rules() -> None:
    """new_channel() patterns must be ASCII str ending in one ?, short enough for 99 chars."""
    layer = BaseChannelLayer()
    layer._check_new_channel_pattern("x?")
    layer._check_new_channel_pattern("x" * 86 + "?")  # + 12 letters = 99
    for pattern in ("x" * 87 + "?", "x!", "x", "x!y?", "?", "é?", b"x?", None):
        with pytest.raises(TypeError):
            layer._check_new_channel_pattern(pattern)


def test_capacity_defaults_and_first_match() -> None:
    """get_capacity() takes the first channel_capacity pattern matching, else capacity."""
    layer = BaseChannelLayer(
        capacity=7,
        channel_capacity=OrderedDict(
            [
                ("http.request", 1),
                ("http.*", 2),
                (re.compile(r"^websocket\.(connect|receive)$"), 3),
                ("daphne.response*", 4),
                ("http.response", 99),
            ]
        ),
    )
    assert layer.get_capacity("http.request") == 1
    assert layer.get_capacity("http.response") == 2
    assert layer.get_capacity("http.request.body?abc") == 2
    assert layer.get_capacity("websocket.connect") == 3
    assert layer.get_capacity("websocket.disconnect") == 7
    # Patterns see the non-local name: every local name shares the prefix's.
    assert layer.get_capacity("daphne.response.AbC!xyz") == 4
    assert layer.get_capacity("daphne.response.AbC!") == 4
    assert layer.get_capacity("other") == 7
    assert layer.get_capacity("other") == 7  # cached


def test_capacity_cache_keeps_no_single_reader_names() -> None:
    """The capacity cache keeps ! prefixes but no per-reader ?-names, so it cannot grow."""
    layer = BaseChannelLayer(capacity=7, channel_capacity={"body?*": 2})
    for _ in range(100):
        assert layer.get_capacity("body?" + random_string(16)) == 2
        assert layer.get_capacity("reply!" + random_string(16)) == 7
    assert layer._capacity_cache == {"reply!": 7}


def test_capacity_pairs_keep_their_order() -> None:
    """channel_capacity given as pairs is matched in the order given."""
    layer = BaseChannelLayer(channel_capacity=[("a*", 1), ("ab", 2)])
    assert layer.get_capacity("ab") == 1
    layer = BaseChannelLayer(channel_capacity=[("ab", 2), ("a*", 1)])
    assert layer.get_capacity("ab") == 2


def test_glob_is_anchored() -> None:
    """A channel_capacity glob matches whole names only, not prefixes or suffixes."""
    layer = BaseChannelLayer(capacity=5, channel_capacity={"chat": 1})
    assert layer.get_capacity("chat") == 1
    assert layer.get_capacity("chatter") == 5
    assert layer.get_capacity("xchat") == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"expiry": 0},
        {"group_expiry": -1},
        {"capacity": 0},
        {"capacity": 1.5},
        {"max_message_size": 0},
        {"channel_capacity": {"a": 0}},
        {"channel_capacity": {"a": "3"}},
        {"channel_capacity": {5: 3}},
    ],
)
def test_constructor_refuses_bad_config(kwargs: dict[str, object]) -> None:
    """Non-positive expiries, capacities or sizes, or bad channel_capacity, are ValueError."""
    with pytest.raises(ValueError):
        BaseChannelLayer(**kwargs)  # type: ignore[arg-type]


def test_prepare_round_trip_keeps_types() -> None:
    """prepare() packs a message to bytes that unpack() restores, tuples as lists, fresh."""
    layer = BaseChannelLayer()
    message = {"s": "é", "b": b"\xc3\xa9", "l": [1, (2, 3)], "n": None, "f": 0.5, "t": True}
    data = layer.prepare(message)
    assert isinstance(data, bytes)
    assert layer.unpack(data) == dict(message, l=[1, [2, 3]])
    assert layer.unpack(data) is not layer.unpack(data)


@pytest.mark.parametrize(
    "message",
    [
        {"x": {1, 2}},
        {"x": object()},
        {"x": 2**64},
        {"x": -(2**63) - 1},
        {1: "x"},
        {"x": [{b"k": 1}]},
        {"__asgi_channel__": "a!b"},
        ["x"],
        "x",
        None,
    ],
)
def test_prepare_refuses(message: object) -> None:
    """prepare() refuses with TypeError what msgpack cannot carry or a message must not hold."""
    with pytest.raises(TypeError):
        BaseChannelLayer().prepare(message)


def test_prepare_size_limit() -> None:
    """prepare() raises MessageTooLarge for a message packed over max_message_size."""
    layer = BaseChannelLayer(max_message_size=100)
    layer.prepare({"b": b"x" * 90})
    with pytest.raises(MessageTooLarge):
        layer.prepare({"b": b"x" * 101})
    assert issubclass(BaseChannelLayer.MessageTooLarge, Exception)
