import struct

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

from chanserv import Channel
from e2eproj.diag import diag


def hello(request):
    return HttpResponse("Hello world", content_type="text/plain")


def marker(request):
    Channel("e2e.marker").send(
        {
            "path": request.GET["path"],
            "text": request.GET.get("text", "done"),
            "delay": request.GET.get("delay", "0"),
        }
    )
    return HttpResponse("queued")


def stream_chunk(index, size):
    """Chunk ``index`` of /stream/: its number over and over, so order shows."""
    return struct.pack(">Q", index) * (size // 8)


def stream(request):
    """``?chunks=N&size=S``: N chunks of S bytes (S a multiple of 8), streamed."""
    chunks = int(request.GET.get("chunks", "1024"))
    size = int(request.GET.get("size", "65536"))
    response = StreamingHttpResponse(
        (stream_chunk(i, size) for i in range(chunks)), content_type="application/octet-stream"
    )
    response["Content-Length"] = str(chunks * size)
    return response


def boom(request):
    """A view that fails: Django logs "Internal Server Error" on django.request."""
    raise ZeroDivisionError("boom")


urlpatterns = [
    path("hello/", hello),
    path("boom/", boom),
    path("marker/", marker),
    path("diag/", diag),
    path("stream/", stream),
]
