"""
WebSocket consumers of the ordering-under-concurrency test
(tests/e2e/test_tutorial_ordering.py), on ``/ordered/``.

Every ``websocket.receive`` is recorded in ``$E2E_MARKER_DIR/ordered.txt``:
a ``begin`` line when its consumer starts and an ``end`` line when it
finishes, with the message's ``order``, its text, the channel session's
running count (read, then written back plus one: lost if two ran at once)
and the worker thread's name.  The text ``done`` is answered ``done``
instead, once every earlier message has been consumed.
"""

import os
import threading
from pathlib import Path

from chanserv.sessions import enforce_ordering


def _record(line):
    with open(Path(os.environ["E2E_MARKER_DIR"], "ordered.txt"), "a") as f:
        f.write(line + "\n")


@enforce_ordering
def ordered_connect(message):
    message.channel_session["count"] = 0
    message.reply_channel.send({"accept": True})


@enforce_ordering
def ordered_receive(message):
    text = message["text"]
    if text == "done":
        message.reply_channel.send({"text": "done"})
        return
    thread = threading.current_thread().name
    _record("begin %s %s %s" % (message["order"], text, thread))
    count = message.channel_session["count"] + 1
    message.channel_session["count"] = count
    _record("end %s %s %s %s" % (message["order"], text, count, thread))
