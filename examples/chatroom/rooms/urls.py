from django.urls import path

from . import views

app_name = "rooms"

urlpatterns = [
    path("", views.room_list, name="list"),
    path("rooms/<slug:slug>/", views.room, name="room"),
]
