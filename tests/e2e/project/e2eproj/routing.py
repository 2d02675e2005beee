from chanserv.routing import route
from e2eproj import consumers, jitter, nodes, ordered

_BROADCAST = r"^/broadcast/(?P<group>[a-z0-9-]+)/$"

channel_routing = [
    route("e2e.marker", consumers.write_marker),
    route("http.request", consumers.slow_http, path=r"^/slow/$"),
    route("http.request", consumers.gated_http, path=r"^/gated/$"),
    route("http.request", consumers.stream_http, path=r"^/cstream/$"),
    route("websocket.connect", ordered.ordered_connect, path=r"^/ordered/$"),
    route("websocket.receive", ordered.ordered_receive, path=r"^/ordered/$"),
    route("http.request", nodes.whoami_http, path=r"^/whoami/$"),
    route("websocket.connect", nodes.chat_add, path=r"^/chat/$"),
    route("websocket.receive", nodes.chat_message, path=r"^/chat/$"),
    route("websocket.disconnect", nodes.chat_disconnect, path=r"^/chat/$"),
    route("websocket.connect", nodes.echo_connect, path=r"^/echo/$"),
    route("websocket.receive", nodes.echo_receive, path=r"^/echo/$"),
    route("e2e.forward", nodes.forward_to_group),
    # tests/e2e/test_routing_timeout.py: a filter that backtracks
    # catastrophically on "/redos/" + "a" * 40 + "!" (with re and regex alike),
    # and the one of the original report (catastrophic with re only).
    route("http.request", nodes.whoami_http, path=r"^/redos/(?:a|a)+$"),
    route("websocket.connect", nodes.echo_connect, path=r"^/redos/(?:a|a)+$"),
    route("http.request", nodes.whoami_http, path=r"^/r/(?:a+)+$"),
    # tests/e2e/test_ordering_per_socket.py: an echo after 0-2 ms of work.
    route("websocket.connect", jitter.jitter_connect, path=r"^/jitter/$"),
    route("websocket.receive", jitter.jitter_receive, path=r"^/jitter/$"),
    # tests/e2e/test_redis_scale.py: group membership for as long as a socket
    # is open, and the group's size over HTTP.
    route("websocket.connect", nodes.group_connect, path=r"^/group/(?P<group>[a-z0-9-]+)/$"),
    route("websocket.receive", nodes.group_receive, path=r"^/group/(?P<group>[a-z0-9-]+)/$"),
    route("websocket.disconnect", nodes.group_disconnect, path=r"^/group/(?P<group>[a-z0-9-]+)/$"),
    route("http.request", nodes.group_size_http, path=r"^/groupsize/(?P<group>[a-z0-9-]+)/$"),
    # tests/e2e/test_slow_readers.py: a socket that broadcasts to a group
    # without being a member of it.
    route("websocket.connect", nodes.broadcast_connect, path=_BROADCAST),
    route("websocket.receive", nodes.group_receive, path=_BROADCAST),
    route("websocket.disconnect", nodes.broadcast_disconnect, path=_BROADCAST),
]
