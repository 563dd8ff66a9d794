"""MCP servers: the protected resources this gateway fronts, one per name at /mcp/{name}.

A server is registered in the database (`chamberlain servers add`) or in the configuration file (`servers:`); a
name in both is the configuration file's. In the database, a row keeps its `ServerConfig` as JSON without secret
values; those (credential secrets and a stdio server's environment, where API tokens usually travel) are one JSON
object encrypted under the master key (AES-256-GCM), bound to the row's id, so a database dump alone reveals none.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr
from sqlalchemy import RowMapping, delete, select
from sqlalchemy.exc import IntegrityError

from chamberlain.crypto.master_key import MasterKey
from chamberlain.gateway.server_config import ServerConfig
from chamberlain.store.database import Database
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.schema import servers

if TYPE_CHECKING:
    from chamberlain.settings import Settings

# The name becomes a URL path segment and part of every token's audience: keep it plain.
SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# Configured servers have no row; a name-based UUID gives each the same id in every process and replica.
_CONFIGURED_SERVER_IDS = uuid.UUID("5d0c3a52-3f0e-4a43-9a4e-2f6b1c1f7d10")


# Vault bindings that name a function of the gateway rather than an MCP server: the LLM API's keys, the secrets that
# sign budget alert and DLP alert webhooks, the identity providers' secrets. No server may take one of these names:
# it would reach those credentials.
LLM_BINDING = "llm"
BUDGET_ALERTS_BINDING = "budget-alerts"
DLP_ALERTS_BINDING = "dlp-alerts"
SSO_BINDING = "sso"  # identity providers' client secrets and directory bind passwords (sso/)
RESERVED_BINDINGS = frozenset({LLM_BINDING, BUDGET_ALERTS_BINDING, DLP_ALERTS_BINDING, SSO_BINDING})


def check_server_name(name: str) -> str:
    if not SERVER_NAME.fullmatch(name):
        raise ValueError(
            f"invalid server name {name!r}: use 1-63 of a-z, 0-9, '-' and '_', starting with a letter or digit"
        )
    if name in RESERVED_BINDINGS:
        raise ValueError(f"the server name {name!r} is reserved for the gateway's own credentials")
    return name


def check_binding(name: str) -> str:
    """What a vault credential may be bound to: a server's name, or one of the gateway's reserved bindings."""
    return name if name in RESERVED_BINDINGS else check_server_name(name)


@dataclass(frozen=True)
class Server:
    id: str
    tenant_id: str
    name: str
    scopes: tuple[str, ...]  # scopes a client token needs to reach this server
    config: ServerConfig | None  # None for the built-in demo server
    source: Literal["database", "config"]  # registered with the CLI, or in the configuration file
    created_at: float | None  # None for servers from the configuration file


class ServerRepository:
    def __init__(self, database: Database, tenant_id: str, master_key: MasterKey) -> None:
        self._database = database
        self._tenant_id = tenant_id
        self._master_key = master_key

    async def add(self, name: str, config: ServerConfig) -> Server:
        check_server_name(name)
        server_id = str(uuid.uuid4())
        public, secret_values = _split_secrets(config)
        encrypted = (
            self._master_key.encrypt(json.dumps(secret_values).encode(), _associated_data(server_id))
            if secret_values
            else None
        )
        return await self._insert(
            Server(server_id, self._tenant_id, name, config.scopes, config, "database", time.time()),
            url=config.url,
            config=public,
            secrets=encrypted,
        )

    async def add_built_in(self, name: str, scopes: tuple[str, ...]) -> Server:
        """The demo server answered inside the gateway: no upstream, so no configuration."""
        server = Server(str(uuid.uuid4()), self._tenant_id, name, scopes, None, "database", time.time())
        return await self._insert(server, url=None, config=None, secrets=None)

    async def get(self, name: str) -> Server | None:
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(servers).where(servers.c.tenant_id == self._tenant_id, servers.c.name == name)
            )
            row = rows.mappings().first()
        return self._server(row) if row is not None else None

    async def list(self) -> list[Server]:
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(servers).where(servers.c.tenant_id == self._tenant_id).order_by(servers.c.name)
            )
            found = list(rows.mappings())
        return [self._server(row) for row in found]

    async def remove(self, name: str) -> bool:
        async with self._database.begin() as connection:
            result = await connection.execute(
                delete(servers).where(servers.c.tenant_id == self._tenant_id, servers.c.name == name)
            )
            return result.rowcount > 0

    async def _insert(self, server: Server, *, url: str | None, config: Any, secrets: bytes | None) -> Server:
        try:
            async with self._database.begin() as connection:
                await connection.execute(
                    servers.insert().values(
                        id=server.id,
                        tenant_id=self._tenant_id,
                        name=server.name,
                        url=url,  # kept for readers of the pre-0002 schema; `config` is authoritative
                        scopes=list(server.scopes),
                        config=config,
                        secrets=secrets,
                        created_at=server.created_at,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"a server named {server.name!r} already exists") from None
        return server

    def _server(self, row: RowMapping) -> Server:
        config = None
        if row["config"] is not None:
            secret_values = (
                json.loads(self._master_key.decrypt(row["secrets"], _associated_data(row["id"])))
                if row["secrets"] is not None
                else {}
            )
            config = ServerConfig.model_validate(_join_secrets(row["config"], secret_values))
        return Server(
            id=row["id"],
            tenant_id=row["tenant_id"],
            name=row["name"],
            scopes=tuple(row["scopes"]),
            config=config,
            source="database",
            created_at=row["created_at"],
        )


def configured_servers(settings: Settings) -> list[Server]:
    """The servers of the configuration file's `servers:` section, by name."""
    return [
        Server(
            id=str(uuid.uuid5(_CONFIGURED_SERVER_IDS, f"{settings.tenant}/{name}")),
            tenant_id=settings.tenant,
            name=name,
            scopes=config.scopes,
            config=config,
            source="config",
            created_at=None,
        )
        for name, config in sorted(settings.servers.items())
    ]


def merge_servers(configured: Sequence[Server], stored: Sequence[Server]) -> tuple[list[Server], list[Server]]:
    """The servers in effect, by name, and the stored ones a configured server of the same name overrides."""
    by_name = {server.name: server for server in stored}
    overridden = [by_name[server.name] for server in configured if server.name in by_name]
    by_name.update((server.name, server) for server in configured)
    return [by_name[name] for name in sorted(by_name)], overridden


def _associated_data(server_id: str) -> bytes:
    return f"server:{server_id}".encode()


def _split_secrets(config: ServerConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config as JSON without secret values, and the secret values: every `SecretStr` of the credential and
    the stdio environment."""
    public = config.model_dump(mode="json")
    credential = config.credential
    secret_fields = [name for name, field in type(credential).model_fields.items() if field.annotation is SecretStr]
    secret_values: dict[str, Any] = {}
    if secret_fields:
        secret_values["credential"] = {name: getattr(credential, name).get_secret_value() for name in secret_fields}
        for name in secret_fields:
            del public["credential"][name]
    if config.env:
        secret_values["env"] = dict(config.env)
    del public["env"]
    return public, secret_values


def _join_secrets(public: dict[str, Any], secret_values: dict[str, Any]) -> dict[str, Any]:
    joined = dict(public)
    if "credential" in secret_values:
        joined["credential"] = {**public["credential"], **secret_values["credential"]}
    if "env" in secret_values:
        joined["env"] = secret_values["env"]
    return joined
