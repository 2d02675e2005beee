"""
chanserv.binding.websockets: WebsocketBinding's outbound frames (fields,
exclude, '__all__', non-integer keys, members), its inbound create, update
and delete through WebsocketDemultiplexer with WSClient (permission allowed
and refused, fields a client may not set), and serialize/deserialize.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings

from chanserv.binding.base import CREATE, DELETE, UPDATE
from chanserv.binding.websockets import WebsocketBinding, WebsocketBindingWithMembers
from chanserv.generic.websockets import WebsocketDemultiplexer
from chanserv.message import Message
from chanserv.test import ChannelTestCase, TransactionChannelTestCase, WSClient, apply_routes
from tests.binding.app.models import Item, Tag, UUIDItem

FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class ItemBinding(WebsocketBinding):
    """Items of every room go to "items"; only logged-in users may change them."""

    model = None  # abstract: each test makes its concrete binding
    stream = "items"

    @classmethod
    def group_names(cls, instance: Any) -> list[str]:
        return ["items"]

    def has_permission(self, user: Any, action: str, pk: Any) -> bool:
        return bool(user.is_authenticated)


class BindingTestCase(TransactionChannelTestCase):
    """A real database with real commits and a fresh in-memory layer."""

    def bind(self, base: type[WebsocketBinding] = ItemBinding, **attributes: Any) -> Any:
        """A concrete binding (default: on Item), unregistered after the test."""
        attributes.setdefault("model", Item)
        binding = type("Bound", (base,), attributes)
        self.addCleanup(binding.unregister)
        return binding

    def watcher(self, group: str = "items") -> WSClient:
        client = WSClient()
        client.join_group(group)
        return client

    def frames(self, client: WSClient) -> list[Any]:
        received = []
        while (frame := client.receive()) is not None:
            received.append(frame)
        return received


class OutboundTests(BindingTestCase):
    def test_create_sends_the_listed_fields(self) -> None:
        """A create sends {"stream", "payload": {action, pk, data, model}} with only the listed fields."""
        self.bind(fields=["name", "value"])
        client = self.watcher()
        item = Item.objects.create(name="a", value=4, secret="s")
        self.assertEqual(
            self.frames(client),
            [
                {
                    "stream": "items",
                    "payload": {
                        "action": CREATE,
                        "pk": item.pk,
                        "data": {"name": "a", "value": 4},
                        "model": "binding_tests.item",
                    },
                }
            ],
        )

    def test_exclude_keeps_fields_back(self) -> None:
        """exclude sends every field but the excluded ones, many-to-many included."""
        self.bind(exclude=["secret", "created"])
        client = self.watcher()
        Item.objects.create(name="a", secret="s")
        (frame,) = self.frames(client)
        self.assertEqual(
            frame["payload"]["data"], {"name": "a", "room": "lobby", "value": 0, "tags": []}
        )

    def test_all_fields_in_every_spelling(self) -> None:
        """["__all__"], ("__all__",) and "__all__" all send every field on update."""
        item = Item.objects.create(name="a")
        for spelling in (["__all__"], ("__all__",), "__all__"):
            binding = self.bind(fields=spelling)
            client = self.watcher()
            item.value += 1
            item.save()
            (frame,) = self.frames(client)
            self.assertEqual(frame["payload"]["action"], UPDATE)
            self.assertEqual(
                set(frame["payload"]["data"]),
                {"name", "room", "value", "secret", "created", "tags"},
            )
            binding.unregister()

    def test_delete_sends_the_pk_and_data(self) -> None:
        """A delete sends the deleted instance's pk and fields."""
        self.bind(fields=["name"])
        item = Item.objects.create(name="gone")
        pk = item.pk
        client = self.watcher()
        item.delete()
        (frame,) = self.frames(client)
        self.assertEqual(
            frame["payload"],
            {"action": DELETE, "pk": pk, "data": {"name": "gone"}, "model": "binding_tests.item"},
        )

    def test_uuid_primary_key_is_sent_as_a_string(self) -> None:
        """A non-integer pk goes out as its JSON string."""
        self.bind(model=UUIDItem, fields=["name"])
        client = self.watcher()
        item = UUIDItem.objects.create(name="u")
        (frame,) = self.frames(client)
        self.assertEqual(frame["payload"]["pk"], str(item.pk))
        self.assertEqual(frame["payload"]["model"], "binding_tests.uuiditem")

    def test_user_model_as_in_channels_1x(self) -> None:
        """Binding auth.User with listed fields sends them, as 1.x's own test did."""
        self.bind(model=User, fields=["username", "email", "password", "last_name"])
        client = self.watcher()
        user = User.objects.create(username="test", email="test@test.com")
        (frame,) = self.frames(client)
        self.assertEqual(frame["payload"]["model"], "auth.user")
        self.assertEqual(frame["payload"]["pk"], user.pk)
        self.assertEqual(
            frame["payload"]["data"],
            {"username": "test", "email": "test@test.com", "password": "", "last_name": ""},
        )

    def test_members_are_sent_with_django_json(self) -> None:
        """send_members adds attributes, properties, methods and dotted paths, JSON-encoded."""
        self.bind(
            base=WebsocketBindingWithMembers,
            stream="items",
            group_names=classmethod(lambda cls, instance: ["items"]),
            fields=["value"],
            send_members=["multiplier", "double", "describe", "created.year"],
        )
        client = self.watcher()
        item = Item.objects.create(name="a", value=5)
        (frame,) = self.frames(client)
        self.assertEqual(
            frame["payload"]["data"],
            {
                "value": 5,
                "multiplier": 3,
                "double": 10,
                "describe": "a=5",
                "created__year": item.created.year,
            },
        )

    def test_no_stream_is_refused_at_class_creation(self) -> None:
        """A WebsocketBinding without a stream raises ImproperlyConfigured when declared."""
        with self.assertRaisesRegex(ImproperlyConfigured, "has no stream"):

            class NoStream(WebsocketBinding):
                model = Item
                fields = ["name"]


class Demultiplexer(WebsocketDemultiplexer):
    http_user = True
    groups = ["items"]


@override_settings(PASSWORD_HASHERS=FAST_HASHER)
class InboundTests(BindingTestCase):
    def connect(self, binding: Any, logged_in: bool = True) -> WSClient:
        """A WSClient connected to a demultiplexer with ``binding`` on stream "items"."""
        routes = apply_routes([Demultiplexer.as_route({"consumers": {"items": binding.consumer}})])
        routes.enter()
        self.addCleanup(routes.exit)
        client = WSClient()
        if logged_in:
            client.force_login(User.objects.create_user("ann", password="pw"))
        client.send_and_consume("websocket.connect", path="/")
        return client

    def send(self, client: WSClient, **payload: Any) -> None:
        client.send_and_consume(
            "websocket.receive", path="/", text={"stream": "items", "payload": payload}
        )

    def test_create_through_the_demultiplexer(self) -> None:
        """A create frame makes the instance (auto_now_add set) and every socket in the group sees it."""
        client = self.connect(self.bind(fields=["name", "value", "tags"]))
        tag = Tag.objects.create(name="t")
        self.send(client, action=CREATE, data={"name": "new", "value": 2, "tags": [tag.pk]})
        item = Item.objects.get()
        self.assertEqual((item.name, item.value), ("new", 2))
        self.assertIsInstance(item.created, datetime.datetime)
        self.assertEqual(list(item.tags.all()), [tag])
        (frame,) = self.frames(client)
        self.assertEqual(frame["payload"]["action"], CREATE)
        self.assertEqual(frame["payload"]["data"]["name"], "new")

    def test_create_sets_only_allowed_fields(self) -> None:
        """A create cannot set fields the binding does not allow, nor the pk (1.x let it set any)."""
        client = self.connect(self.bind(fields=["name"]))
        self.send(client, action=CREATE, data={"id": 99, "name": "n", "secret": "mine"})
        item = Item.objects.get()
        self.assertEqual((item.name, item.secret), ("n", ""))
        self.assertNotEqual(item.pk, 99)

    def test_create_with_uuid_primary_key(self) -> None:
        """A create of a model whose pk is a UUID with a default gets a UUID from that default."""
        client = self.connect(self.bind(model=UUIDItem, fields=["name"]))
        self.send(client, action=CREATE, data={"name": "u"})
        self.assertIsInstance(UUIDItem.objects.get(name="u").pk, uuid.UUID)

    def test_update_sets_only_allowed_fields(self) -> None:
        """An update changes the listed fields and leaves the others, as 1.x did."""
        item = Item.objects.create(name="a", secret="s")
        client = self.connect(self.bind(fields=["name"]))
        self.send(client, action=UPDATE, pk=item.pk, data={"name": "b"})
        self.send(client, action=UPDATE, pk=item.pk, data={"secret": "changed"})
        item.refresh_from_db()
        self.assertEqual((item.name, item.secret), ("b", "s"))
        self.assertEqual([f["payload"]["action"] for f in self.frames(client)], [UPDATE, UPDATE])

    def test_update_with_all_fields_tuple(self) -> None:
        """fields = ("__all__",) lets an update set any field (1.x compared with a list only)."""
        item = Item.objects.create(name="a")
        client = self.connect(self.bind(fields=("__all__",)))
        self.send(client, action=UPDATE, pk=item.pk, data={"secret": "s", "value": 7})
        item.refresh_from_db()
        self.assertEqual((item.secret, item.value), ("s", 7))

    def test_update_with_exclude(self) -> None:
        """With exclude, an update sets every field but the excluded ones."""
        item = Item.objects.create(name="a")
        client = self.connect(self.bind(exclude=["secret"]))
        self.send(client, action=UPDATE, pk=item.pk, data={"secret": "s", "value": 7})
        item.refresh_from_db()
        self.assertEqual((item.secret, item.value), ("", 7))

    def test_delete_through_the_demultiplexer(self) -> None:
        """A delete frame deletes the instance, and the group gets the delete."""
        item = Item.objects.create(name="a")
        client = self.connect(self.bind(fields=["name"]))
        self.send(client, action=DELETE, pk=item.pk)
        self.assertFalse(Item.objects.exists())
        (frame,) = self.frames(client)
        self.assertEqual(frame["payload"]["action"], DELETE)
        self.assertEqual(frame["payload"]["pk"], item.pk)

    def test_refused_when_has_permission_says_no(self) -> None:
        """An anonymous socket's create, update and delete change nothing and send nothing."""
        item = Item.objects.create(name="a")
        client = self.connect(self.bind(fields=["name"]), logged_in=False)
        self.send(client, action=CREATE, data={"name": "b"})
        self.send(client, action=UPDATE, pk=item.pk, data={"name": "b"})
        self.send(client, action=DELETE, pk=item.pk)
        self.assertEqual(list(Item.objects.values_list("name", flat=True)), ["a"])
        self.assertEqual(self.frames(client), [])

    def test_malformed_payloads_raise(self) -> None:
        """No action, an update without pk, data that is not an object or an unknown field raise ValueError."""
        item = Item.objects.create(name="a")
        client = self.connect(self.bind(fields=["name"]))
        for payload, error in [
            ({"data": {}}, "str action"),
            ({"action": UPDATE, "data": {"name": "b"}}, "needs a pk"),
            ({"action": CREATE, "data": ["name"]}, "needs a data object"),
            ({"action": UPDATE, "pk": item.pk, "data": {"nope": 1}}, "no field 'nope'"),
        ]:
            with self.assertRaisesRegex(ValueError, error):
                self.send(client, **payload)

    def test_route_keyword_arguments_reach_the_binding(self) -> None:
        """The binding instance keeps the route's kwargs and the demultiplexer's multiplexer."""
        seen: list[dict[str, Any]] = []

        def has_permission(self: Any, user: Any, action: str, pk: Any) -> bool:
            seen.append(self.kwargs)
            return False

        binding = self.bind(fields=["name"], has_permission=has_permission)
        routes = apply_routes(
            [
                Demultiplexer.as_route(
                    {"consumers": {"items": binding.consumer}}, path=r"^/path/(?P<id>\d+)$"
                )
            ]
        )
        with routes:
            client = WSClient()
            client.send_and_consume("websocket.connect", path="/path/789")
            client.send_and_consume(
                "websocket.receive",
                path="/path/789",
                text={"stream": "items", "payload": {"action": DELETE, "pk": 1}},
            )
        (kwargs,) = seen
        self.assertEqual(kwargs["id"], "789")
        self.assertEqual(kwargs["multiplexer"].stream, "items")


class SerializationTests(BindingTestCase):
    def test_serialize_deserialize_round_trip(self) -> None:
        """An outbound payload, sent back as a frame, deserializes to the same action, pk and data."""
        binding = self.bind(fields=["name", "value"])
        item = Item.objects.create(name="a", value=3)
        payload = binding().serialize(item, UPDATE)
        message = Message({"text": json.dumps(payload)}, "websocket.receive", None)
        self.assertEqual(
            binding().deserialize(message), (UPDATE, item.pk, {"name": "a", "value": 3})
        )

    def test_hydrate_builds_the_instance_from_data(self) -> None:
        """Data serialised from an instance and hydrated back gives an equal unsaved instance."""
        binding = self.bind(fields=["name", "value", "tags"])
        tag = Tag.objects.create(name="t")
        item = Item.objects.create(name="a", value=3)
        item.tags.add(tag)
        data = binding().serialize_data(item)
        hydrated = binding()._hydrate(item.pk, data)
        self.assertEqual(
            (hydrated.object.pk, hydrated.object.name, hydrated.object.value), (item.pk, "a", 3)
        )
        self.assertEqual(list(hydrated.m2m_data["tags"]), [tag.pk])


class ChannelTestCaseTests(ChannelTestCase):
    def test_a_change_in_the_test_transaction_is_sent_at_once_as_in_1x(self) -> None:
        """In a ChannelTestCase (whose transaction never commits) a change is sent at once, as 1.x tests expect."""
        binding = type("Bound", (ItemBinding,), {"model": Item, "fields": ["name"]})
        self.addCleanup(binding.unregister)
        client = WSClient()
        client.join_group("items")
        Item.objects.create(name="a")
        self.assertEqual(client.receive()["payload"]["data"], {"name": "a"})  # type: ignore[index]

    def test_a_change_in_a_nested_transaction_waits_for_its_commit(self) -> None:
        """Inside the test's own atomic block a change is sent on commit, and never after a rollback."""
        binding = type("Bound", (ItemBinding,), {"model": Item, "fields": ["name"]})
        self.addCleanup(binding.unregister)
        client = WSClient()
        client.join_group("items")
        with self.captureOnCommitCallbacks(execute=True):
            with transaction.atomic():
                Item.objects.create(name="kept")
                self.assertIsNone(client.receive())
        self.assertEqual(client.receive()["payload"]["data"], {"name": "kept"})  # type: ignore[index]
        try:
            with transaction.atomic():
                Item.objects.create(name="undone")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        self.assertIsNone(client.receive())
