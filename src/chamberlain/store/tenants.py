"""Tenants and their stored configuration. Every other repository is constructed for exactly one tenant."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from chamberlain.store.database import Database
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.schema import clients, servers, tenants, users


@dataclass(frozen=True)
class TenantRow:
    id: str
    name: str
    created_at: float
    config: dict[str, Any] | None  # TenantConfig as JSON, as stored; None when never configured


async def ensure_tenant(database: Database, tenant_id: str, name: str | None = None) -> None:
    async with database.begin() as connection:
        found = await connection.scalar(select(tenants.c.id).where(tenants.c.id == tenant_id))
        if found is None:
            await connection.execute(
                tenants.insert().values(id=tenant_id, name=name or tenant_id, created_at=time.time())
            )


class TenantRepository:
    """The tenants table. Unlike the other repositories it spans tenants: only the platform (the CLI, the
    refresher and the platform admin's API) uses it."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def list(self) -> list[TenantRow]:
        async with self._database.connect() as connection:
            rows = await connection.execute(select(tenants).order_by(tenants.c.id))
            return [_tenant(row) for row in rows.mappings()]

    async def get(self, tenant_id: str) -> TenantRow | None:
        async with self._database.connect() as connection:
            row = (await connection.execute(select(tenants).where(tenants.c.id == tenant_id))).mappings().first()
            return _tenant(row) if row else None

    async def create(self, tenant_id: str, name: str, config: dict[str, Any] | None = None) -> TenantRow:
        if await self.get(tenant_id) is not None:
            raise AlreadyExists(f"a tenant {tenant_id!r} already exists")
        now = time.time()
        async with self._database.begin() as connection:
            await connection.execute(
                tenants.insert().values(id=tenant_id, name=name, created_at=now, config=config, updated_at=now)
            )
        return TenantRow(tenant_id, name, now, config)

    async def set_config(self, tenant_id: str, config: dict[str, Any] | None, *, name: str | None = None) -> bool:
        """Replaces the stored config (and the name, when given); False when there is no such tenant."""
        values: dict[str, Any] = {"config": config, "updated_at": time.time()}
        if name is not None:
            values["name"] = name
        async with self._database.begin() as connection:
            result = await connection.execute(update(tenants).where(tenants.c.id == tenant_id).values(**values))
            return bool(result.rowcount)

    async def version(self) -> tuple[tuple[str, float], ...]:
        """Cheap change detection for the refresher: each tenant's id and last update."""
        async with self._database.connect() as connection:
            rows = await connection.execute(select(tenants.c.id, tenants.c.updated_at).order_by(tenants.c.id))
            return tuple((row.id, row.updated_at or 0.0) for row in rows)

    async def counts(self, tenant_id: str) -> dict[str, int]:
        """What the tenant's quotas count: users, clients and servers."""
        async with self._database.connect() as connection:
            result = {}
            for name, table in (("users", users), ("clients", clients), ("servers", servers)):
                count = await connection.scalar(
                    select(func.count()).select_from(table).where(table.c.tenant_id == tenant_id)
                )
                result[name] = int(count or 0)
            return result


def _tenant(row: Any) -> TenantRow:
    return TenantRow(row["id"], row["name"], row["created_at"], row["config"])
