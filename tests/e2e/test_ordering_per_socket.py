"""
End-to-end: in one ``twistd -n chanserv --threads 8`` process the messages of
one WebSocket are consumed one at a time, in their order, with no
``enforce_ordering`` and no session store; ``--no-ordering`` turns that off.

50 sockets each send 200 numbered texts as fast as they can to the e2e
project's ``/jitter/`` route (tests/e2e/project/e2eproj/jitter.py), whose
consumer echoes each one after 0-2 ms of random blocking work: two messages
of one socket running at the same time then come back out of order nearly
always, so the run without ordering shows what the default prevents.

The clients send in bursts far larger than the thread pool, so the layer's
channel capacity is 1,000 (as in the benchmarks): the worker parks at most
that many messages behind their sockets' messages in flight, and with the
default of 100 a few bursting sockets would fill that budget and keep the
other sockets' messages waiting in the layer, making the run slow.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from websockets.asyncio.client import connect

from tests.e2e.harness import TwistdProcess, free_port
from tests.e2e.tutorial_support import stop_cleanly

PROJECT = Path(__file__).parent / "project"
SOCKETS = 50
MESSAGES = 200
#: Seconds the whole exchange may take.
DEADLINE = 60.0


async def _one_socket(port: int, number: int) -> list[int]:
    """Send MESSAGES texts on one socket; the numbers echoed back, as received."""
    async with connect("ws://127.0.0.1:%d/jitter/" % port, open_timeout=10) as socket_:

        async def send_all() -> None:
            for n in range(MESSAGES):
                await socket_.send("%d %d" % (number, n))

        sending = asyncio.create_task(send_all())
        echoed = []
        for _ in range(MESSAGES):
            text = await socket_.recv()
            assert isinstance(text, str)
            sender, n = text.split()
            assert int(sender) == number, "a reply reached the wrong socket"
            echoed.append(int(n))
        await sending
    return echoed


def echo_from_many_sockets(port: int) -> list[list[int]]:
    async def all_sockets() -> list[list[int]]:
        return list(await asyncio.gather(*(_one_socket(port, i) for i in range(SOCKETS))))

    async def bounded() -> list[list[int]]:
        return await asyncio.wait_for(all_sockets(), DEADLINE)

    return asyncio.run(bounded())


def run_server(tmp_path: Path, *args: str) -> list[list[int]]:
    port = free_port()
    env = {"E2E_DB": str(tmp_path / "db.sqlite3"), "E2E_CAPACITY": "1000"}
    server = TwistdProcess(
        PROJECT, "e2eproj.settings", args=["--threads", "8", *args], port=port, env=env
    )
    with server:
        echoed = echo_from_many_sockets(port)
        stop_cleanly(server)
    return echoed


def test_each_socket_gets_its_replies_in_sending_order(tmp_path: Path) -> None:
    """By default each of 50 sockets gets its 200 replies in the order it sent them."""
    echoed = run_server(tmp_path)
    out_of_order = [i for i, numbers in enumerate(echoed) if numbers != list(range(MESSAGES))]
    assert out_of_order == [], "sockets %s got replies out of order" % out_of_order


def test_without_ordering_replies_can_come_back_out_of_order(tmp_path: Path) -> None:
    """With --no-ordering no reply is lost, but some socket gets replies out of order."""
    echoed = run_server(tmp_path, "--no-ordering")
    # Nothing lost, whatever the order.
    assert all(sorted(numbers) == list(range(MESSAGES)) for numbers in echoed)
    reordered = sum(numbers != list(range(MESSAGES)) for numbers in echoed)
    assert reordered > 0, (
        "with --no-ordering, 8 threads and 0-2 ms of random work per message, "
        "no socket of %d saw a reply overtake another" % SOCKETS
    )
