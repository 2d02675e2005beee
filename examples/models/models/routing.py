"""
The tutorial's routing for "Models": the WebSocket consumers, and
``msg_consumer`` on the ``chat-messages`` channel.  HTTP requests go to the
Django views (urls.py).
"""

from chatapp.consumers import msg_consumer, ws_connect, ws_disconnect, ws_message

from chanserv.routing import route

channel_routing = [
    route("websocket.connect", ws_connect),
    route("websocket.receive", ws_message),
    route("websocket.disconnect", ws_disconnect),
    route("chat-messages", msg_consumer),
]
