from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from chanserv import Channel

from .models import ChatMessage


def index(request):
    """The page at /: pick a room."""
    return render(request, "chatapp/index.html")


def room(request, room):
    """A room: its stored messages, then the live ones over a WebSocket."""
    history = ChatMessage.objects.filter(room=room).order_by("id")
    return render(request, "chatapp/room.html", {"room": room, "history": history})


@require_POST
def post_message(request, room):
    """
    Say something in ``room`` from a view (a form post, no WebSocket): the
    message goes to ``chat-messages`` like a socket's, so ``msg_consumer``
    saves and broadcasts it.
    """
    text = request.POST.get("message", "")
    if text:
        Channel("chat-messages").send({"room": room, "message": text})
    return redirect("room", room=room)
