"""Links from an identity provider's subject to the local account it signs in as (sso/provisioning.py)."""

from __future__ import annotations

import time

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from chamberlain.store.database import Database
from chamberlain.store.schema import federated_identities


class FederatedIdentityRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def user_of(self, provider: str, subject: str) -> str | None:
        async with self._database.connect() as connection:
            found: str | None = await connection.scalar(
                select(federated_identities.c.user_id).where(
                    federated_identities.c.tenant_id == self._tenant_id,
                    federated_identities.c.provider == provider,
                    federated_identities.c.subject == subject,
                )
            )
            return found

    async def link(self, provider: str, subject: str, user_id: str) -> bool:
        """Links the subject to the user; False when the subject is already linked (to anyone)."""
        try:
            async with self._database.begin() as connection:
                await connection.execute(
                    federated_identities.insert().values(
                        tenant_id=self._tenant_id,
                        provider=provider,
                        subject=subject,
                        user_id=user_id,
                        created_at=time.time(),
                    )
                )
        except IntegrityError:
            return False
        return True

    async def record_login(self, provider: str, subject: str) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                update(federated_identities)
                .where(
                    federated_identities.c.tenant_id == self._tenant_id,
                    federated_identities.c.provider == provider,
                    federated_identities.c.subject == subject,
                )
                .values(last_login_at=time.time())
            )

    async def links_of(self, user_id: str) -> list[tuple[str, str]]:
        """(provider, subject) of every identity that signs in as this user."""
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(federated_identities.c.provider, federated_identities.c.subject)
                .where(federated_identities.c.tenant_id == self._tenant_id, federated_identities.c.user_id == user_id)
                .order_by(federated_identities.c.provider)
            )
            return [(row.provider, row.subject) for row in rows]

    async def unlink_provider(self, provider: str) -> int:
        """Forgets every link of a provider being removed; returns how many there were."""
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(federated_identities).where(
                    federated_identities.c.tenant_id == self._tenant_id, federated_identities.c.provider == provider
                )
            )
            return int(result.rowcount or 0)
