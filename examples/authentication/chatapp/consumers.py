"""
The tutorial's "Authentication" consumers, with ``channels`` -> ``chanserv``:
users only chat with people whose username has the same first letter.

``channel_session_user_from_http`` finds the user through the HTTP session
(its cookie, or a ``session_key`` query parameter) when the socket connects
and keeps the login in the channel session, where ``channel_session_user``
finds it again on every later message of that socket.

Two additions to the tutorial's code, marked "Not in the tutorial": an
anonymous user has an empty username, so ``username[0]`` would fail; the
socket is refused instead (403), and its disconnect does nothing.
"""

from chanserv import Channel, Group  # noqa: F401 (imported as in the tutorial)
from chanserv.auth import channel_session_user, channel_session_user_from_http
from chanserv.sessions import channel_session  # noqa: F401 (as in the tutorial)


# Connected to websocket.connect
@channel_session_user_from_http
def ws_add(message):
    # Not in the tutorial: refuse anonymous users (no username, no group).
    if not message.user.is_authenticated:
        message.reply_channel.send({"close": True})
        return
    # Accept connection
    message.reply_channel.send({"accept": True})
    # Add them to the right group
    Group("chat-%s" % message.user.username[0]).add(message.reply_channel)


# Connected to websocket.receive
@channel_session_user
def ws_message(message):
    Group("chat-%s" % message.user.username[0]).send(
        {
            "text": message["text"],
        }
    )


# Connected to websocket.disconnect
@channel_session_user
def ws_disconnect(message):
    # Not in the tutorial: a refused (anonymous) socket was in no group.
    if not message.user.is_authenticated:
        return
    Group("chat-%s" % message.user.username[0]).discard(message.reply_channel)
