"""``manage.py rundelay`` (main thread)."""
