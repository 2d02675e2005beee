"""
Unit tests of chanserv.tap: ``twistd chanserv``'s options (every refusal a
one-line OptionsError, before anything serves) and the service tree
:func:`~chanserv.tap.build_service` makes for each mode -- started and
stopped on a memory reactor where no thread is involved.  (The same
refusals through a real ``twistd`` process: tests/e2e/test_core.py.)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.test import override_settings
from twisted.application.service import IService
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from chanserv import tap
from chanserv.asgi import ChannelLayerWrapper, channel_layers
from chanserv.layers.inmemory import InMemoryChannelLayer
from chanserv.log import set_verbosity
from chanserv.server.config import ServerConfig
from chanserv.server.site import InterfaceServer
from chanserv.service import ChanservService, LayerService
from chanserv.testing import ClockReactor
from chanserv.threads import WorkerPool
from chanserv.worker import WorkerService


class CrossingLayer(InMemoryChannelLayer):
    """Claims to cross processes, so that the split modes accept it."""

    local_only = False


def wrapper(layer: Any = None, alias: str = "default") -> ChannelLayerWrapper:
    return ChannelLayerWrapper(layer if layer is not None else InMemoryChannelLayer(), alias, [])


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Parsing puts folders on sys.path and sets DJANGO_SETTINGS_MODULE.
        self.patch(sys, "path", list(sys.path))
        self.addCleanup(os.environ.__setitem__, "DJANGO_SETTINGS_MODULE", "tests.settings")
        previous = channel_layers.set("crossing", wrapper(CrossingLayer(), "crossing"))
        self.addCleanup(channel_layers.set, "crossing", previous)

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(["--settings=tests.settings", *argv])
        return options

    def assert_usage_error(self, *argv: str, says: str) -> None:
        error = self.assertRaises(tap.OptionsError, self.parse, *argv)
        self.assertIn(says, str(error))
        self.assertTrue(str(error).startswith("twistd chanserv: "))
        self.assertNotIn("\n", str(error))
        self.assertNotIn("Usage:", str(error))

    def test_defaults(self) -> None:
        """No options: mode all, the default layer, 16 threads, the default server config."""
        options = self.parse()
        self.assertEqual(
            (options["mode"], options["threads"], options["verbosity"]),
            ("all", tap.DEFAULT_THREADS, 1),
        )
        self.assertIs(options["channel_layer"], channel_layers["default"])
        self.assertEqual(options["server_config"], ServerConfig(access_log="-"))
        self.assertEqual(options["log-format"], "text")
        self.assertEqual((options["only_channels"], options["exclude_channels"]), ([], []))
        self.assertFalse(options["no-ordering"])

    def test_each_mode_with_a_crossing_layer(self) -> None:
        """all, interface and worker are accepted with a layer that crosses processes."""
        for mode in tap.MODES:
            options = self.parse("--mode=" + mode, "--layer=crossing")
            self.assertEqual(options["mode"], mode)
            self.assertEqual(options["channel_layer"].alias, "crossing")

    def test_split_modes_refuse_the_in_process_layer(self) -> None:
        """interface and worker with the in-memory layer: a usage error naming the mode."""
        for mode in ("interface", "worker"):
            self.assert_usage_error(
                "--mode=" + mode,
                says="--mode=%s needs a channel layer that crosses processes" % (mode,),
            )

    def test_unknown_mode(self) -> None:
        """A mode that does not exist is a usage error listing the modes."""
        self.assert_usage_error("--mode=both", says="--mode must be one of all, interface, worker")

    def test_misspelt_mode_gets_a_suggestion(self) -> None:
        """A misspelt --mode is refused with the closest mode: "did you mean 'worker'?"."""
        self.assert_usage_error("--mode=workers", says="did you mean 'worker'?")

    def test_unknown_option_is_one_line_with_a_suggestion(self) -> None:
        """An unknown flag: one line, the closest flag, a pointer to --help, no usage text."""
        self.assert_usage_error(
            "--acess-log=-", says="did you mean '--access-log'? (twistd chanserv --help"
        )

    def test_options_error_exits_1_with_its_message(self) -> None:
        """OptionsError is a SystemExit whose code is the message: Python prints it, exits 1."""
        error = tap.OptionsError("first\nsecond")
        self.assertIsInstance(error, SystemExit)
        self.assertEqual(error.code, "twistd chanserv: first second")

    def test_log_format(self) -> None:
        """--log-format=json points twistd's --logger at chanserv's JSON observer; others refused."""
        self.assert_usage_error("--log-format=jsn", says="did you mean 'json'?")
        parent: dict[str, Any] = {"logger": None, "syslog": False, "logfile": None}
        options = tap.Options()
        options.parent = parent  # type: ignore[attr-defined]
        options.parseOptions(["--settings=tests.settings", "--log-format=json"])
        self.assertEqual(parent["logger"], "chanserv.log.twistd_json_observer")
        parent["logger"] = "some.other.observer"
        options = tap.Options()
        options.parent = parent  # type: ignore[attr-defined]
        error = self.assertRaises(
            tap.OptionsError,
            options.parseOptions,
            ["--settings=tests.settings", "--log-format=json"],
        )
        self.assertIn("--logger", str(error))

    def test_channel_filters_repeat(self) -> None:
        """--only-channels and --exclude-channels collect every value, in order."""
        options = self.parse(
            "--only-channels=http.*", "--only-channels=websocket.*", "--exclude-channels=*.x"
        )
        self.assertEqual(options["only_channels"], ["http.*", "websocket.*"])
        self.assertEqual(options["exclude_channels"], ["*.x"])

    def test_pythonpath_goes_first_on_sys_path(self) -> None:
        """The current folder, then --pythonpath folders, go first on sys.path, absolute."""
        sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
        self.parse("--pythonpath=some/project")
        self.assertEqual(sys.path[:2], [os.getcwd(), os.path.abspath("some/project")])

    def test_bad_values(self) -> None:
        """Out-of-range numbers are usage errors naming the option."""
        for argv, says in [
            (["--threads=0"], "--threads must be at least 1"),
            (["--threads=many"], "many"),
            (["--verbosity=3"], "--verbosity must be 0, 1 or 2"),
            (["--graceful-timeout=-1"], "--graceful-timeout must not be negative"),
        ]:
            with self.subTest(argv=argv):
                self.assert_usage_error(*argv, says=says)

    def test_unknown_layer(self) -> None:
        """A layer alias missing from CHANNEL_LAYERS is a usage error."""
        self.assert_usage_error("--layer=nope", says="nope")

    def test_settings_problems(self) -> None:
        """No settings at all, or a module that cannot be imported: usage errors."""
        options = tap.Options()
        self.patch(
            os, "environ", {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        )
        error = self.assertRaises(tap.OptionsError, options.parseOptions, [])
        self.assertIn("No Django settings", str(error))
        self.assert_usage_error("--settings=tests.no_such_settings", says="Cannot import")

    def test_misspelt_settings_module_gets_a_suggestion(self) -> None:
        """A settings module that does not exist, next to one that does: did you mean."""
        project = os.path.join(os.path.dirname(__file__), "e2e", "project")
        self.patch(os, "getcwd", lambda: project)
        self.assert_usage_error(
            "--settings=e2eproj.setings", says="did you mean 'e2eproj.settings'?"
        )

    def test_settings_module_that_raises_is_one_line(self) -> None:
        """A settings module raising on import: its error and file:line, on one line."""
        self.assert_usage_error(
            "--settings=tests.broken_settings",
            says="The settings module 'tests.broken_settings' failed: ValueError:",
        )

    def test_misspelt_backend_and_routing_get_suggestions(self) -> None:
        """A misspelt BACKEND or ROUTING path is refused with the closest valid one."""
        for layers, says in [
            (
                {"default": {"BACKEND": "asgiref.inmemory.ChanelLayer", "ROUTING": []}},
                "did you mean 'asgiref.inmemory.ChannelLayer'?",
            ),
            (
                {
                    "default": {
                        "BACKEND": "asgiref.inmemory.ChannelLayer",
                        "ROUTING": "tests.routing.chanel_routing",
                    }
                },
                "did you mean 'tests.routing.channel_routing'?",
            ),
            ({"defualt": {}}, "has no 'default' layer; it defines 'defualt'; did you mean"),
        ]:
            with self.subTest(says=says), override_settings(CHANNEL_LAYERS=layers):
                channel_layers.set("default", None)
                self.addCleanup(channel_layers.set, "default", None)
                self.assert_usage_error(says=says)

    def test_make_service_passes_the_options_on(self) -> None:
        """makeService hands every option to build_service, --no-ordering as ordered=False."""
        calls: list[dict[str, Any]] = []
        self.patch(tap, "build_service", lambda reactor, **kwargs: calls.append(kwargs))
        self.patch(tap, "install_django_logging", lambda debug: None)
        self.patch(sys, "excepthook", sys.excepthook)
        self.addCleanup(set_verbosity, 1)
        options = self.parse(
            "--layer=crossing",
            "--mode=worker",
            "--threads=3",
            "--only-channels=a",
            "--graceful-timeout=7",
            "--no-ordering",
            "--verbosity=0",
        )
        tap.makeService(options)
        [kwargs] = calls
        self.assertEqual(
            {k: kwargs[k] for k in ("mode", "threads", "only_channels", "ordered")},
            {"mode": "worker", "threads": 3, "only_channels": ["a"], "ordered": False},
        )
        self.assertEqual((kwargs["graceful_timeout"], kwargs["verbosity"]), (7.0, 0))
        self.assertIs(kwargs["channel_layer"], options["channel_layer"])


class BuildServiceTests(SynchronousTestCase):
    def build(self, mode: str, **kwargs: Any) -> tuple[ChanservService, list[Any]]:
        kwargs.setdefault("channel_layer", wrapper())
        kwargs.setdefault("server_config", ServerConfig(endpoints=("tcp:8123",)))
        root = tap.build_service(ClockReactor(), mode=mode, **kwargs)
        return root, list(root)

    def test_all_runs_every_service_in_start_order(self) -> None:
        """mode=all: the layer, the pool, the worker, the interface server, in that order."""
        root, children = self.build("all", threads=4)
        verifyObject(IService, root)
        self.assertEqual(
            [type(child) for child in children],
            [LayerService, WorkerPool, WorkerService, InterfaceServer],
        )
        self.assertEqual(children[1].size, 4)
        self.assertEqual(
            root.ready_message,
            "chanserv ready: mode=all, layer='default' (InMemoryChannelLayer), threads=4",
        )

    def test_worker_has_no_interface_server(self) -> None:
        """mode=worker: layer, pool and worker; consuming only the channels asked for."""
        layer = wrapper()
        _, children = self.build(
            "worker",
            channel_layer=layer,
            only_channels=["websocket.*"],
            exclude_channels=["*.disconnect"],
        )
        self.assertEqual(
            [type(child) for child in children], [LayerService, WorkerPool, WorkerService]
        )
        self.assertEqual(children[2].channels, ["websocket.connect", "websocket.receive"])
        self.assertIn("http.request", layer.router.channels, "default routes were added")

    def test_interface_has_no_worker_and_no_thread(self) -> None:
        """mode=interface: the layer and the interface server; 0 threads announced."""
        root, children = self.build("interface")
        self.assertEqual([type(child) for child in children], [LayerService, InterfaceServer])
        self.assertTrue(root.ready_message.endswith("threads=0"))

    def test_interface_server_takes_the_layer_and_the_routed_channels(self) -> None:
        """The server gets the layer itself, not its wrapper, and the router's channels."""
        layer = wrapper()
        _, children = self.build("all", channel_layer=layer)
        server = children[-1]
        self.assertIs(server.layer, layer.channel_layer)
        self.assertIs(server.http_factory.layer, layer.channel_layer)
        self.assertEqual(server.http_factory.routed_channels, layer.router.channels)

    def test_unknown_mode(self) -> None:
        """build_service refuses a mode it does not know with ValueError."""
        self.assertRaises(ValueError, self.build, "both")

    def test_interface_tree_starts_and_stops_in_memory(self) -> None:
        """The interface tree listens on its endpoint, says it is ready, and stops cleanly."""
        reactor = ClockReactor()
        layer = InMemoryChannelLayer()
        root = tap.build_service(
            reactor,
            mode="interface",
            channel_layer=wrapper(layer),
            server_config=ServerConfig(endpoints=("tcp:8123",)),
        )
        with capturedLogs() as events:
            root.startService()
        self.assertEqual([port for port, *_ in reactor.tcpServers], [8123])
        self.assertIn(root.ready_message, [formatEvent(e) for e in events])
        self.assertIsNone(self.successResultOf(root.stopService()))
        layer.attach_reactor(reactor)  # detached again by the layer service
