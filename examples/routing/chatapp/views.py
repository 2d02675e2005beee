from django.shortcuts import render


def index(request):
    """The page at /: join a room (/chat/<room>/) and chat (JavaScript)."""
    return render(request, "chatapp/index.html")
