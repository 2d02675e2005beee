"""
Where the delay server runs: in the service tree twistd chanserv builds
(--mode=all and --mode=worker, when chanserv.delay is installed), and in
manage.py rundelay, which refuses a layer that cannot cross processes.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command, get_commands
from django.test.utils import override_settings

from chanserv import tap
from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.delay.management.commands.rundelay import Command
from chanserv.delay.service import DelayService
from chanserv.delay.worker import build_delay_service
from chanserv.layers import InMemoryChannelLayer
from chanserv.server.config import ServerConfig
from chanserv.service import LayerService
from chanserv.testing import ClockReactor
from chanserv.threads import WorkerPool


def build(mode: str) -> tuple[ChannelLayerWrapper, list[Any]]:
    wrapper = ChannelLayerWrapper(InMemoryChannelLayer(), "default", [])
    root = tap.build_service(
        ClockReactor(),
        mode=mode,
        channel_layer=wrapper,
        server_config=ServerConfig(endpoints=("tcp:8123",)),
    )
    return wrapper, list(root)


@pytest.mark.parametrize("mode", ["all", "worker"])
def test_tree_runs_the_delay_server_after_the_worker(mode: str) -> None:
    """With chanserv.delay installed, all and worker modes run it on the pool, after the worker."""
    wrapper, children = build(mode)
    assert [type(c) for c in children[:2]] == [LayerService, WorkerPool]
    delay = children[3]
    assert type(delay) is DelayService
    assert delay.pool is children[1]
    assert delay.layer is wrapper.channel_layer


def test_interface_mode_runs_no_delay_server() -> None:
    """--mode=interface has no worker pool and so no delay server."""
    _, children = build("interface")
    assert not any(isinstance(c, DelayService) for c in children)


def test_tree_has_no_delay_server_without_the_app() -> None:
    """Without chanserv.delay in INSTALLED_APPS the tree is the usual one."""
    apps = [a for a in settings.INSTALLED_APPS if a != "chanserv.delay"]
    with override_settings(INSTALLED_APPS=apps):
        _, children = build("all")
    assert not any(isinstance(c, DelayService) for c in children)


def test_rundelay_is_a_command_of_the_app() -> None:
    """manage.py rundelay exists once chanserv.delay is installed."""
    assert get_commands()["rundelay"] == "chanserv.delay"


def test_rundelay_refuses_the_in_memory_layer() -> None:
    """rundelay with the in-memory layer stops with a CommandError saying why, as 1.x did."""
    previous = channel_layers.set(
        "default", ChannelLayerWrapper(InMemoryChannelLayer(), "default", [])
    )
    try:
        with pytest.raises(CommandError, match="cannot span multiple processes"):
            call_command(Command(), stdout=StringIO())
    finally:
        channel_layers.set("default", previous)


def test_rundelay_refuses_an_unknown_layer_and_a_bad_sleep() -> None:
    """An unknown --layer alias and a --sleep that is not positive are refused."""
    with pytest.raises(CommandError, match="nope"):
        call_command(Command(), layer="nope", stdout=StringIO())

    class CrossProcess(InMemoryChannelLayer):
        local_only = False

    previous = channel_layers.set("default", ChannelLayerWrapper(CrossProcess(), "default", []))
    try:
        with pytest.raises(CommandError, match="--sleep must be a positive"):
            call_command(Command(), sleep=0, stdout=StringIO())
    finally:
        channel_layers.set("default", previous)


def test_rundelay_tree() -> None:
    """rundelay runs the layer, one pool thread named chanserv-delay, and the delay server."""
    wrapper = ChannelLayerWrapper(InMemoryChannelLayer(), "default", [])
    root = build_delay_service(ClockReactor(), wrapper, sleep=0.5)
    layer, pool, delay = list(root)
    assert (type(layer), type(pool), type(delay)) == (LayerService, WorkerPool, DelayService)
    assert (pool.size, pool.name) == (1, "chanserv-delay")
    assert (delay.pool, delay.sleep, delay.layer) == (pool, 0.5, wrapper.channel_layer)


def test_1x_worker_runs_the_delay_tree_in_the_foreground() -> None:
    """Channels 1.x's Worker(layer).run() runs the rundelay tree, signal handlers as asked."""
    from unittest import mock

    from chanserv.delay.worker import Worker

    layer = InMemoryChannelLayer()
    with mock.patch("chanserv.delay.worker.run_in_foreground") as run:
        Worker(layer, signal_handlers=False, database_sleep_duration=2).run()
    [(root, _reactor)] = [call.args for call in run.call_args_list]
    delay = list(root)[-1]
    assert (type(delay), delay.layer, delay.sleep) == (DelayService, layer, 2)
    assert run.call_args.kwargs == {"install_signal_handlers": False}
