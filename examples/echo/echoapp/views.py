from django.shortcuts import render


def index(request):
    """The page at /: a WebSocket client for the echo consumers."""
    return render(request, "echoapp/index.html")
