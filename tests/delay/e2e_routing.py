"""
Consumers of tests/e2e/test_delay.py, run by the worker pool of a real
twistd: ``GET /delay/?ms=<delay>&tag=<tag>`` sends a message through
``asgi.delay`` to ``delay.arrived``, whose consumer appends what arrived,
with the time, to the file named by ``E2E_DELAY_LOG``.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs

from chanserv import Channel, route
from chanserv.message import Message


def schedule(message: Message) -> None:
    """Send ``tag`` through asgi.delay, ``ms`` milliseconds late; answer 200."""
    query = parse_qs(message.content["query_string"].decode("ascii"))
    Channel("asgi.delay").send(
        {
            "channel": "delay.arrived",
            "content": {"tag": query["tag"][0], "sent": time.time()},
            "delay": int(query["ms"][0]),
        },
        immediately=True,
    )
    message.reply_channel.send(
        {"status": 200, "headers": [[b"content-type", b"text/plain"]], "content": b"queued"}
    )


def arrived(message: Message) -> None:
    """Append the message, with the time it arrived, to $E2E_DELAY_LOG."""
    line = json.dumps(dict(message.content, arrived=time.time()))
    with open(os.environ["E2E_DELAY_LOG"], "a") as f:
        f.write(line + "\n")


channel_routing = [
    route("http.request", schedule, path=r"^/delay/$"),
    route("delay.arrived", arrived),
]
