"""
:class:`WebsocketBinding`: data binding over a demultiplexed WebSocket, as
in Channels 1.x -- JSON frames ``{"stream": ..., "payload": {"action",
"pk", "data", "model"}}`` out, ``{"action", "pk", "data"}`` payloads in
through :class:`~chanserv.generic.websockets.WebsocketDemultiplexer` --
and :class:`WebsocketBindingWithMembers`, which also sends attributes,
properties and methods.  Serialising runs in any thread that saves or
deletes; inbound handling runs in the pool thread consuming the frame.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from django.core import serializers
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.serializers.base import DeserializedObject
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from chanserv.binding.base import CREATE, DELETE, UPDATE, Binding
from chanserv.generic.websockets import WebsocketMultiplexer
from chanserv.log import Logger
from chanserv.message import Message
from chanserv.ordering import enforce_ordering
from chanserv.types import Content, JSONValue

__all__ = ["WebsocketBinding", "WebsocketBindingWithMembers"]

log = Logger()


class WebsocketBinding(Binding):
    """
    A :class:`~chanserv.binding.base.Binding` speaking JSON on one stream
    of a demultiplexed WebSocket: define :attr:`model`, :attr:`fields` (or
    :attr:`exclude`), :attr:`stream`, :meth:`group_names` and
    :meth:`has_permission`, and list ``stream: Binding.consumer`` in a
    :class:`~chanserv.generic.websockets.WebsocketDemultiplexer`'s
    ``consumers``.  Data goes through Django's serialisers.

    Differences from 1.x, all fixes: clients can set only the fields the
    binding allows -- on create too (1.x let a create set any field) --
    and never the primary key; ``fields = "__all__"`` or ``("__all__",)``
    mean every field on update as on send; an inbound create is a normal
    ``save()`` (1.x saved raw, which skips ``auto_now``/``auto_now_add``);
    a malformed payload raises ``ValueError``.

    :raises ImproperlyConfigured: at class creation, no :attr:`stream`.
    """

    model = None  # abstract

    #: The demultiplexer stream this binding sends and receives on.
    stream: ClassVar[str | None] = None

    strict_ordering: ClassVar[bool] = False
    #: Removed in Channels 1.0; True raises ValueError when the consumer is built.
    slight_ordering: ClassVar[bool] = False

    @classmethod
    def check_configuration(cls) -> None:
        """Binding's checks, and :attr:`stream` must be a non-empty str."""
        super().check_configuration()
        if not isinstance(cls.stream, str) or not cls.stream:
            raise ImproperlyConfigured(
                "WebsocketBinding %s has no stream: set stream to the demultiplexer stream "
                "name its messages use" % (cls.__qualname__,)
            )

    # -- outbound -------------------------------------------------------------------

    @classmethod
    def encode(cls, stream: str | None, payload: Content) -> Content:
        """A text frame ``{"stream": stream, "payload": payload}`` (Django's JSON encoder)."""
        assert stream is not None
        return WebsocketMultiplexer.encode(stream, payload)

    def serialize(self, instance: models.Model, action: str) -> Content:
        """``{"action", "pk", "data", "model"}`` for ``instance``."""
        return {
            "action": action,
            "pk": instance.pk,
            "data": self.serialize_data(instance),
            "model": self.model_label,
        }

    def serialize_data(self, instance: models.Model) -> dict[str, JSONValue]:
        """The allowed fields of ``instance`` as JSON-safe values, via Django's JSON serialiser."""
        if self.all_fields():
            names = None
        else:
            meta = instance._meta
            names = [f.name for f in meta.fields + meta.many_to_many if self.field_allowed(f)]
        data = serializers.serialize("json", [instance], fields=names)
        fields: dict[str, JSONValue] = json.loads(data)[0]["fields"]
        return fields

    # -- inbound --------------------------------------------------------------------

    @classmethod
    def get_handler(cls) -> Callable[..., None]:
        """Binding's handler, under :func:`~chanserv.ordering.enforce_ordering` if asked."""
        handler = super().get_handler()
        if cls.strict_ordering:
            return enforce_ordering(handler)
        if cls.slight_ordering:
            return enforce_ordering(handler, slight=True)
        return handler

    @classmethod
    def trigger_inbound(cls, message: Message, **kwargs: Any) -> None:
        # Any: the route's and the demultiplexer's keyword arguments, as in Channels 1.x.
        """Binding's, for ``websocket.receive`` only: connects and disconnects pass through."""
        if message.channel.name != "websocket.receive":
            return
        super().trigger_inbound(message, **kwargs)

    def deserialize(self, message: Message) -> tuple[str, JSONValue, JSONValue]:
        """
        ``(action, pk, data)`` from the frame's JSON text (the payload the
        demultiplexer passed on).

        :raises ValueError: not JSON, not an object, no str ``action``, no
            ``pk`` for an update or delete, or no ``data`` object for a
            create or update.
        """
        text = message.get("text")
        if not isinstance(text, str):
            raise ValueError("A binding frame must be JSON text")
        body = json.loads(text)
        if not isinstance(body, dict):
            raise ValueError("A binding payload must be a JSON object, not %r" % (body,))
        action = body.get("action")
        if not isinstance(action, str):
            raise ValueError("A binding payload needs a str action, got %r" % (action,))
        pk = body.get("pk")
        data = body.get("data")
        if action in (UPDATE, DELETE) and pk is None:
            raise ValueError("A binding %s needs a pk" % (action,))
        if action in (CREATE, UPDATE) and not isinstance(data, dict):
            raise ValueError("A binding %s needs a data object, got %r" % (action, data))
        return action, pk, data

    def _settable(self, data: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
        """
        The items of ``data`` a client may set: allowed fields, never the
        primary key.  The others are logged and left out (1.x ignored them).

        :raises ValueError: a key names no field of the model.
        """
        model: Any = self.model
        forward = set(model._meta.fields + model._meta.many_to_many)
        settable: dict[str, JSONValue] = {}
        refused = []
        for name, value in data.items():
            try:
                field = model._meta.get_field(name)
            except FieldDoesNotExist:
                field = None
            if field not in forward:
                raise ValueError("%s has no field %r a client can set" % (self.model_label, name))
            if field.primary_key or not self.field_allowed(field):
                refused.append(name)
            else:
                settable[name] = value
        if refused:
            log.warn(
                "{binding} left out fields a client may not set: {fields}",
                binding=type(self).__qualname__,
                fields=", ".join(sorted(refused)),
            )
        return settable

    def _hydrate(self, pk: JSONValue, data: Mapping[str, JSONValue]) -> DeserializedObject:
        """An unsaved instance (and its many-to-many data) built from ``data`` by Django's serialiser."""
        record: dict[str, JSONValue] = {"model": self.model_label, "fields": dict(data)}
        if pk is not None:  # a create leaves the pk to the model
            record["pk"] = pk
        return next(iter(serializers.deserialize("python", [record])))

    @staticmethod
    def _set_many(instance: models.Model, hydrated: DeserializedObject) -> None:
        for name, values in (hydrated.m2m_data or {}).items():
            getattr(instance, name).set(values)

    def create(self, data: JSONValue) -> None:
        """Create an instance from the settable fields of ``data``; its signals send it out."""
        hydrated = self._hydrate(None, self._settable(data))
        hydrated.object.save()
        self._set_many(hydrated.object, hydrated)

    def update(self, pk: JSONValue, data: JSONValue) -> None:
        """
        Set the settable fields of ``data`` on instance ``pk`` and save it.

        :raises django.core.exceptions.ObjectDoesNotExist: no instance ``pk``.
        """
        model: Any = self.model
        instance = model._default_manager.get(pk=pk)
        settable = self._settable(data)
        hydrated = self._hydrate(pk, settable)
        for name in settable:
            field = model._meta.get_field(name)
            if not field.many_to_many:
                setattr(instance, field.attname, getattr(hydrated.object, field.attname))
        instance.save()
        self._set_many(instance, hydrated)


class WebsocketBindingWithMembers(WebsocketBinding):
    """
    A :class:`WebsocketBinding` that also sends the members named in
    :attr:`send_members` -- attributes, properties, or methods taking only
    ``self``; ``"a.b"`` follows attributes and is sent as ``"a__b"`` --
    encoded with Django's JSON encoder (dates, decimals, UUIDs).
    """

    model = None  # abstract
    send_members: ClassVar[Sequence[str]] = []
    encoder = DjangoJSONEncoder()

    def serialize_data(self, instance: models.Model) -> dict[str, JSONValue]:
        """The fields, plus the :attr:`send_members` (a field keeps its value)."""
        data = super().serialize_data(instance)
        members: dict[str, Any] = {}
        # Any: a member is whatever the model's attribute or method holds.
        for dotted in self.send_members:
            member: Any = instance
            for name in dotted.split("."):
                member = getattr(member, name)
            members[dotted.replace(".", "__")] = member() if callable(member) else member
        for key, value in json.loads(self.encoder.encode(members)).items():
            data.setdefault(key, value)
        return data
