import os
import struct
import time
from pathlib import Path

from django.http import HttpResponse

from chanserv.handler import AsgiHandler


def write_marker(message):
    """Write message["text"] to the file message["path"] after message["delay"]."""
    time.sleep(float(message.get("delay", 0)))
    Path(message["path"]).write_text(message["text"])


def slow_http(message):
    """Answer after ?delay seconds; marks start and end in $E2E_MARKER_DIR."""
    query = message["query_string"].decode()
    delay = float(query.partition("delay=")[2] or 0)
    marker_dir = os.environ.get("E2E_MARKER_DIR")
    if marker_dir:
        Path(marker_dir, "started").write_text("1")
    time.sleep(delay)
    if marker_dir:
        Path(marker_dir, "finished").write_text("1")
    for chunk in AsgiHandler.encode_response(HttpResponse("slept %s" % delay)):
        message.reply_channel.send(chunk)


def gated_http(message):
    """
    Hold a worker thread until the test lets go: mark ``started`` in
    $E2E_MARKER_DIR, then block opening the FIFO ``gate`` there until the
    test opens it for writing and closes it.
    """
    marker_dir = Path(os.environ["E2E_MARKER_DIR"])
    Path(marker_dir, "started").write_text("1")
    with open(marker_dir / "gate", "rb") as gate:
        gate.read()
    for chunk in AsgiHandler.encode_response(HttpResponse("released")):
        message.reply_channel.send(chunk)


def stream_http(message):
    """
    A Channels 1.x streamed response made by the consumer itself: ?chunks
    chunks of ?size bytes, chunk i being its 8-byte big-endian number
    repeated, all held until the consumer returns and then sent in order.
    """
    query = dict(part.split("=", 1) for part in message["query_string"].decode().split("&"))
    chunks, size = int(query["chunks"]), int(query["size"])
    message.reply_channel.send(
        {
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(chunks * size).encode()),
            ],
            "content": b"",
            "more_content": True,
        }
    )
    for i in range(chunks):
        message.reply_channel.send(
            {"content": struct.pack(">Q", i) * (size // 8), "more_content": i < chunks - 1}
        )
