"""Revoked grants, access tokens and clients, held in memory so checking a token never touches the database.

Fed from the store's append-only revocation feed: this process polls it every second, and syncs at once after a
revocation of its own, so the feed is the one path by which a revocation takes effect everywhere.
"""

from __future__ import annotations

import time

from chamberlain.store.grants import Revocation, tenant_client_key


class RevocationList:
    def __init__(self) -> None:
        self._revoked: dict[tuple[str, str], float] = {}  # (kind, value) -> when the entry may be forgotten
        self.last_id = 0

    def apply(self, entries: list[Revocation]) -> None:
        for entry in entries:
            self._revoked[(entry.kind, entry.value)] = entry.expires_at
            self.last_id = max(self.last_id, entry.id)

    def is_revoked(self, *, grant_id: str | None, jti: str, tenant: str, client_id: str) -> bool:
        revoked = self._revoked
        return (
            ("jti", jti) in revoked
            or self.client_revoked(tenant, client_id)
            or (grant_id is not None and ("grant", grant_id) in revoked)
        )

    def client_revoked(self, tenant: str, client_id: str) -> bool:
        return ("client", tenant_client_key(tenant, client_id)) in self._revoked

    def prune(self) -> None:
        now = time.time()
        for key in [key for key, expires in self._revoked.items() if expires <= now]:
            del self._revoked[key]
