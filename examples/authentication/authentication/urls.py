"""The login, logout, sign-up and chat pages: plain Django views."""

from chatapp import views
from django.contrib.auth import views as auth_views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
]
