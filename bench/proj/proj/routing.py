from chanserv.routing import route
from proj import consumers

CHAT = r"^/chat/(?P<room>[\w-]+)/$"

channel_routing = [
    route("websocket.receive", consumers.echo, path=r"^/echo/$"),
    route("websocket.receive", consumers.slow, path=r"^/slow/$"),
    route("websocket.connect", consumers.chat_connect, path=CHAT),
    route("websocket.receive", consumers.chat_receive, path=CHAT),
    route("websocket.disconnect", consumers.chat_disconnect, path=CHAT),
]
