"""
The admin: rooms, and messages -- a message added, edited or deleted here
reaches the room's open pages through the data binding, like any save.
"""

from django.contrib import admin

from .models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["title", "staff_only"]
    list_filter = ["staff_only"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["created", "room", "user", "text"]
    list_filter = ["room"]
    search_fields = ["text", "user__username"]
