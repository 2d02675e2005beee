"""
chanserv.management.runner without a real reactor: ports are bound before
the reactor runs, so a port that cannot be bound ends the command before
anything starts.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.application.service import Service

from chanserv.management.runner import run_in_foreground
from chanserv.server.listener import ListenError


class FakeReactor:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def callWhenRunning(self, f: Any) -> None:
        self.calls.append("callWhenRunning")

    def addSystemEventTrigger(self, *args: Any) -> None:
        self.calls.append("addSystemEventTrigger")

    def run(self, installSignalHandlers: bool = True) -> None:
        self.calls.append("run")


class Root(Service):
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.privileged = False

    def privilegedStartService(self) -> None:
        if self.error is not None:
            raise self.error
        self.privileged = True


def test_ports_are_bound_before_the_reactor_runs() -> None:
    """run_in_foreground binds (privilegedStartService) first, then runs the reactor."""
    reactor, root = FakeReactor(), Root()
    run_in_foreground(root, reactor)
    assert root.privileged
    assert reactor.calls == ["callWhenRunning", "addSystemEventTrigger", "run"]


def test_a_port_that_cannot_be_bound_raises_before_the_reactor_runs() -> None:
    """A ListenError from binding propagates at once; the reactor never runs."""
    reactor = FakeReactor()
    with pytest.raises(ListenError):
        run_in_foreground(Root(ListenError("Cannot listen on x: in use")), reactor)
    assert reactor.calls == []
