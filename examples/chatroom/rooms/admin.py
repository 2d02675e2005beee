from django.contrib import admin

from .models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_by", "created_at"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "room", "user", "text"]
    list_filter = ["room"]
    search_fields = ["text", "user__username"]
    raw_id_fields = ["user"]
