"""Models for the data binding tests: one with rooms (groups), tags and a timestamp, one with a UUID key."""

from __future__ import annotations

import uuid

from django.db import models


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Item(models.Model):
    name = models.CharField(max_length=100)
    room = models.CharField(max_length=50, default="lobby")
    value = models.IntegerField(default=0)
    secret = models.CharField(max_length=100, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    tags = models.ManyToManyField(Tag, blank=True)

    multiplier = 3

    @property
    def double(self) -> int:
        return self.value * 2

    def describe(self) -> str:
        return "%s=%d" % (self.name, self.value)


class UUIDItem(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100)
