"""Tests of chanserv.test, the public test helpers."""
