"""
Consumers of the multi-process tests (tests/e2e/test_redis_*.py): the
tutorial's Groups chat on ``/chat/``, a per-connection echo on ``/echo/``,
an HTTP consumer naming the worker process that answered, and a channel
whose messages are forwarded to a group (sent from outside the server).
"""

import os

from django.http import HttpResponse

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
