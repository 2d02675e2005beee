"""Tests of the delay server (chanserv.delay)."""
