"""Tests of chanserv.generic."""
