"""
The site's pages.  WebSockets are routed in routing.py, not here; HTTP
requests all come to these views (routing.py has no ``http.request`` route).
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from rooms import views

urlpatterns = [
    path("", include("rooms.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path("admin/", admin.site.urls),
]
