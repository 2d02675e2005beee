"""The binding tests' app."""

from django.apps import AppConfig


class BindingTestsConfig(AppConfig):
    name = "tests.binding.app"
    label = "binding_tests"
    default_auto_field = "django.db.models.AutoField"
