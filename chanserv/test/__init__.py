"""
Helpers for testing consumers in a project's own test suite, with the names
of Channels 1.x's ``channels.test``.  They run in the test's own thread
(any thread), with no reactor -- except :class:`ChannelLiveServerTestCase`,
whose server runs on the reactor in a background thread.
"""

from chanserv.test.base import (
    ChannelTestCase,
    ChannelTestCaseMixin,
    Client,
    TransactionChannelTestCase,
    apply_routes,
)
from chanserv.test.http import HttpClient
from chanserv.test.liveserver import ChannelLiveServerTestCase
from chanserv.test.websocket import WSClient

__all__ = [
    "ChannelLiveServerTestCase",
    "ChannelTestCase",
    "ChannelTestCaseMixin",
    "Client",
    "HttpClient",
    "TransactionChannelTestCase",
    "WSClient",
    "apply_routes",
]
