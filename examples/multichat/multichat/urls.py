"""
The site's pages.  The WebSocket is routed in routing.py, not here.
"""

from chat import views
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

urlpatterns = [
    path("", views.index, name="index"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # Browsers ask for it on every page without an icon link (the admin's).
    path("favicon.ico", RedirectView.as_view(url=static("chat/favicon.svg"))),
]
