"""
The tutorial's "Enforcing Ordering" consumers, with ``channels`` ->
``chanserv``.

Each socket counts its messages in its channel session (``sent``).  Two
worker threads running two messages of one socket at once would both read
the same count, and the messages could be handled out of order;
``enforce_ordering`` runs them one at a time, in the order of their
``order`` key (0 for the connect, then 1, 2, ...).
"""

from chanserv import Channel, Group  # noqa: F401 (imported as in the tutorial)
from chanserv.auth import channel_session_user, channel_session_user_from_http
from chanserv.sessions import channel_session, enforce_ordering  # noqa: F401 (as in the tutorial)


# Connected to websocket.connect
@enforce_ordering
@channel_session_user_from_http
def ws_add(message):
    # This doesn't need a decorator - it always runs separately
    message.channel_session["sent"] = 0
    # Add them to the right group
    Group("chat").add(message.reply_channel)
    # Accept the socket
    message.reply_channel.send({"accept": True})


# Connected to websocket.receive
@enforce_ordering
@channel_session_user
def ws_message(message):
    # Without enforce_ordering this wouldn't work right
    message.channel_session["sent"] = message.channel_session["sent"] + 1
    Group("chat").send(
        {
            "text": "%s: %s" % (message.channel_session["sent"], message["text"]),
        }
    )


# Connected to websocket.disconnect
@channel_session_user
def ws_disconnect(message):
    Group("chat").discard(message.reply_channel)
