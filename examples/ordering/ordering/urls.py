"""HTTP goes to these views: routing.py has no ``http.request`` route."""

from chatapp import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
]
