from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import IntegrityError, transaction
from django.db.models import Count, Max
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from .forms import RoomForm
from .models import MAX_MESSAGE_LENGTH, Room


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def room_list(request):
    """The rooms, to join one, and a form to create a new one."""
    form = RoomForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.instance.created_by = request.user
        try:
            with transaction.atomic():
                room = form.save()
        except IntegrityError:  # someone created it just now
            form.add_error("name", "There is already a room called that.")
        else:
            return redirect(room)
    rooms = Room.objects.annotate(
        message_count=Count("messages"), last_message_at=Max("messages__timestamp")
    )
    return render(request, "rooms/room_list.html", {"rooms": rooms, "form": form})


@login_required
def room(request, slug):
    """A room: its recent history, rendered here, and the chat client."""
    room = get_object_or_404(Room, slug=slug)
    return render(
        request,
        "rooms/room.html",
        {
            "room": room,
            "history": room.history(),
            "max_length": MAX_MESSAGE_LENGTH,
            "socket_path": "/rooms/%s/" % room.slug,
        },
    )


@require_http_methods(["GET", "HEAD", "POST"])
def signup(request):
    """A new account, logged in at once."""
    if request.user.is_authenticated:
        return redirect("rooms:list")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("rooms:list")
    return render(request, "registration/signup.html", {"form": form})
