from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .consumers import MAX_DELAY
from .models import MAX_MESSAGE_LENGTH, Room


@login_required
def index(request):
    """The rooms this user may enter, and the chat client."""
    rooms = Room.objects.all()
    if not request.user.is_staff:
        rooms = rooms.filter(staff_only=False)
    return render(
        request,
        "chat/index.html",
        {
            "rooms": rooms,
            "socket_path": "/chat/stream/",
            "max_length": MAX_MESSAGE_LENGTH,
            "max_delay": MAX_DELAY,
        },
    )
