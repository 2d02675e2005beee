"""
WebSocket consumers of the per-socket ordering test
(tests/e2e/test_ordering_per_socket.py), on ``/jitter/``: every text is
echoed back after 0-2 ms of random blocking work, so that two messages of
one socket that run at the same time are likely to finish out of order.
"""

import random
import time


def jitter_connect(message):
    message.reply_channel.send({"accept": True})


def jitter_receive(message):
    time.sleep(random.uniform(0, 0.002))
    message.reply_channel.send({"text": message["text"]})
