"""``hosts`` and ``connection_kwargs`` of the Redis layer: the dict entries
of channels_redis, Redis Sentinel included, and the default timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from chanserv.layers.redis import RedisChannelLayer
from chanserv.layers.redis.config import (
    DEFAULT_OPTIONS,
    RedisAddress,
    SentinelAddress,
    connection_options,
    parse_hosts,
)

SENTINELS = [("10.0.0.1", 26379), ("10.0.0.2", 26379)]


def test_sentinel_entry() -> None:
    """A sentinel entry parses to a SentinelAddress whose str() leaves the passwords out."""
    (address,) = parse_hosts(
        [
            {
                "sentinels": SENTINELS,
                "master_name": "mymaster",
                "sentinel_kwargs": {"password": "spw", "socket_timeout": 0.5},
                "db": 2,
                "password": "mpw",
            }
        ]
    )
    assert address == SentinelAddress(
        master_name="mymaster",
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379)),
        db=2,
        password="mpw",
        sentinel_password="spw",
        sentinel_timeout=0.5,
    )
    assert str(address) == "sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/2"
    assert "pw" not in str(address)


def test_sentinel_entry_takes_login_defaults_from_connection_kwargs() -> None:
    """connection_kwargs give the master's login, ssl and db; sentinels get no password."""
    (address,) = parse_hosts(
        [{"sentinels": [["h", 26379]], "master_name": "m"}],
        {"password": "pw", "username": "u", "ssl": True, "db": 1},
    )
    assert isinstance(address, SentinelAddress)
    assert (address.password, address.username, address.tls, address.db) == ("pw", "u", True, 1)
    assert address.sentinel_password is None  # as redis-py: sentinels have their own
    assert str(address) == "sentinel://h:26379/m/1?ssl=true"


def test_one_sentinel_entry_is_one_shard() -> None:
    """Each sentinel entry is one shard of the ring, alongside plain redis:// URLs."""
    hosts = [
        {"sentinels": SENTINELS, "master_name": "a"},
        {"sentinels": SENTINELS, "master_name": "b"},
        "redis://h3",
    ]
    layer = RedisChannelLayer(hosts=hosts)
    assert layer.ring_size == 3
    assert [str(a) for a in layer.hosts][2] == "redis://h3:6379/0"


def test_plain_dict_entries() -> None:
    """Dicts with an 'address' URL or 'host'/'port' parse to RedisAddress, plus db/password."""
    addresses = parse_hosts(
        [
            {"address": "redis://:pw@h1:7000/3"},
            {"address": "redis://h2", "db": 4, "password": "x"},
            {"host": "h3", "port": 7003, "ssl": True},
            {"host": "h4"},
        ]
    )
    assert addresses == [
        RedisAddress("h1", 7000, db=3, password="pw"),
        RedisAddress("h2", 6379, db=4, password="x"),
        RedisAddress("h3", 7003, tls=True),
        RedisAddress("h4", 6379),
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"sentinels": SENTINELS}, "'master_name' must be a non-empty string"),
        ({"master_name": "m"}, "'sentinels' must be a non-empty list"),
        ({"master_name": "m", "sentinels": []}, "'sentinels' must be a non-empty list"),
        ({"master_name": "m", "sentinels": "h:26379"}, "'sentinels' must be a non-empty list"),
        ({"master_name": "m", "sentinels": [("h", "26379")]}, "(host, port) pairs"),
        (
            {"master_name": "m", "sentinels": SENTINELS, "sentinel_kwargs": {"sock": 1}},
            "sentinel_kwargs of m has unknown keys sock",
        ),
        (
            {"master_name": "m", "sentinels": SENTINELS, "socket_timeout": 1},
            "unknown keys socket_timeout",
        ),
        ({"address": "unix:///tmp/s"}, "only redis:// and rediss://"),
        ({"host": "h", "port": "6379"}, "'port' an int"),
        ({"port": 6379}, "needs 'address', 'host' or 'sentinels'"),
    ],
)
def test_bad_dict_entries(entry: dict[str, Any], message: str) -> None:
    """A malformed host dict (missing, unknown or mistyped keys) is a ValueError saying why."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_hosts([entry])


def test_passwords_are_masked_in_errors() -> None:
    """The ValueError for a bad host dict shows its password as '***', never in clear."""
    with pytest.raises(ValueError) as raised:
        parse_hosts([{"host": "h", "password": "hunter2", "bogus": 1}])
    assert "hunter2" not in str(raised.value)
    assert "'password': '***'" in str(raised.value)


def test_a_dict_is_no_list_of_hosts() -> None:
    """hosts given as one dict instead of a list is refused with a ValueError."""
    with pytest.raises(ValueError, match="must be a list"):
        parse_hosts({"sentinels": SENTINELS, "master_name": "m"})


def test_default_timeouts() -> None:
    """
    The defaults keep a frozen server's detection (reply timeout plus two
    sweeps at most 0.5 s apart) and a reconnection once it is back (the
    back-off cap, plus jitter, plus HostnameEndpoint's 0.3 s tick for a
    refused connection) each under 5 s with margin.
    """
    options = connection_options(None)
    assert options["socket_timeout"] == DEFAULT_OPTIONS["socket_timeout"] == 2.5
    assert options["reconnect_max_delay"] == 2.0
    assert options["socket_timeout"] + 2 * 0.5 <= 3.5
    assert options["reconnect_max_delay"] + 0.1 + 0.3 <= 2.5
    layer = RedisChannelLayer()
    assert (layer.reply_timeout, layer.reconnect_max_delay) == (2.5, 2.0)
