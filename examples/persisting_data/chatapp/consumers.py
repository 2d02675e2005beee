"""
The tutorial's "Persisting Data" consumers, with ``channels`` -> ``chanserv``.

The username given on connect is kept in ``message.channel_session``, a
Django session keyed by the socket's reply channel, so ``ws_message`` finds
it whichever worker thread runs it.
"""

import json
from urllib.parse import parse_qs

from chanserv import Group
from chanserv.sessions import channel_session


# Connected to websocket.connect
@channel_session
def ws_connect(message, room_name):
    # Accept connection
    message.reply_channel.send({"accept": True})
    # Parse the query string
    params = parse_qs(message.content["query_string"])
    if b"username" in params:
        # Set the username in the session
        message.channel_session["username"] = params[b"username"][0].decode("utf8")
        # Add the user to the room_name group
        Group("chat-%s" % room_name).add(message.reply_channel)
    else:
        # Close the connection.
        message.reply_channel.send({"close": True})


# Connected to websocket.receive
@channel_session
def ws_message(message, room_name):
    Group("chat-%s" % room_name).send(
        {
            "text": json.dumps(
                {
                    "text": message["text"],
                    "username": message.channel_session["username"],
                }
            ),
        }
    )


# Connected to websocket.disconnect
@channel_session
def ws_disconnect(message, room_name):
    Group("chat-%s" % room_name).discard(message.reply_channel)
