"""
ChannelLiveServerTestCase in a project's own suite, run by ``manage.py
test``: a real server on a free port, its consumers in pool threads, the
tests in the main thread.
"""

import urllib.request

from django.contrib.auth.models import User
from websockets.sync.client import connect

from chanserv import Group
from chanserv.test import ChannelLiveServerTestCase


class LiveServerTests(ChannelLiveServerTestCase):
    def test_http_view_and_static_file(self):
        """The live server serves Django views and, DEBUG off, static files."""
        with urllib.request.urlopen(self.live_server_url + "/hello/", timeout=10) as r:
            self.assertEqual(r.read(), b"hello from /hello/")
        with urllib.request.urlopen(self.live_server_url + "/static/live.css", timeout=10) as r:
            self.assertEqual(r.read(), b"body { color: #654321; }\n")

    def test_websocket_consumer_sees_the_tests_data(self):
        """Rows the test commits are seen by consumers in the server's threads."""
        User.objects.create(username="ann")
        with connect(self.live_server_ws_url + "/any/", open_timeout=10) as ws:
            ws.send("first")
            self.assertEqual(ws.recv(timeout=10), "first: 1 users")
            User.objects.create(username="bob")
            ws.send("second")
            self.assertEqual(ws.recv(timeout=10), "second: 2 users")

    def test_group_send_from_the_test_reaches_the_socket(self):
        """A Group send from the test's thread reaches a socket of the live server."""
        with connect(self.live_server_ws_url + "/any/", open_timeout=10) as ws:
            ws.send("joined?")
            self.assertEqual(ws.recv(timeout=10), "joined?: 0 users")
            Group("live").send({"text": "from the test"})
            self.assertEqual(ws.recv(timeout=10), "from the test")


class SecondLiveServerTests(ChannelLiveServerTestCase):
    worker_threads = 2

    def test_a_second_class_gets_a_server_of_its_own(self):
        """A later class starts its own server on the same background reactor."""
        self.assertTrue(self.live_server_url.startswith("http://localhost:"))
        with connect(self.live_server_ws_url + "/any/", open_timeout=10) as ws:
            ws.send("again")
            self.assertEqual(ws.recv(timeout=10), "again: 0 users")
