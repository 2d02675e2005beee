"""Views and URL patterns for tests/test_handler.py and tests/test_staticfiles.py."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

from django.http import (
    FileResponse,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path, reverse

from chanserv.exceptions import ResponseLater

#: Sizes the chunking tests use.
CHUNK = 512 * 1024


def hello(request):
    return HttpResponse("Hello world", content_type="text/plain")


def where(request):
    return JsonResponse(
        {
            "path": request.path,
            "path_info": request.path_info,
            "script_name": request.META["SCRIPT_NAME"],
            "reverse": reverse("where"),
        }
    )


def boom(request):
    raise ValueError("the view failed")


def later(request):
    raise ResponseLater()


def cookie(request):
    response = HttpResponse("cookie")
    response.set_cookie("flavour", "oatmeal", httponly=True)
    response.set_cookie("second", "2")
    return response


def headers(request):
    response = HttpResponse("headers")
    response["X-Custom-Header"] = "Value"
    return response


def big(request):
    return HttpResponse(b"x" * (2 * CHUNK + 10), content_type="application/octet-stream")


def empty(request):
    return HttpResponse(b"")


def stream(request):
    return StreamingHttpResponse(iter([b"first", b"", b"y" * (CHUNK + 100), b"last"]))


def empty_stream(request):
    return StreamingHttpResponse(iter([]))


def file(request):
    data = bytes(range(256)) * (CHUNK * 2 // 256) + b"tail"
    return FileResponse(io.BytesIO(data), content_type="application/octet-stream")


def body(request):
    files = {name: f.size for name, f in request.FILES.items()}
    return JsonResponse(
        {"length": len(request.body) if not files else None, "post": request.POST, "files": files}
    )


#: Set by the isolation test: every request of a round waits at it.
barrier: threading.Barrier | None = None


def isolation(request):
    if barrier is not None:
        barrier.wait()
    return JsonResponse(
        {
            "session_key": request.session.session_key,
            "request_id": request.META.get("HTTP_X_REQUEST_ID"),
        }
    )


urlpatterns = [
    path("hello/", hello, name="hello"),
    path("where/", where, name="where"),
    path("boom/", boom),
    path("later/", later),
    path("cookie/", cookie),
    path("headers/", headers),
    path("big/", big),
    path("empty/", empty),
    path("stream/", stream),
    path("empty-stream/", empty_stream),
    path("file/", file),
    path("body/", body),
    path("isolation/", isolation),
]


def broken_500(request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
    raise RuntimeError("the 500 handler failed too")


class BrokenErrorHandlerUrls:
    """A URLconf (as an object) whose handler500 fails."""

    urlpatterns = urlpatterns
    handler500 = staticmethod(broken_500)


class CatchEverythingMiddleware:
    """Exception middleware that turns any exception into a response."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_exception(self, request: Any, exception: Exception) -> HttpResponse:
        return HttpResponse(json.dumps({"caught": type(exception).__name__}), status=500)
