from django.http import HttpResponse
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


urlpatterns = [path("hello/", hello), path("marker/", marker), path("diag/", diag)]
