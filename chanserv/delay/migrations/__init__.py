"""The delay server's migrations; Django runs them in the main thread."""
