"""
chanserv: the Django Channels 1.x programming model on one Twisted
application server.

The public names are the Channels 1.x ones, so that tutorial code runs with
``channels`` replaced by ``chanserv`` in its imports.
"""

from chanserv.asgi import channel_layers
from chanserv.channel import DEFAULT_CHANNEL_LAYER, Channel, Group
from chanserv.routing import include, route, route_class

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "Channel",
    "Group",
    "channel_layers",
    "include",
    "route",
    "route_class",
]
