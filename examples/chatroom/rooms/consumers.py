"""
The WebSocket consumers of a room (``ws://host/rooms/<slug>/``), in the
tutorial's style: ``channels`` replaced by ``chanserv`` in the imports.

- ``ws_connect`` checks the Origin (``@allowed_hosts_only``, against
  Cross-Site WebSocket Hijacking), copies the login from the HTTP session
  into the channel session (``@channel_session_user_from_http``), refuses
  anonymous users and unknown rooms, adds the socket to the room's Group and
  sends back the messages the client has not seen yet (``?after=<id>``);
- ``ws_message`` saves each message in the database and broadcasts it to the
  room as JSON ``{"id", "user", "text", "time"}``; ``@enforce_ordering``
  keeps one person's messages in the order they were typed, whichever worker
  threads run them;
- ``ws_disconnect`` takes the socket out of the Group.

Channel sessions (one per socket, in the database like the HTTP sessions)
expire like HTTP sessions; ``manage.py clearsessions`` deletes the old ones.

A client sends ``{"text": "..."}``; a message it got wrong is answered, to
that socket only, with ``{"error": "..."}``.
"""

import json
from urllib.parse import parse_qs

from chanserv import Group
from chanserv.auth import channel_session_user, channel_session_user_from_http
from chanserv.security.websockets import allowed_hosts_only
from chanserv.sessions import enforce_ordering

from .models import MAX_MESSAGE_LENGTH, Message, Room


def room_group(slug):
    """The Group of every socket in the room ``slug``."""
    return Group("room-%s" % slug)


def send_json(channel, data):
    """Send ``data`` as a JSON text frame to a Channel or a Group."""
    channel.send({"text": json.dumps(data)})


def refuse(message):
    """Refuse the handshake (403) -- or close the socket if it is open."""
    message.reply_channel.send({"close": True})


def after_id(message):
    """The ``after`` query parameter: a message id, or None."""
    query = message.content.get("query_string") or b""
    if isinstance(query, bytes):
        query = query.decode("ascii", "replace")
    values = parse_qs(query).get("after")
    if values and values[0].isascii() and values[0].isdigit() and len(values[0]) < 19:
        return int(values[0])
    return None


def parse_text(content):
    """``(text, None)`` from a client's ``{"text": "..."}``, or ``(None, error)``."""
    try:
        text = json.loads(content["text"])["text"].strip()
        text.encode("utf-8")  # JSON may carry lone surrogates ("\\ud800")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, 'Send JSON: {"text": "..."}.'
    if not text:
        return None, "The message is empty."
    if len(text) > MAX_MESSAGE_LENGTH:
        return None, "A message has at most %d characters." % MAX_MESSAGE_LENGTH
    return text, None


# Connected to websocket.connect, path /rooms/<slug>/
@allowed_hosts_only
@channel_session_user_from_http
def ws_connect(message, slug):
    if not message.user.is_authenticated:
        refuse(message)
        return
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        refuse(message)
        return
    # Join first, then read the history: a message saved in between is sent
    # twice rather than never (the client drops the second copy by id).
    room_group(slug).add(message.reply_channel)
    message.reply_channel.send({"accept": True})
    after = after_id(message)
    if after is not None:
        for missed in room.history(after=after):
            send_json(message.reply_channel, missed.as_dict())


# Connected to websocket.receive, path /rooms/<slug>/
@enforce_ordering
@channel_session_user
def ws_message(message, slug):
    if not message.user.is_authenticated:
        # The login went away (password changed, session expired): stop.
        refuse(message)
        return
    room = Room.objects.filter(slug=slug).first()
    if room is None:  # deleted while the socket was open
        refuse(message)
        return
    text, error = parse_text(message.content)
    if error:
        send_json(message.reply_channel, {"error": error})
        return
    saved = Message.objects.create(room=room, user=message.user, text=text)
    send_json(room_group(slug), saved.as_dict())


# Connected to websocket.disconnect, path /rooms/<slug>/
# No session decorator: it needs neither the user nor the session, and a
# refused handshake gets a websocket.disconnect too -- @channel_session here
# would create an (empty) channel session for every refused socket.
def ws_disconnect(message, slug):
    room_group(slug).discard(message.reply_channel)


# Connected to websocket.connect for any other path
def ws_refuse(message):
    refuse(message)
