"""
Class-based consumers (Channels 1.x ``channels.generic``): see
:mod:`chanserv.generic.base` and :mod:`chanserv.generic.websockets`; there
are no generic HTTP consumers, as in 1.x.  Their code runs in pool threads.
"""

from chanserv.generic.base import BaseConsumer
from chanserv.generic.websockets import (
    JsonWebsocketConsumer,
    WebsocketConsumer,
    WebsocketDemultiplexer,
    WebsocketMultiplexer,
)

__all__ = [
    "BaseConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
    "WebsocketDemultiplexer",
    "WebsocketMultiplexer",
]
