"""
The tutorial's "Security" consumers, with ``channels`` -> ``chanserv``: the
"Authentication" chat (users chat with people whose username has the same
first letter) with ``allowed_hosts_only`` on ``websocket.connect``.

``allowed_hosts_only`` is the outermost decorator: a handshake whose
``Origin`` is missing, malformed, ``null`` or not a host in
``ALLOWED_HOSTS`` is answered 403 before the consumer -- or the session
decorators under it -- runs at all.

Not in the tutorial: an anonymous user (empty username) is refused too, and
:class:`SameOriginOnly` is the subclass the tutorial suggests for "custom
requirements": it accepts only a page from the very scheme, host and port
the WebSocket was opened on.
"""

from chanserv import Channel, Group  # noqa: F401 (imported as in the tutorial)
from chanserv.auth import channel_session_user, channel_session_user_from_http
from chanserv.security.websockets import BaseOriginValidator, allowed_hosts_only, parse_origin
from chanserv.sessions import channel_session  # noqa: F401 (as in the tutorial)


# Connected to websocket.connect
@allowed_hosts_only
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
    # Not in the tutorial: a refused socket (denied origin, anonymous user)
    # was never added to a group.
    if not message.user.is_authenticated:
        return
    Group("chat-%s" % message.user.username[0]).discard(message.reply_channel)


class SameOriginOnly(BaseOriginValidator):
    """
    Accept a handshake only from a page of the WebSocket's own origin: the
    same scheme (``ws`` for ``http``, ``wss`` for ``https``), host and port
    as the ``Host`` the socket was opened on.
    """

    def validate_origin(self, message, origin):
        hosts = [v for k, v in message.content["headers"] if k.lower() == b"host"]
        if len(hosts) != 1 or not hosts[0].isascii():
            return False
        scheme = "https" if message.content.get("scheme") == "wss" else "http"
        own = parse_origin("%s://%s" % (scheme, hosts[0].decode("ascii")))
        theirs = parse_origin(origin)
        if own is None or theirs is None:
            return False
        return (theirs.scheme, theirs.host, theirs.effective_port) == (
            own.scheme,
            own.host,
            own.effective_port,
        )


# Connected to websocket.connect on /same-origin/: the same origin, and an
# allowed host (ws_add's own check), then ws_add.
ws_add_same_origin = SameOriginOnly(ws_add)
