"""
Data binding (Channels 1.x ``channels.binding``): model changes sent to
groups, and clients' messages applied to models.  See
:mod:`chanserv.binding.base` and :mod:`chanserv.binding.websockets`;
outbound code runs in any thread that saves, inbound in a pool thread.
"""

from chanserv.binding.base import Binding

__all__ = ["Binding"]
