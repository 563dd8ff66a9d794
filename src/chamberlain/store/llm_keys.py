"""Virtual keys for the LLM proxy: per-user API keys (`chk_…`) kept as keyed digests, never in the clear.

The table is in schema.py; migration 0007 creates it. The gateway does not look keys up here on
a request: `all_active` feeds the in-memory index (llm/virtual_keys.py) that the state refresher keeps current.
"""

from __future__ import annotations

import builtins
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update

from chamberlain.store.database import Database
from chamberlain.store.schema import llm_virtual_keys, users


@dataclass(frozen=True)
class VirtualKeyRow:
    id: str
    tenant_id: str
    user_id: str
    name: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class ActiveKey:
    """A usable key with what the request path needs about its user (their roles as they are now)."""

    id: str
    tenant_id: str
    user_id: str
    digest: bytes
    expires_at: float | None
    roles: tuple[str, ...]


class VirtualKeyRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def add(self, user_id: str, digest: bytes, *, name: str | None, expires_at: float | None) -> VirtualKeyRow:
        row = VirtualKeyRow(str(uuid.uuid4()), self._tenant_id, user_id, name, time.time(), expires_at, None)
        async with self._database.begin() as connection:
            await connection.execute(
                llm_virtual_keys.insert().values(
                    id=row.id,
                    tenant_id=row.tenant_id,
                    user_id=row.user_id,
                    digest=digest,
                    name=row.name,
                    created_at=row.created_at,
                    expires_at=row.expires_at,
                    revoked_at=None,
                )
            )
        return row

    async def list(self, user_id: str | None = None) -> builtins.list[VirtualKeyRow]:
        statement = (
            select(*_ROW_COLUMNS)
            .where(llm_virtual_keys.c.tenant_id == self._tenant_id)
            .order_by(llm_virtual_keys.c.created_at)
        )
        if user_id is not None:
            statement = statement.where(llm_virtual_keys.c.user_id == user_id)
        async with self._database.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [VirtualKeyRow(*tuple(row)) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        """True when the key was active until now."""
        async with self._database.begin() as connection:
            result = await connection.execute(
                update(llm_virtual_keys)
                .where(
                    llm_virtual_keys.c.tenant_id == self._tenant_id,
                    llm_virtual_keys.c.id == key_id,
                    llm_virtual_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=time.time())
            )
        return bool(result.rowcount)


_ROW_COLUMNS = (
    llm_virtual_keys.c.id,
    llm_virtual_keys.c.tenant_id,
    llm_virtual_keys.c.user_id,
    llm_virtual_keys.c.name,
    llm_virtual_keys.c.created_at,
    llm_virtual_keys.c.expires_at,
    llm_virtual_keys.c.revoked_at,
)


async def keys_version(database: Database) -> tuple[int, float, float]:
    """Changes whenever a key is added or revoked (every tenant's): the refresher reloads only then."""
    statement = select(
        func.count(),
        func.coalesce(func.max(llm_virtual_keys.c.created_at), 0.0),
        func.coalesce(func.max(llm_virtual_keys.c.revoked_at), 0.0),
    ).select_from(llm_virtual_keys)
    async with database.connect() as connection:
        count, created, revoked = tuple((await connection.execute(statement)).one())
    return int(count), float(created), float(revoked)


async def all_active(database: Database) -> list[ActiveKey]:
    """Every tenant's keys that are not revoked, of users that are not disabled, with those users' roles."""
    statement = (
        select(
            llm_virtual_keys.c.id,
            llm_virtual_keys.c.tenant_id,
            llm_virtual_keys.c.user_id,
            llm_virtual_keys.c.digest,
            llm_virtual_keys.c.expires_at,
            users.c.roles,
        )
        .join(users, users.c.id == llm_virtual_keys.c.user_id)
        .where(
            llm_virtual_keys.c.revoked_at.is_(None),
            users.c.disabled.is_(False),
            users.c.tenant_id == llm_virtual_keys.c.tenant_id,
        )
    )
    async with database.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [
        ActiveKey(
            row["id"], row["tenant_id"], row["user_id"], bytes(row["digest"]), row["expires_at"], tuple(row["roles"])
        )
        for row in rows
    ]
