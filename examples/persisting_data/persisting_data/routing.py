"""
The tutorial's routing for "Persisting Data": the room name is a named group
of the path (``/lobby/`` is room ``lobby``).  A WebSocket on any other path
is accepted by the default consumer and joins no room; HTTP requests go to
the Django views (urls.py).
"""

from chatapp.consumers import ws_connect, ws_disconnect, ws_message

from chanserv.routing import route

channel_routing = [
    route("websocket.connect", ws_connect, path=r"^/(?P<room_name>[a-zA-Z0-9_]+)/$"),
    route("websocket.receive", ws_message, path=r"^/(?P<room_name>[a-zA-Z0-9_]+)/$"),
    route("websocket.disconnect", ws_disconnect, path=r"^/(?P<room_name>[a-zA-Z0-9_]+)/$"),
]
