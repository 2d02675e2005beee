"""
The channel routing (the tutorial's "Routing" section): the room sockets
live under ``/rooms``, where :mod:`rooms.routing` takes the room's slug from
the rest of the path.  A WebSocket to any other path is refused.

There is no ``http.request`` route, so HTTP requests go to the Django views
(urls.py) -- and, with DEBUG on, ``/static/`` to the static files.
"""

from rooms.consumers import ws_refuse

from chanserv.routing import include, route

channel_routing = [
    # A string import path works as well as the list itself.
    include("rooms.routing.room_routing", path=r"^/rooms"),
    route("websocket.connect", ws_refuse),
]
