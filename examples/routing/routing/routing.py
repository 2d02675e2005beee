"""
The tutorial's "Routing" example, with ``channels`` -> ``chanserv``.

The chat's routes are included under ``^/chat``: the include matches the
start of the path and chops it off, so the routes inside see the rest
(``/lobby/`` of ``/chat/lobby/``) and take ``room_name`` from it.  Only
``POST /poll/`` goes to ``poll_consumer``; every other HTTP request falls
through to the Django views (urls.py), and a WebSocket on a path outside
``/chat/<room_name>/`` is accepted by the default consumer into no room.

Not in the tutorial's listing: the ``websocket.receive`` route, so that the
chat's messages go somewhere.
"""

from chatapp.consumers import chat_connect, chat_disconnect, chat_message, poll_consumer

from chanserv.routing import include, route

http_routing = [
    route("http.request", poll_consumer, path=r"^/poll/$", method=r"^POST$"),
]

chat_routing = [
    route("websocket.connect", chat_connect, path=r"^/(?P<room_name>[a-zA-Z0-9_]+)/$"),
    # Not in the tutorial's listing: the room's messages.
    route("websocket.receive", chat_message, path=r"^/(?P<room_name>[a-zA-Z0-9_]+)/$"),
    route("websocket.disconnect", chat_disconnect),
]

routing = [
    # You can use a string import path as the first argument as well.
    include(chat_routing, path=r"^/chat"),
    include(http_routing),
]
