"""
chanserv: the Django Channels 1.x programming model on one Twisted
application server.  The public names are Channels 1.x's, loaded on first
use (PEP 562), so tutorial code runs with ``channels`` replaced by
``chanserv`` and importing a submodule loads no Django.  Any thread (the
import system's lock guards each first load).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chanserv.lazy import lazy_names

if TYPE_CHECKING:
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

# Each public name and the module that defines it.
_HOMES = {
    "DEFAULT_CHANNEL_LAYER": "chanserv.channel",
    "Channel": "chanserv.channel",
    "Group": "chanserv.channel",
    "channel_layers": "chanserv.asgi",
    "include": "chanserv.routing",
    "route": "chanserv.routing",
    "route_class": "chanserv.routing",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES, __all__)
