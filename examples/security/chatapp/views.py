from django import forms
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.shortcuts import redirect, render


@login_required
def index(request):
    """
    The chat page, for logged-in users only.  Its WebSocket goes to this
    server: the browser sends the session cookie, and the page's origin,
    which ``allowed_hosts_only`` checks.
    """
    return render(request, "chatapp/index.html", {"letter": request.user.username[:1]})


class SignUpForm(UserCreationForm):
    def clean_username(self):
        username = super().clean_username()
        # Channel and group names are ASCII: the group is "chat-<first letter>".
        if not (username[:1].isascii() and username[:1].isalnum()):
            raise forms.ValidationError("Start your username with a letter (a-z) or a digit.")
        return username


def signup(request):
    """Create an account (Django's UserCreationForm), then log in."""
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("login")
    return render(request, "registration/signup.html", {"form": form})
