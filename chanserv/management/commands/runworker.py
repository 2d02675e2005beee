"""
``manage.py runworker``: a worker node, as in Channels 1.x, consuming the
routed channels of a cross-process (Redis) layer with a pool of threads.
The command's main thread parses options, then runs the reactor.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chanserv.management.runner import (
    cross_process_layer,
    run_in_foreground,
    start_console_logging,
)
from chanserv.tap import DEFAULT_THREADS, build_service


class Command(BaseCommand):
    help = "Run a chanserv worker node: consume channels from a cross-process channel layer."
    leave_locale_alone = True
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--layer", default="default", help="Channel layer alias (default: 'default')."
        )
        parser.add_argument(
            "--only-channels",
            action="append",
            dest="only_channels",
            default=[],
            help="Only consume channels matching this glob (repeatable).",
        )
        parser.add_argument(
            "--exclude-channels",
            action="append",
            dest="exclude_channels",
            default=[],
            help="Never consume channels matching this glob (repeatable).",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=DEFAULT_THREADS,
            help="Worker threads (default %d)." % DEFAULT_THREADS,
        )
        parser.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="text (default) or json: one JSON object per line, for log shippers.",
        )
        parser.add_argument(
            "--graceful-timeout",
            type=float,
            default=30.0,
            help="Seconds consumers in flight get to finish on shutdown.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Any: Django's command options, as argparse typed each (Django's BaseCommand API).
        from twisted.internet import reactor

        wrapper = cross_process_layer(
            options["layer"],
            "runworker needs a channel layer that crosses processes; %r is %s, which "
            "lives inside one process. Use the Redis layer, or runserver / twistd "
            "chanserv (which run workers in-process).",
        )
        if options["threads"] < 1:
            raise CommandError("--threads must be at least 1")
        verbosity = int(options.get("verbosity", 1))
        start_console_logging(verbosity, self.stdout, options["log_format"])
        root = build_service(
            reactor,
            mode="worker",
            channel_layer=wrapper,
            threads=options["threads"],
            only_channels=options["only_channels"],
            exclude_channels=options["exclude_channels"],
            graceful_timeout=options["graceful_timeout"],
            verbosity=verbosity,
        )
        run_in_foreground(root, reactor)
