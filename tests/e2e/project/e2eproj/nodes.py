"""
Consumers of the multi-process tests (tests/e2e/test_redis_*.py): the
tutorial's Groups chat on ``/chat/``, a per-connection echo on ``/echo/``,
an HTTP consumer naming the worker process that answered, and a channel
whose messages are forwarded to a group (sent from outside the server).
"""

import os
import threading
from collections import Counter

from django.http import HttpResponse, JsonResponse

from chanserv import Group
from chanserv.handler import AsgiHandler


def whoami_http(message):
    """
    Answer ``<query string> <pid>``: the request's own token back, and which
    worker process ran the consumer.
    """
    text = "%s %d" % (message["query_string"].decode("ascii"), os.getpid())
    for chunk in AsgiHandler.encode_response(HttpResponse(text)):
        message.reply_channel.send(chunk)


def chat_add(message):
    """The tutorial's ws_add: accept, join Group("chat")."""
    message.reply_channel.send({"accept": True})
    Group("chat").add(message.reply_channel)


def chat_message(message):
    """The tutorial's ws_message: everything to Group("chat")."""
    Group("chat").send({"text": "[user] %s" % message.content["text"]})


def chat_disconnect(message):
    Group("chat").discard(message.reply_channel)


def echo_connect(message):
    message.reply_channel.send({"accept": True})


def echo_receive(message):
    """Send the text back to the connection it came from, with the worker's pid."""
    message.reply_channel.send({"text": "%s %d" % (message.content["text"], os.getpid())})


def forward_to_group(message):
    """``e2e.forward``: ``{"group", "text"}`` sent on to the group."""
    Group(message["group"]).send({"text": message["text"]})


# tests/e2e/test_redis_scale.py: WebSockets on /group/<name>/ are members of
# Group(<name>) for exactly as long as they are open; /groupsize/<name>/
# answers the group's size as the layer sees it, with how many connects and
# disconnects of that group this process handled.

_handled = Counter()
_handled_lock = threading.Lock()


def _count(event, group):
    with _handled_lock:
        _handled[event, group] += 1


def group_connect(message, group):
    """Join ``Group(group)``, then accept: an open socket is a member."""
    Group(group).add(message.reply_channel)
    message.reply_channel.send({"accept": True})
    _count("connect", group)


def group_receive(message, group):
    """Everything a member says goes to the whole group, as it is."""
    Group(group).send({"text": message.content["text"]})


def group_disconnect(message, group):
    Group(group).discard(message.reply_channel)
    _count("disconnect", group)


def group_size_http(message, group):
    """
    ``{"members", "connects", "disconnects", "disconnect_full"}`` of
    ``Group(group)`` as JSON; the last one is how often websocket.disconnect
    was found full (the interface then waited for room).
    """
    with _handled_lock:
        connects, disconnects = _handled["connect", group], _handled["disconnect", group]
    layer = Group(group).channel_layer
    answer = {
        "members": len(layer.group_channels(group)),
        "connects": connects,
        "disconnects": disconnects,
        "disconnect_full": layer.channel_statistics("websocket.disconnect")["channel_full_count"],
    }
    for chunk in AsgiHandler.encode_response(JsonResponse(answer)):
        message.reply_channel.send(chunk)


# tests/e2e/test_slow_readers.py: a WebSocket on /broadcast/<name>/ is not a
# member of Group(<name>); what it says goes to the group (group_receive).


def broadcast_connect(message, group):
    """Accept without joining ``Group(group)``: the socket only talks to it."""
    message.reply_channel.send({"accept": True})


def broadcast_disconnect(message, group):
    """Nothing to leave."""
