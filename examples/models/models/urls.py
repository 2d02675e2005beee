"""The pages: pick a room, and a room with its stored messages."""

from chatapp import views
from django.urls import path, re_path

urlpatterns = [
    path("", views.index, name="index"),
    re_path(r"^rooms/(?P<room>[a-zA-Z0-9_]+)/$", views.room, name="room"),
    re_path(r"^rooms/(?P<room>[a-zA-Z0-9_]+)/post/$", views.post_message, name="post"),
]
