"""HTTP goes to these views: routing.py has no ``http.request`` route."""

from django.urls import path
from echoapp import views

urlpatterns = [
    path("", views.index, name="index"),
]
