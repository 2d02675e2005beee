"""
``manage.py rundelay``: the delay server alone, as in Channels 1.x, against
a cross-process (Redis) channel layer: the layer, one pool thread for the
database and a :class:`~chanserv.delay.service.DelayService`, run by a
reactor in the command's main thread (which so becomes the reactor thread).
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chanserv.channel import DEFAULT_CHANNEL_LAYER
from chanserv.delay.worker import build_delay_service
from chanserv.management.runner import (
    cross_process_layer,
    run_in_foreground,
    start_console_logging,
)


class Command(BaseCommand):
    help = "Run the delay server: send the messages of asgi.delay when they are due."
    leave_locale_alone = True
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--layer",
            default=DEFAULT_CHANNEL_LAYER,
            help="Channel layer alias to use, if not the default.",
        )
        parser.add_argument(
            "--sleep",
            type=float,
            default=1.0,
            help="Seconds between looks at the database for messages due soon (default 1).",
        )
        parser.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="text (default) or json: one JSON object per line, for log shippers.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Any: Django's command options, as argparse typed each (Django's BaseCommand API).
        wrapper = cross_process_layer(
            options["layer"],
            "You cannot span multiple processes with the in-memory layer: %r is %s. "
            "Use a cross-process layer (chanserv.layers.RedisChannelLayer), or run "
            "twistd chanserv, which runs the delay server in-process.",
        )
        if not options["sleep"] > 0:
            raise CommandError("--sleep must be a positive number of seconds")
        from twisted.internet import reactor

        start_console_logging(int(options.get("verbosity", 1)), self.stdout, options["log_format"])
        run_in_foreground(build_delay_service(reactor, wrapper, options["sleep"]), reactor)
