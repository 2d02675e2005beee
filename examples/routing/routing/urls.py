"""HTTP requests no route in routing.py takes go to these views."""

from chatapp import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
]
