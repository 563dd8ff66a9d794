"""What each user allowed each client: one row per (user, client, redirect URI, scope, resource)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import RowMapping, delete, select

from chamberlain.store.database import Database
from chamberlain.store.schema import consents


@dataclass(frozen=True)
class Consent:
    id: int
    tenant_id: str
    user_id: str
    client_id: str
    redirect_uri: str
    scope: str
    resource: str
    created_at: float


class ConsentRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def exists(self, *, user_id: str, client_id: str, redirect_uri: str, scope: str, resource: str) -> bool:
        async with self._database.connect() as connection:
            found = await connection.scalar(
                select(consents.c.id).where(
                    consents.c.tenant_id == self._tenant_id,
                    consents.c.user_id == user_id,
                    consents.c.client_id == client_id,
                    consents.c.redirect_uri == redirect_uri,
                    consents.c.scope == scope,
                    consents.c.resource == resource,
                )
            )
            return found is not None

    async def record(self, *, user_id: str, client_id: str, redirect_uri: str, scope: str, resource: str) -> None:
        if await self.exists(
            user_id=user_id, client_id=client_id, redirect_uri=redirect_uri, scope=scope, resource=resource
        ):
            return
        async with self._database.begin() as connection:
            await connection.execute(
                consents.insert().values(
                    tenant_id=self._tenant_id,
                    user_id=user_id,
                    client_id=client_id,
                    redirect_uri=redirect_uri,
                    scope=scope,
                    resource=resource,
                    created_at=time.time(),
                )
            )

    async def withdraw_client(self, client_id: str) -> None:
        async with self._database.begin() as connection:
            await connection.execute(
                delete(consents).where(consents.c.tenant_id == self._tenant_id, consents.c.client_id == client_id)
            )

    async def page(
        self, *, user_id: str | None = None, client_id: str | None = None, after: int | None, limit: int
    ) -> list[Consent]:
        """Up to `limit` consents in the order they were given, after the consent id `after` (keyset paging);
        only the user's and/or the client's when given."""
        query = select(consents).where(consents.c.tenant_id == self._tenant_id)
        if user_id is not None:
            query = query.where(consents.c.user_id == user_id)
        if client_id is not None:
            query = query.where(consents.c.client_id == client_id)
        if after is not None:
            query = query.where(consents.c.id > after)
        async with self._database.connect() as connection:
            rows = await connection.execute(query.order_by(consents.c.id).limit(limit))
            return [_consent(row) for row in rows.mappings()]

    async def get(self, consent_id: int) -> Consent | None:
        async with self._database.connect() as connection:
            row = (
                (
                    await connection.execute(
                        select(consents).where(consents.c.tenant_id == self._tenant_id, consents.c.id == consent_id)
                    )
                )
                .mappings()
                .first()
            )
            return _consent(row) if row else None

    async def remove(self, consent_id: int) -> bool:
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(consents).where(consents.c.tenant_id == self._tenant_id, consents.c.id == consent_id)
            )
            return bool(result.rowcount)

    async def withdraw_user(self, user_id: str) -> int:
        """Withdraws every consent the user gave; how many there were."""
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(consents).where(consents.c.tenant_id == self._tenant_id, consents.c.user_id == user_id)
            )
            return int(result.rowcount or 0)


def _consent(row: RowMapping) -> Consent:
    return Consent(**row)
