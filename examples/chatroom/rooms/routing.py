"""
The routes of a room's WebSocket, ``/rooms/<slug>/``.  The project's routing
includes them with ``path=r"^/rooms"``, which is chopped off the path before
these patterns see it; the named group becomes the consumers' ``slug``
keyword argument.
"""

from chanserv.routing import route

from .consumers import ws_connect, ws_disconnect, ws_message

ROOM_PATH = r"^/(?P<slug>[-a-zA-Z0-9_]+)/$"

room_routing = [
    route("websocket.connect", ws_connect, path=ROOM_PATH),
    route("websocket.receive", ws_message, path=ROOM_PATH),
    route("websocket.disconnect", ws_disconnect, path=ROOM_PATH),
]
