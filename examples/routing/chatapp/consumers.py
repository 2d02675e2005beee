"""
The tutorial's "Routing" consumers, with ``channels`` -> ``chanserv``.

``chat_connect`` is the tutorial's ``ws_add`` taking the room from the URL
("we could modify our consumer above to use a room based on URL rather than
username"): ``room_name`` is a named group of the route's path pattern,
passed as a keyword argument.  The rest is not in the tutorial's listing,
which only shows the routes: ``chat_message`` sends a message to the room,
``chat_disconnect`` leaves it, and ``poll_consumer`` answers ``POST /poll/``.
"""

import re

from django.http import JsonResponse

from chanserv import Group
from chanserv.auth import channel_session_user_from_http
from chanserv.handler import AsgiHandler, AsgiRequest
from chanserv.sessions import channel_session


# Connected to websocket.connect
@channel_session_user_from_http
def chat_connect(message, room_name):
    # Not in the tutorial: remember the room for chat_disconnect, whose
    # route has no room_name.
    message.channel_session["room"] = room_name
    # Add them to the right group
    Group("chat-%s" % room_name).add(message.reply_channel)
    # Accept the connection request
    message.reply_channel.send({"accept": True})


# Connected to websocket.receive
def chat_message(message, room_name):
    Group("chat-%s" % room_name).send({"text": message["text"]})


# Connected to websocket.disconnect (any path under /chat)
@channel_session
def chat_disconnect(message):
    room = message.channel_session.get("room")
    if room is not None:  # None: the socket was not a room's (e.g. /chatty/)
        Group("chat-%s" % room).discard(message.reply_channel)


# Connected to http.request, for POST /poll/ only
def poll_consumer(message):
    """
    The way in for a client that cannot open a WebSocket: a form post of
    ``room`` and ``text`` sends ``text`` to the room's sockets, and the
    answer is JSON: ``{"room": ..., "sent": ...}`` (400 and ``{"error":
    ...}`` for a room name the chat routes could not have).
    """
    request = AsgiRequest(message)
    room = request.POST.get("room", "")
    text = request.POST.get("text", "")
    if re.fullmatch(r"[a-zA-Z0-9_]+", room):
        Group("chat-%s" % room).send({"text": text})
        response = JsonResponse({"room": room, "sent": text})
    else:
        response = JsonResponse({"error": "room must match [a-zA-Z0-9_]+"}, status=400)
    for chunk in AsgiHandler.encode_response(response):
        message.reply_channel.send(chunk)
