"""`chamberlain clients`: the OAuth clients that registered or signed in with a metadata document."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    console,
    fail,
    initialised_store,
    record_admin_change,
    run,
    settings_from,
)
from chamberlain.oauth.revocation_fanout import announce_revocations
from chamberlain.store.clients import ClientRecord, ClientRepository
from chamberlain.store.consents import ConsentRepository
from chamberlain.store.grants import GrantRepository

app = typer.Typer(help="Inspect and revoke OAuth clients.", no_args_is_help=True)


@app.command("list")
def list_clients(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List OAuth clients."""
    settings = settings_from(data_dir, config)

    async def fetch() -> list[ClientRecord]:
        async with initialised_store(settings) as database:
            return await ClientRepository(database, settings.tenant).list()

    table = Table("Client ID", "Name", "Registration", "Auth method", "Created", "State")
    for client in run(fetch()):
        metadata = client.client_metadata
        table.add_row(
            client.client_id,
            str(metadata.get("client_name", "")),
            client.registration,
            str(metadata.get("token_endpoint_auth_method", "")),
            _when(client.created_at),
            "revoked" if client.revoked_at else "active",
        )
    console.print(table)


@app.command("show")
def show(
    client_id: Annotated[str, typer.Argument(help="The client_id.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Show one client's registration."""
    settings = settings_from(data_dir, config)

    async def fetch() -> ClientRecord | None:
        async with initialised_store(settings) as database:
            return await ClientRepository(database, settings.tenant).get(client_id)

    client = run(fetch())
    if client is None:
        fail(f"no client {client_id!r}")
    console.print_json(
        json.dumps(
            {
                "client_id": client.client_id,
                "registration": client.registration,
                "created_at": _when(client.created_at),
                "revoked_at": _when(client.revoked_at) if client.revoked_at else None,
                "metadata": client.client_metadata,
            }
        )
    )


@app.command("revoke")
def revoke(
    client_id: Annotated[str, typer.Argument(help="The client_id.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Revoke a client: its registration, consents, grants and every token it holds."""
    settings = settings_from(data_dir, config)

    async def revoke_client() -> int | None:
        async with initialised_store(settings) as database:
            clients = ClientRepository(database, settings.tenant)
            known = await clients.get(client_id)
            if known is None or known.revoked_at is not None:
                return None
            await record_admin_change(database, settings, target=f"client:{client_id}", after={"revoked": True})
            if not await clients.revoke(client_id):
                return None
            grants = GrantRepository(database, settings.tenant)
            revoked = await grants.revoke_client_grants(client_id, "client_revoked")
            await grants.revoke_client_tokens(client_id, longest_token_lifetime=settings.tokens.access_token_ttl)
            await ConsentRepository(database, settings.tenant).withdraw_client(client_id)
            await announce_revocations(settings.redis_url, database)
            return revoked

    revoked = run(revoke_client())
    if revoked is None:
        fail(f"no active client {client_id!r}")
    console.print(f"Revoked [bold]{client_id}[/] and {revoked} grant(s); its tokens stop working within seconds.")


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
