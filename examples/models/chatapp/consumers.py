"""
The tutorial's "Models" consumers, with ``channels`` -> ``chanserv``.

``ws_message`` only puts the message on the ``chat-messages`` channel and
returns; ``msg_consumer`` saves it as a ``ChatMessage`` and broadcasts it to
the room -- whatever sent it to ``chat-messages``: a socket, the view in
views.py, or ``manage.py post_message``.
"""

from chanserv import Channel, Group
from chanserv.sessions import channel_session

from .models import ChatMessage


# Connected to chat-messages
def msg_consumer(message):
    # Save to model
    room = message.content["room"]
    ChatMessage.objects.create(
        room=room,
        message=message.content["message"],
    )
    # Broadcast to listening sockets
    Group("chat-%s" % room).send(
        {
            "text": message.content["message"],
        }
    )


# Connected to websocket.connect
@channel_session
def ws_connect(message):
    # Work out room name from path (ignore slashes)
    room = message.content["path"].strip("/")
    # Save room in session and add us to the group
    message.channel_session["room"] = room
    Group("chat-%s" % room).add(message.reply_channel)
    # Accept the connection request
    message.reply_channel.send({"accept": True})


# Connected to websocket.receive
@channel_session
def ws_message(message):
    # Stick the message onto the processing queue
    Channel("chat-messages").send(
        {
            "room": message.channel_session["room"],
            "message": message["text"],
        }
    )


# Connected to websocket.disconnect
@channel_session
def ws_disconnect(message):
    Group("chat-%s" % message.channel_session["room"]).discard(message.reply_channel)
