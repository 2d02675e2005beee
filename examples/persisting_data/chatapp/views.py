from django.shortcuts import render


def index(request):
    """The page at /: pick a room and a username, then chat (JavaScript)."""
    return render(request, "chatapp/index.html")
