"""Bulk-push CSV uploads: reading and checking a file (parse), and applying it all or nothing (apply)."""
