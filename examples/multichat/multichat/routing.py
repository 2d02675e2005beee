"""
The channel routing: the page's socket, ``/chat/stream/``, goes to the
demultiplexer (a class route: connect, receive and disconnect); delayed
messages come back from the delay server on ``chat.delayed``.  A WebSocket
to any other path is refused.  HTTP goes to the Django views (urls.py).
"""

from chat.consumers import DELAYED_CHANNEL, Demultiplexer, deliver_delayed, refuse

from chanserv import route, route_class

channel_routing = [
    route_class(Demultiplexer, path=r"^/chat/stream/$"),
    route(DELAYED_CHANNEL, deliver_delayed),
    route("websocket.connect", refuse),
]
