from django import forms
from django.utils.text import slugify

from .models import Room


class RoomForm(forms.ModelForm):
    """A new room: its name, from which the slug (its URL) is made."""

    class Meta:
        model = Room
        fields = ["name"]

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        slug = slugify(name)
        if not slug:
            raise forms.ValidationError("Use at least one letter or digit.")
        if Room.objects.filter(slug=slug).exists():
            raise forms.ValidationError("There is already a room called that.")
        self.instance.slug = slug
        return name
