from django.shortcuts import render


def index(request):
    """The page at /: a WebSocket client for the chat consumers."""
    return render(request, "chatapp/index.html")
