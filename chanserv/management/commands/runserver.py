"""
``manage.py runserver`` on chanserv: HTTP and WebSockets on one port, worker
threads in the same process, Django's autoreloader, and static files when
``DEBUG`` is on; ``--noworker`` runs the interface server only.  The
command's main thread parses options, then runs the reactor.
"""

from __future__ import annotations

import os
import threading
from argparse import ArgumentParser
from datetime import datetime
from typing import Any, NoReturn

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands.runserver import Command as DjangoRunserver

# chanserv's imports are deferred, downward, into the methods: this module is
# imported by ChanservConfig.ready() at every django.setup() of a project with
# staticfiles, and the server and the worker cost much more to load than a
# command that is not run.


class Command(DjangoRunserver):
    help = (
        "Start chanserv's development server: HTTP and WebSockets, worker threads and "
        "static files in one process, with autoreload."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        from chanserv.tap import DEFAULT_THREADS

        super().add_arguments(parser)
        parser.add_argument(
            "--noworker",
            action="store_false",
            dest="run_worker",
            help="Run the interface server only; consume with runworker.",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=4,
            help="Worker threads (default 4; --nothreading means 1). "
            "twistd chanserv defaults to %d." % DEFAULT_THREADS,
        )
        parser.add_argument(
            "--http_timeout",
            type=float,
            default=60.0,
            help="Seconds before an unanswered request gets 503 (60).",
        )
        parser.add_argument(
            "--websocket_handshake_timeout",
            type=float,
            default=5.0,
            help="Seconds a WebSocket opening handshake may take (5).",
        )
        parser.add_argument(
            "--nostatic",
            action="store_false",
            dest="use_static_handler",
            help="Do not serve static files even with DEBUG on.",
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            dest="insecure_serving",
            help="Serve static files even with DEBUG off.",
        )

    def get_handler(self, *args: object, **options: object) -> NoReturn:  # pragma: no cover
        raise CommandError("chanserv's runserver does not serve WSGI")

    def inner_run(self, *args: Any, **options: Any) -> None:
        # Any: Django's command options, as argparse typed each (Django's BaseCommand API).
        """
        Serve until stopped.  A configuration mistake or a port that cannot
        be bound ends the command with one line and exit code 1: a
        ``CommandError`` in the main thread (``--noreload``); under the
        autoreloader, which runs this in a secondary thread, written to
        stderr before ``os._exit(1)``, as Django's runserver does.
        """
        from chanserv.server.listener import ListenError

        try:
            try:
                self._serve(**options)
            except ListenError as e:
                raise CommandError(str(e)) from None
        except CommandError as e:
            if threading.current_thread() is threading.main_thread():
                raise
            self.stderr.write("CommandError: %s" % (e,))
            self.stdout.flush()
            self.stderr.flush()
            os._exit(1)

    def _serve(self, **options: Any) -> None:
        # Any: Django's command options, as argparse typed each (Django's BaseCommand API).
        from twisted.internet import reactor

        from chanserv.asgi import channel_layers
        from chanserv.exceptions import InvalidChannelLayerError
        from chanserv.management.runner import run_in_foreground, start_console_logging
        from chanserv.server.config import ServerConfig
        from chanserv.staticfiles import configure_static_serving
        from chanserv.tap import build_service

        self.stdout.write("Performing system checks...\n\n")
        self.check(display_num_errors=True)
        self.check_migrations()
        try:
            wrapper = channel_layers["default"]
        except InvalidChannelLayerError as e:
            raise CommandError(str(e))
        mode = "all" if options["run_worker"] else "interface"
        if mode == "interface" and wrapper.local_only():
            raise CommandError(
                "--noworker needs a channel layer that crosses processes; the default "
                "layer is %s, which lives inside this process, so no worker could reach "
                "it. Use the Redis layer." % type(wrapper.channel_layer).__name__
            )
        configure_static_serving(
            enabled=options["use_static_handler"], insecure=options["insecure_serving"]
        )
        verbosity = int(options["verbosity"])
        threads = 1 if not options["use_threading"] else options["threads"]
        endpoint = "tcp:port=%d:interface=%s" % (int(self.port), self.addr.replace(":", r"\:"))
        config = ServerConfig(
            endpoints=(endpoint,),
            http_timeout=options["http_timeout"],
            websocket_handshake_timeout=options["websocket_handshake_timeout"],
            root_path=getattr(settings, "FORCE_SCRIPT_NAME", None) or "",
            ws_protocols=tuple(getattr(settings, "CHANNELS_WS_PROTOCOLS", None) or ()),
            access_log="-" if verbosity >= 1 else None,
        )
        now = datetime.now().strftime("%B %d, %Y - %X")
        self.stdout.write(now)
        self.stdout.write(
            "Django version %s, using settings %r\n"
            "Starting chanserv development server (HTTP and WebSockets%s) at "
            "http://%s:%s/\n"
            "Channel layer %s. Quit the server with %s."
            % (
                self.get_version(),
                settings.SETTINGS_MODULE,
                ", %d worker threads" % threads if mode == "all" else ", no workers",
                "[%s]" % self.addr if ":" in self.addr else self.addr,  # an IPv6 literal
                self.port,
                type(wrapper.channel_layer).__name__,
                "CONTROL-C",
            )
        )
        start_console_logging(verbosity, self.stdout)
        root = build_service(
            reactor,
            mode=mode,
            channel_layer=wrapper,
            threads=threads,
            server_config=config,
            verbosity=verbosity,
        )
        # Under the autoreloader this runs in a secondary thread, where the
        # reactor cannot install signal handlers; the reloader owns them.
        run_in_foreground(
            root,
            reactor,
            install_signal_handlers=threading.current_thread() is threading.main_thread(),
        )
