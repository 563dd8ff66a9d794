"""Errors the repositories raise for callers to turn into user-facing messages."""


class AlreadyExists(Exception):
    """A row with the same natural key (user name, server name, ...) exists in this tenant."""
