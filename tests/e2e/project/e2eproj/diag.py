"""
``/diag/``: what the running server holds, for tests/e2e/test_connection_storms.py.

Answers JSON with the process's resident memory, the sizes of every
per-connection structure of the interface server, the in-memory layer and
the worker (read on the reactor thread, so nothing changes under the count),
the counts of WebSockets closed because their client did not read (and of
the messages dropped with them, also the layer's ``channel_full_count``),
and the number of live objects of the classes a connection creates.

``?tracemalloc=start&frames=n`` starts ``tracemalloc`` (n frames per
allocation), ``?tracemalloc=mark`` takes the baseline snapshot and
``?tracemalloc=diff`` adds the allocation sites that grew most since it.  ``?trim=1`` also
answers the resident memory after ``malloc_trim(0)``: what is left is held
by live allocations, the rest was free memory the C allocator kept; and
``?pymalloc=1`` the arenas of Python's small-object allocator, which are
only given back once entirely free.

This is a test project's diagnostic; it reads private attributes on purpose.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import tempfile
import threading
import tracemalloc
import weakref
from collections import Counter
from typing import Any

from django.http import JsonResponse
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from chanserv.asgi import get_channel_layer
from chanserv.layers import base
from chanserv.server.site import InterfaceServer
from chanserv.worker import WorkerService

#: Classes whose live instances are counted (by name, subclasses included).
COUNTED = (
    "WebSocketProtocol",
    "HTTPProtocol",
    "Request",
    "Deferred",
    "DelayedCall",
    "Counters",
    "Waiter",
    "Failure",
)

_found: dict[type, weakref.ref[Any]] = {}
_baseline: list[tracemalloc.Snapshot] = []
_lock = threading.Lock()


def _find(cls: type) -> Any:
    ref = _found.get(cls)
    found = ref() if ref is not None else None
    if found is None:
        found = next((o for o in gc.get_objects() if type(o) is cls), None)
        if found is not None:
            _found[cls] = weakref.ref(found)
    return found


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _sizes() -> dict[str, Any]:
    # Reactor thread.
    server = _find(InterfaceServer)
    worker = _find(WorkerService)
    layer = get_channel_layer()
    with layer._lock:
        groups = layer._groups
        sizes = {
            "layer_channels": len(layer._channels),
            "layer_counters": len(layer._counters),
            "layer_groups": len(groups._members),
            "layer_group_channels": len(groups._groups_of),
            "layer_receivers": len(layer._receivers),
            "layer_expiry_heap": len(layer._expiry_heap),
            "layer_pending": sum(len(r.pending) for r in layer._receivers.values()),
            "chat_members": len(groups._members.get("chat", ())),
        }
    sizes.update(
        layer_full_count=layer.global_statistics()["channel_full_count"],
        valid_names=len(base._valid_names),
        valid_receive_names=len(base._valid_receive_names),
        capacity_cache=len(layer._capacity_cache),
        delayed_calls=len(reactor.getDelayedCalls()),
        readers=len(reactor.getReaders()),
        writers=len(reactor.getWriters()),
    )
    if server is not None:
        sizes.update(
            ws_connections=len(server.websocket_factory.connections),
            http_connections=len(server.http_factory.connections),
            replies=len(server.replies),
            replies_gone=server.replies.gone,
            disconnects_lost=server.websocket_factory.disconnects_lost,
            # WebSockets closed with 1013 because their client did not read,
            # and the messages dropped with them (tests/e2e/test_slow_readers.py).
            overflow_closes=server.replies.overflow_closes,
            overflow_dropped=server.replies.dropped,
        )
    if worker is not None and worker.lanes is not None:
        sizes["worker_lanes"] = len(worker.lanes)
        sizes["worker_parked"] = worker.lanes.parked
    return sizes


def _live_objects() -> dict[str, int]:
    gc.collect()
    counts: Counter[str] = Counter()
    wanted = set(COUNTED)
    for o in gc.get_objects():
        for cls in type(o).__mro__:
            if cls.__name__ in wanted:
                counts[cls.__name__] += 1
                break
    return {name: counts[name] for name in COUNTED}


def _tracemalloc(action: str, frames: int) -> dict[str, Any]:
    if action == "start":
        tracemalloc.start(frames)
        return {"tracing": True}
    if not tracemalloc.is_tracing():
        return {"error": "?tracemalloc=start first"}
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    current, peak = tracemalloc.get_traced_memory()
    answer: dict[str, Any] = {"traced": current, "traced_peak": peak}
    if action == "mark" or not _baseline:
        _baseline[:] = [snapshot]
        return answer
    total = sum(s.size for s in snapshot.statistics("filename"))
    answer["traced_total"] = total
    answer["traced_baseline"] = sum(s.size for s in _baseline[0].statistics("filename"))
    # Frames as file:line: formatting them with their source would fill
    # linecache, and the next diff would show it.
    answer["top"] = [
        "%+d B %+d objs %s" % (d.size_diff, d.count_diff, d.traceback[-1])
        for d in snapshot.compare_to(_baseline[0], "lineno")[:25]
    ]
    answer["top_tracebacks"] = [
        {
            "size_diff": d.size_diff,
            "count_diff": d.count_diff,
            "traceback": [str(frame) for frame in d.traceback][-12:],
        }
        for d in snapshot.compare_to(_baseline[0], "traceback")[:5]
    ]
    return answer


def _pymalloc() -> dict[str, int]:
    """pymalloc's arena counts, from ``sys._debugmallocstats()`` (it writes to fd 2)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode("ascii", "replace")
    wanted = {
        "# arenas allocated current": "arenas_current",
        "# arenas highwater mark": "arenas_highwater",
        "# bytes in allocated blocks": "bytes_in_blocks",
        "# bytes in available blocks": "bytes_free_in_pools",
        "# bytes lost to pool headers": "bytes_pool_headers",
    }
    answer = {}
    for line in text.splitlines():
        label, _, value = line.partition("=")
        key = wanted.get(label.strip())
        if key is not None:
            answer[key] = int(value.strip().replace(",", ""))
    return answer


def _malloc_trim() -> int:
    """Give the C allocator's free memory back to the system; the RSS after."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_kb()


def diag(request: Any) -> JsonResponse:
    with _lock:
        answer: dict[str, Any] = {"rss_kb": rss_kb()}
        answer.update(blockingCallFromThread(reactor, _sizes))
        if request.GET.get("objects"):
            answer["objects"] = _live_objects()
            # Python's live allocations (after the collection above).
            answer["allocated_blocks"] = sys.getallocatedblocks()
        if request.GET.get("pymalloc"):
            answer["pymalloc"] = _pymalloc()
        if request.GET.get("trim"):
            answer["rss_kb_trimmed"] = _malloc_trim()
        action = request.GET.get("tracemalloc")
        if action:
            answer["tracemalloc"] = _tracemalloc(action, int(request.GET.get("frames", "1")))
    return JsonResponse(answer)
