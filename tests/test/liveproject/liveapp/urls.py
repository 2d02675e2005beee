"""One view, served by the live server's worker threads (pool thread)."""

from django.http import HttpResponse
from django.urls import path


def hello(request):
    return HttpResponse("hello from %s" % (request.path,))


urlpatterns = [path("hello/", hello)]
