"""OAuth clients: dynamically registered (RFC 7591), metadata-document clients (CIMD), and static ones."""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import RowMapping, select, update

from chamberlain.store.database import Database
from chamberlain.store.schema import clients

Registration = Literal["dynamic", "metadata_document", "static"]


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    tenant_id: str
    registration: Registration
    secret_hash: bytes | None
    client_metadata: dict[str, Any]
    created_at: float
    revoked_at: float | None


class ClientRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def add(
        self,
        client_id: str,
        registration: Registration,
        client_metadata: dict[str, Any],
        secret_hash: bytes | None,
    ) -> ClientRecord:
        record = ClientRecord(client_id, self._tenant_id, registration, secret_hash, client_metadata, time.time(), None)
        async with self._database.begin() as connection:
            await connection.execute(
                clients.insert().values(
                    client_id=client_id,
                    tenant_id=self._tenant_id,
                    registration=registration,
                    secret_hash=secret_hash,
                    client_metadata=client_metadata,
                    created_at=record.created_at,
                )
            )
        return record

    async def upsert_metadata_document(self, client_id: str, client_metadata: dict[str, Any]) -> None:
        """Keeps the last fetched copy of a CIMD client's document, so `clients list` can show who signed in."""
        async with self._database.begin() as connection:
            changed = await connection.execute(
                update(clients)
                .where(clients.c.tenant_id == self._tenant_id, clients.c.client_id == client_id)
                .values(client_metadata=client_metadata)
            )
            if changed.rowcount == 0:
                await connection.execute(
                    clients.insert().values(
                        client_id=client_id,
                        tenant_id=self._tenant_id,
                        registration="metadata_document",
                        secret_hash=None,
                        client_metadata=client_metadata,
                        created_at=time.time(),
                    )
                )

    async def get(self, client_id: str) -> ClientRecord | None:
        async with self._database.connect() as connection:
            row = (
                (
                    await connection.execute(
                        select(clients).where(clients.c.tenant_id == self._tenant_id, clients.c.client_id == client_id)
                    )
                )
                .mappings()
                .first()
            )
            return _client(row) if row else None

    async def list(self) -> list[ClientRecord]:
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(clients).where(clients.c.tenant_id == self._tenant_id).order_by(clients.c.created_at)
            )
            return [_client(row) for row in rows.mappings()]

    async def page(self, *, after: str | None, limit: int) -> builtins.list[ClientRecord]:
        """Up to `limit` clients ordered by client_id, after `after` (keyset paging: stable under concurrent
        registrations, which land anywhere in the order rather than shifting every later page)."""
        query = select(clients).where(clients.c.tenant_id == self._tenant_id)
        if after is not None:
            query = query.where(clients.c.client_id > after)
        async with self._database.connect() as connection:
            rows = await connection.execute(query.order_by(clients.c.client_id).limit(limit))
            return [_client(row) for row in rows.mappings()]

    async def revoke(self, client_id: str) -> bool:
        async with self._database.begin() as connection:
            result = await connection.execute(
                update(clients)
                .where(
                    clients.c.tenant_id == self._tenant_id,
                    clients.c.client_id == client_id,
                    clients.c.revoked_at.is_(None),
                )
                .values(revoked_at=time.time())
            )
            return result.rowcount > 0


def _client(row: RowMapping) -> ClientRecord:
    return ClientRecord(**row)
