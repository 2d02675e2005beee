"""The delay server's management commands (main thread)."""
