"""A settings module that fails while it is imported (tests/test_tap.py)."""

SECRET_KEY = "not-secret"
PORT = int("eighty")
