"""MCP servers: the protected resources this gateway fronts, one per name at /mcp/{name}."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import RowMapping, delete, select
from sqlalchemy.exc import IntegrityError

from chamberlain.store.database import Database
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.schema import servers


@dataclass(frozen=True)
class Server:
    id: str
    tenant_id: str
    name: str
    url: str | None  # upstream URL; None for the built-in demo server
    scopes: tuple[str, ...]
    created_at: float


class ServerRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def add(self, name: str, url: str | None, scopes: tuple[str, ...]) -> Server:
        server = Server(str(uuid.uuid4()), self._tenant_id, name, url, scopes, time.time())
        try:
            async with self._database.begin() as connection:
                await connection.execute(
                    servers.insert().values(
                        id=server.id,
                        tenant_id=self._tenant_id,
                        name=name,
                        url=url,
                        scopes=list(scopes),
                        created_at=server.created_at,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"a server named {name!r} already exists") from None
        return server

    async def list(self) -> list[Server]:
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(servers).where(servers.c.tenant_id == self._tenant_id).order_by(servers.c.name)
            )
            return [_server(row) for row in rows.mappings()]

    async def remove(self, name: str) -> bool:
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(servers).where(servers.c.tenant_id == self._tenant_id, servers.c.name == name)
            )
            return result.rowcount > 0


def _server(row: RowMapping) -> Server:
    data = dict(row)
    data["scopes"] = tuple(data["scopes"])
    return Server(**data)
