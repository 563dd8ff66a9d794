"""Tickets that let a person who just proved a one-time password choose their own, and nothing else.

A ticket is `user_id.expiry.mac`: an HMAC under a key derived for this purpose only, valid for ten minutes, so
the change form needs no server-side state and a ticket cannot be forged or reused for another account.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TICKET_LIFETIME = 600


class PasswordChangeTickets:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, user_id: str) -> str:
        expires = str(int(time.time()) + TICKET_LIFETIME)
        return f"{user_id}.{expires}.{self._mac(user_id, expires)}"

    def redeem(self, ticket: str) -> str | None:
        """The user id the ticket was issued for, or None when it is forged or expired."""
        user_id, _, rest = ticket.partition(".")
        expires, _, mac = rest.partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            return None
        return user_id if hmac.compare_digest(self._mac(user_id, expires), mac) else None

    def _mac(self, user_id: str, expires: str) -> str:
        return hmac.new(self._key, f"{user_id}\x00{expires}".encode(), hashlib.sha256).hexdigest()
