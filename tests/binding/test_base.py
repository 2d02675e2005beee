"""
chanserv.binding.base: Binding's configuration checks at class creation,
its registration on model signals, group routing before and after a change
(sent on commit, never for a rolled-back transaction, from whichever thread
saves), and inbound actions under has_permission.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction

from chanserv import route
from chanserv.binding import Binding
from chanserv.binding.base import CREATE, DELETE, UPDATE, BindingMetaclass
from chanserv.test import Client, TransactionChannelTestCase, apply_routes
from tests.binding.app.models import Item


class RoomBinding(Binding):
    """Items go to the group of their room; frames are {"stream", "payload"} JSON."""

    model = None  # abstract: each test makes its concrete binding
    stream = "items"
    channel_session_user = False
    allowed: tuple[str, ...] = (CREATE, UPDATE, DELETE)

    @classmethod
    def encode(cls, stream: str | None, payload: dict[str, Any]) -> dict[str, Any]:
        return {"text": json.dumps({"stream": stream, "payload": payload})}

    @classmethod
    def group_names(cls, instance: Any) -> list[str]:
        return ["room-" + instance.room]

    def serialize(self, instance: Any, action: str) -> dict[str, Any]:
        return {"action": action, "pk": instance.pk, "name": instance.name, "room": instance.room}

    def deserialize(self, message: Any) -> tuple[str, Any, Any]:
        return message["action"], message.get("pk"), message.get("data")

    def has_permission(self, user: Any, action: str, pk: Any) -> bool:
        self.seen = (user, action, pk)
        return action in self.allowed

    def create(self, data: Any) -> None:
        Item.objects.create(**data)

    def update(self, pk: Any, data: Any) -> None:
        Item.objects.filter(pk=pk).update(**data)


def payloads(client: Client) -> list[dict[str, Any]]:
    """Every frame waiting for ``client``, decoded."""
    received = []
    while (content := client.receive()) is not None:
        received.append(json.loads(content["text"]))
    return received


class BindingTestCase(TransactionChannelTestCase):
    """A real database with real commits (on_commit runs) and a fresh in-memory layer."""

    def bind(self, **attributes: Any) -> type[RoomBinding]:
        """A concrete RoomBinding on Item, unregistered after the test."""
        attributes.setdefault("model", Item)
        attributes.setdefault("fields", ["name", "room"])
        binding: type[RoomBinding] = type("ItemBinding", (RoomBinding,), attributes)
        self.addCleanup(binding.unregister)
        return binding

    def member(self, *groups: str) -> Client:
        client = Client()
        for group in groups:
            client.join_group(group)
        return client


class ConfigurationTests(BindingTestCase):
    def test_no_model_is_refused_at_class_creation(self) -> None:
        """A concrete binding without a model raises ImproperlyConfigured naming the fix."""
        with self.assertRaisesRegex(ImproperlyConfigured, "NoModel has no model"):

            class NoModel(RoomBinding):
                fields = ["name"]

    def test_no_fields_nor_exclude_is_refused_at_class_creation(self) -> None:
        """A binding with neither fields nor exclude raises ImproperlyConfigured."""
        with self.assertRaisesRegex(ImproperlyConfigured, "sets neither fields nor exclude"):

            class NoFields(RoomBinding):
                model = Item

    def test_malformed_fields_are_refused(self) -> None:
        """A bare string, '__all__' among names, or a non-model are refused at creation."""
        with self.assertRaisesRegex(ImproperlyConfigured, "list of field names"):
            type("Bad", (RoomBinding,), {"model": Item, "fields": "name"})
        with self.assertRaisesRegex(ImproperlyConfigured, "cannot be listed"):
            type("Bad", (RoomBinding,), {"model": Item, "fields": ["__all__", "name"]})
        with self.assertRaisesRegex(ImproperlyConfigured, "model must be a model class"):
            type("Bad", (RoomBinding,), {"model": dict, "fields": ["name"]})

    def test_unknown_field_names_are_refused(self) -> None:
        """A misspelt field in fields or exclude raises, rather than silently sending nothing or too much."""
        with self.assertRaisesRegex(ImproperlyConfigured, "has no field nmae"):
            type("Bad", (RoomBinding,), {"model": Item, "fields": ["nmae"]})
        with self.assertRaisesRegex(ImproperlyConfigured, "has no field secrte"):
            type("Bad", (RoomBinding,), {"model": Item, "exclude": ["secrte"]})

    def test_abstract_binding_is_not_registered(self) -> None:
        """model = None in the class body makes an abstract binding: no check, no registration."""
        self.assertNotIn(RoomBinding, BindingMetaclass.binding_classes)
        self.assertTrue(RoomBinding.is_abstract())

    def test_model_as_string_is_resolved(self) -> None:
        """model = "app_label.Model" is replaced by the class, and the binding works."""
        binding = self.bind(model="binding_tests.Item")
        self.assertIs(binding.model, Item)
        self.assertEqual(binding.model_label, "binding_tests.item")
        self.assertIn(binding, BindingMetaclass.binding_classes)
        client = self.member("room-lobby")
        Item.objects.create(name="a")
        self.assertEqual([p["payload"]["action"] for p in payloads(client)], [CREATE])

    def test_register_is_idempotent_and_unregister_stops_sends(self) -> None:
        """Registering twice sends once; after unregister nothing is sent."""
        binding = self.bind()
        binding.register()
        BindingMetaclass.register_all()
        client = self.member("room-lobby")
        item = Item.objects.create(name="a")
        self.assertEqual(len(payloads(client)), 1)
        binding.unregister()
        item.name = "b"
        item.save()
        self.assertEqual(payloads(client), [])


class OutboundTests(BindingTestCase):
    def test_create_update_delete_reach_the_group(self) -> None:
        """Create, update and delete each send one frame on the stream to the instance's group."""
        self.bind()
        client = self.member("room-lobby")
        item = Item.objects.create(name="a")
        pk = item.pk
        item.name = "b"
        item.save()
        item.delete()
        self.assertEqual(
            payloads(client),
            [
                {"stream": "items", "payload": {"action": a, "pk": pk, "name": n, "room": "lobby"}}
                for a, n in [(CREATE, "a"), (UPDATE, "b"), (DELETE, "b")]
            ],
        )

    def test_moving_between_groups_leaves_the_old_one(self) -> None:
        """An update changing the groups sends delete to the old group and create to the new one."""
        self.bind()
        item = Item.objects.create(name="a", room="red")
        red, blue, both = (
            self.member("room-red"),
            self.member("room-blue"),
            self.member("room-red", "room-blue"),
        )
        item.room = "blue"  # changed in memory only: the old groups come from the stored row
        item.save()
        self.assertEqual(
            [(p["payload"]["action"], p["payload"]["room"]) for p in payloads(red)],
            [(DELETE, "blue")],
        )
        self.assertEqual([p["payload"]["action"] for p in payloads(blue)], [CREATE])
        self.assertEqual(sorted(p["payload"]["action"] for p in payloads(both)), [CREATE, DELETE])

    def test_several_groups_each_get_the_update(self) -> None:
        """An instance in several groups is sent to each."""

        class Both(RoomBinding):
            model = Item
            fields = ["name"]

            @classmethod
            def group_names(cls, instance: Any) -> list[str]:
                return ["all-items", "room-" + instance.room]

        self.addCleanup(Both.unregister)
        everyone, lobby = self.member("all-items"), self.member("room-lobby")
        Item.objects.create(name="a")
        self.assertEqual(len(payloads(everyone)), 1)
        self.assertEqual(len(payloads(lobby)), 1)

    def test_rolled_back_transaction_sends_nothing(self) -> None:
        """A save inside a transaction that rolls back sends nothing (1.x sent it anyway)."""
        self.bind()
        client = self.member("room-lobby")
        with self.assertRaises(RuntimeError), transaction.atomic():
            Item.objects.create(name="ghost")
            raise RuntimeError("roll back")
        self.assertEqual(Item.objects.count(), 0)
        self.assertEqual(payloads(client), [])

    def test_sends_wait_for_the_commit(self) -> None:
        """Inside a transaction nothing is sent until it commits, and then everything is."""
        self.bind()
        client = self.member("room-lobby")
        with transaction.atomic():
            item = Item.objects.create(name="a")
            pk = item.pk
            item.delete()
            self.assertEqual(payloads(client), [])
        # Django cleared item.pk before the commit: the delete was serialised at once.
        self.assertIsNone(item.pk)
        self.assertEqual(
            [(p["payload"]["action"], p["payload"]["pk"]) for p in payloads(client)],
            [(CREATE, pk), (DELETE, pk)],
        )

    def test_delete_payload_keeps_the_pk(self) -> None:
        """The delete frame carries the pk although Django clears it once the delete is done."""
        self.bind()
        item = Item.objects.create(name="a")
        pk = item.pk
        client = self.member("room-lobby")
        Item.objects.filter(pk=pk).delete()
        (frame,) = payloads(client)
        self.assertEqual(frame["payload"]["pk"], pk)

    def test_empty_serialization_sends_nothing(self) -> None:
        """A serialize returning {} sends nothing."""
        self.bind(serialize=lambda self, instance, action: {})
        client = self.member("room-lobby")
        Item.objects.create(name="a")
        self.assertEqual(payloads(client), [])

    def test_invalid_group_name_raises_in_the_saving_thread(self) -> None:
        """A group name the layer refuses raises TypeError from save(), not silently at commit."""
        self.bind(group_names=classmethod(lambda cls, instance: ["no spaces allowed"]))
        with self.assertRaisesRegex(TypeError, "invalid"):
            Item.objects.create(name="a")

    def test_change_in_another_thread_reaches_the_member(self) -> None:
        """A save in a thread other than the consumer's reaches a group member's reply channel."""
        self.bind()
        client = self.member("room-lobby")
        errors: list[BaseException] = []

        def save() -> None:
            try:
                Item.objects.create(name="from a thread")
            except BaseException as e:  # surfaced by the assertion below
                errors.append(e)
            finally:
                connection.close()

        thread = threading.Thread(target=save, name="not-a-consumer")
        thread.start()
        thread.join(30)
        self.assertEqual(errors, [])
        (frame,) = payloads(client)
        self.assertEqual(frame["payload"]["name"], "from a thread")


class InboundTests(BindingTestCase):
    def send(self, **content: Any) -> Client:
        client = Client()
        with apply_routes([route("binding.items", self.binding.consumer)]):
            client.send_and_consume("binding.items", content)
        return client

    def test_allowed_actions_change_the_model(self) -> None:
        """create, update and delete messages run as AnonymousUser when has_permission allows them."""
        self.binding = self.bind()
        self.send(action=CREATE, data={"name": "a"})
        item = Item.objects.get()
        self.send(action=UPDATE, pk=item.pk, data={"name": "b"})
        self.assertEqual(Item.objects.get().name, "b")
        self.send(action=DELETE, pk=item.pk)
        self.assertFalse(Item.objects.exists())

    def test_refused_actions_change_nothing(self) -> None:
        """has_permission returning False leaves the model unchanged; it saw the user, action and pk."""
        seen = []

        def has_permission(self: Any, user: Any, action: str, pk: Any) -> bool:
            seen.append((user.is_anonymous, action, pk))
            return False

        item = Item.objects.create(name="kept")
        self.binding = self.bind(has_permission=has_permission)
        self.send(action=CREATE, data={"name": "a"})
        self.send(action=UPDATE, pk=item.pk, data={"name": "b"})
        self.send(action=DELETE, pk=item.pk)
        self.assertEqual(list(Item.objects.values_list("name", flat=True)), ["kept"])
        self.assertEqual(
            seen, [(True, CREATE, None), (True, UPDATE, item.pk), (True, DELETE, item.pk)]
        )

    def test_unknown_action_raises(self) -> None:
        """An action other than create, update, delete raises ValueError before any permission check."""
        self.binding = self.bind(has_permission=lambda *args: self.fail("asked"))
        with self.assertRaisesRegex(ValueError, "Bad action 'explode'"):
            self.send(action="explode")

    def test_inbound_change_reaches_other_members(self) -> None:
        """A create made by a consumer is sent to the group's members when the consumer finishes."""
        self.binding = self.bind()
        watcher = self.member("room-lobby")
        self.send(action=CREATE, data={"name": "a"})
        self.assertEqual([p["payload"]["name"] for p in payloads(watcher)], ["a"])
