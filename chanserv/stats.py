"""
Counting primitives for the hot paths, read by :mod:`chanserv.metrics` at
scrape time: :class:`Histogram` (fixed bucket bounds, a bisect and two
additions per observation, no lock) and :class:`PerThread`, which gives
each pool thread its own counters so that no two threads ever write the
same integer.  An object is written by one thread -- the reactor thread or
the pool thread that owns it -- and read from any thread.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from chanserv.utils import name_that_thing

__all__ = ["LATENCY_BOUNDS", "ConsumerStats", "Histogram", "PerThread", "consumer_name"]

#: Bucket upper bounds, in seconds, of the latency and run-time histograms:
#: 100 µs to 10 s.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

T = TypeVar("T")


class Histogram:
    """
    Observations counted in buckets of fixed upper bounds (``le``), plus
    their sum.  ``counts[i]`` counts the values ``<= bounds[i]`` and above
    the bound before it; the last slot counts those above every bound.  Not
    locked: one thread writes it.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BOUNDS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, value: float, times: int) -> None:
        """Count ``value`` ``times`` times."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def add_to(self, counts: list[int], total: list[float]) -> None:
        """Add this histogram's (non-cumulative) counts and sum into ``counts`` and ``total[0]``."""
        for i, n in enumerate(list(self.counts)):
            counts[i] += n
        total[0] += self.sum


class PerThread(Generic[T]):
    """
    One ``T`` (made by ``factory()``) per thread that asks for it: a thread
    updates its own without a lock; :meth:`all` lists every one ever made
    (a thread that ended keeps its counts) for a reader in any thread.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[T] = []

    def get(self) -> T:
        """The calling thread's ``T``."""
        try:
            mine: T = self._local.value
        except AttributeError:
            mine = self._local.value = self._factory()
            with self._lock:
                self._all.append(mine)
        return mine

    def all(self) -> list[T]:
        """Every thread's ``T``."""
        with self._lock:
            return list(self._all)


class ConsumerStats:
    """
    What one pool thread counted of the consumers it ran: messages handled
    by channel, run time and exceptions by consumer name, and the messages
    it dropped because no route matched (``no_route``) or matching failed
    (``route_failed``: an error or a route filter out of time).
    """

    __slots__ = ("errors", "handled", "no_route", "route_failed", "runs")

    def __init__(self) -> None:
        self.handled: dict[str, int] = {}
        self.runs: dict[str, Histogram] = {}
        self.errors: dict[str, int] = {}
        self.no_route = 0
        self.route_failed = 0


_names: dict[object, str] = {}


def consumer_name(consumer: object) -> str:
    """
    :func:`~chanserv.utils.name_that_thing` of a consumer, remembered for a
    few thousand consumers: the label of its metrics and the name its log
    lines give.  Any thread.
    """
    try:
        return _names[consumer]
    except (KeyError, TypeError):
        pass
    name = name_that_thing(consumer)
    try:
        if len(_names) >= 4096:
            _names.clear()
        _names[consumer] = name
    except TypeError:
        pass  # unhashable: named every time
    return name
