"""Tenants. Every other repository is constructed for exactly one tenant."""

from __future__ import annotations

import time

from sqlalchemy import select

from chamberlain.store.database import Database
from chamberlain.store.schema import tenants


async def ensure_tenant(database: Database, tenant_id: str, name: str | None = None) -> None:
    async with database.begin() as connection:
        found = await connection.scalar(select(tenants.c.id).where(tenants.c.id == tenant_id))
        if found is None:
            await connection.execute(
                tenants.insert().values(id=tenant_id, name=name or tenant_id, created_at=time.time())
            )
