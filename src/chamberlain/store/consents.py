"""What each user allowed each client: one row per (user, client, redirect URI, scope, resource)."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from chamberlain.store.database import Database
from chamberlain.store.schema import consents


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
