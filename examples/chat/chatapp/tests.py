"""
Tests of the chat consumers with ``chanserv.test``: no server and no
reactor, each test on a fresh in-memory channel layer.  Run them from the
folder holding manage.py with ``python manage.py test chatapp``.
"""

from chanserv import Group
from chanserv.routing import route
from chanserv.test import ChannelTestCase, Client, WSClient, apply_routes
from chatapp.consumers import ws_message


class ChatTests(ChannelTestCase):
    def test_connect_is_accepted_and_joins_the_group(self):
        """A new socket is accepted and then gets what is sent to Group("chat")."""
        client = WSClient()
        # Runs ws_add; fails unless its first reply is {"accept": True}.
        client.send_and_consume("websocket.connect", path="/")
        Group("chat").send({"text": "hello"})
        self.assertEqual(client.receive(json=False), "hello")

    def test_a_message_reaches_every_member(self):
        """What one socket sends reaches all the sockets, with the [user] prefix."""
        alice, bob = WSClient(), WSClient()
        alice.send_and_consume("websocket.connect")
        bob.send_and_consume("websocket.connect")
        alice.send_and_consume("websocket.receive", text="hi")
        # The replies are plain text, not JSON: json=False.
        self.assertEqual(alice.receive(json=False), "[user] hi")
        self.assertEqual(bob.receive(json=False), "[user] hi")
        self.assertIsNone(bob.receive())

    def test_a_closed_socket_leaves_the_group(self):
        """After websocket.disconnect a socket gets no more group messages."""
        alice, bob = WSClient(), WSClient()
        alice.send_and_consume("websocket.connect")
        bob.send_and_consume("websocket.connect")
        bob.send_and_consume("websocket.disconnect")
        alice.send_and_consume("websocket.receive", text="anyone?")
        self.assertEqual(alice.receive(json=False), "[user] anyone?")
        self.assertIsNone(bob.receive())

    @apply_routes([route("websocket.receive", ws_message, path=r"^/room/$")])
    def test_one_consumer_under_routes_of_the_test(self):
        """With apply_routes, a plain Client drives one consumer under the test's routing."""
        client = Client()
        client.join_group("chat")
        client.send_and_consume("websocket.receive", {"text": "raw", "path": "/room/"})
        self.assertEqual(client.receive(), {"text": "[user] raw"})
