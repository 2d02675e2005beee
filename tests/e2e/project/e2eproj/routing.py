from chanserv.routing import route
from e2eproj import consumers, nodes, ordered

channel_routing = [
    route("e2e.marker", consumers.write_marker),
    route("http.request", consumers.slow_http, path=r"^/slow/$"),
    route("http.request", consumers.gated_http, path=r"^/gated/$"),
    route("websocket.connect", ordered.ordered_connect, path=r"^/ordered/$"),
    route("websocket.receive", ordered.ordered_receive, path=r"^/ordered/$"),
    route("http.request", nodes.whoami_http, path=r"^/whoami/$"),
    route("websocket.connect", nodes.chat_add, path=r"^/chat/$"),
    route("websocket.receive", nodes.chat_message, path=r"^/chat/$"),
    route("websocket.disconnect", nodes.chat_disconnect, path=r"^/chat/$"),
    route("websocket.connect", nodes.echo_connect, path=r"^/echo/$"),
    route("websocket.receive", nodes.echo_receive, path=r"^/echo/$"),
    route("e2e.forward", nodes.forward_to_group),
]
