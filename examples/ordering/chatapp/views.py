from django.shortcuts import render


def index(request):
    """The page at /: a chat where each socket numbers its messages."""
    return render(request, "chatapp/index.html")
