"""Identifiers that may be used once until they expire: SAML assertion IDs, ID-JAG `jti` values.

The database's primary key decides, so a replay is refused on every replica at once, not only on the one that saw
the first use. Values are kept as SHA-256 digests: an identifier is not a secret, but nothing here needs it back.
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from chamberlain.store.database import Database
from chamberlain.store.schema import seen_identifiers

SAML_ASSERTION = "saml-assertion"
SSO_STATE = "sso-state"  # a sign-in's state (sso/flow.py): one answer per sign-in
ID_JAG = "id-jag"


class SeenIdentifiers:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def claim(self, kind: str, identifier: str, expires_at: float) -> bool:
        """True the first time `identifier` of this kind is claimed (until `expires_at`); False for a replay."""
        digest = hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()
        now = time.time()
        try:
            async with self._database.begin() as connection:
                # An expired claim of the same identifier no longer protects anything. Other expired rows are left
                # to purge_expired (the state refresher), off the sign-in path.
                await connection.execute(
                    delete(seen_identifiers).where(
                        seen_identifiers.c.tenant_id == self._tenant_id,
                        seen_identifiers.c.kind == kind,
                        seen_identifiers.c.digest == digest,
                        seen_identifiers.c.expires_at < now,
                    )
                )
                await connection.execute(
                    seen_identifiers.insert().values(
                        tenant_id=self._tenant_id, kind=kind, digest=digest, expires_at=max(expires_at, now)
                    )
                )
        except IntegrityError:
            return False
        return True


async def purge_expired(database: Database) -> int:
    """Deletes every tenant's expired claims; returns how many."""
    async with database.begin() as connection:
        result = await connection.execute(delete(seen_identifiers).where(seen_identifiers.c.expires_at < time.time()))
    return result.rowcount or 0
