"""`chamberlain llm keys`: per-user virtual keys for the LLM proxy (`x-api-key: chk_…`).

For tools that cannot run `chamberlain login` (a CI job, a script): a key acts for its user, with the user's current
roles, in one tenant. It is shown once, when created; the store keeps only a keyed digest. Revoking takes effect on
every replica within seconds (the gateways' refresher).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    fail,
    record_admin_change,
    run,
    settings_from,
    tenant_store,
)
from chamberlain.crypto.master_key import load_master_key
from chamberlain.llm.virtual_keys import KeyDigester, new_virtual_key
from chamberlain.store.llm_keys import VirtualKeyRepository, VirtualKeyRow
from chamberlain.store.users import UserRepository

app = typer.Typer(help="The LLM proxy (/v1/messages).", no_args_is_help=True)
keys = typer.Typer(help="Per-user virtual keys for the LLM proxy.", no_args_is_help=True)
app.add_typer(keys, name="keys")

DAY = 86_400


@keys.command("create")
def create(
    username: Annotated[str, typer.Argument(help="The user the key acts for.")],
    name: Annotated[str | None, typer.Option("--name", help="What the key is for (shown in listings).")] = None,
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, max=3650, help="Days until it stops working.")
    ] = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Create a key for USERNAME and print it (once: it cannot be shown again)."""
    settings = settings_from(data_dir, config)
    key = new_virtual_key()
    expires_at = time.time() + expires_in_days * DAY if expires_in_days is not None else None

    async def add() -> VirtualKeyRow:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            user = await UserRepository(database, tenant_id).get_by_username(username)
            if user is None:
                fail(f"no user {username!r} in tenant {tenant_id!r}")
            digest = KeyDigester(load_master_key(settings.data_dir)).digest(key)
            after = {"user_id": user.id, "name": name, "expires_at": expires_at}
            await record_admin_change(database, settings, target=f"llm-key:{user.id}", after=after, tenant=tenant_id)
            return await VirtualKeyRepository(database, tenant_id).add(
                user.id, digest, name=name, expires_at=expires_at
            )

    row = run(add())
    console.print(f"Created key [bold]{row.id}[/] for {username}. Give it to them now; it is not shown again:")
    print(key)


@keys.command("list")
def list_keys(
    username: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """List keys (never their values)."""
    settings = settings_from(data_dir, config)

    async def fetch() -> tuple[list[VirtualKeyRow], dict[str, str]]:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            users = UserRepository(database, tenant_id)
            names = {user.id: user.username for user in await users.list()}
            user_id = None
            if username is not None:
                user_id = next((key for key, value in names.items() if value == username), None)
                if user_id is None:
                    fail(f"no user {username!r} in tenant {tenant_id!r}")
            return await VirtualKeyRepository(database, tenant_id).list(user_id), names

    rows, names = run(fetch())
    table = Table("Key ID", "User", "Name", "Created", "Expires", "State")
    now = time.time()
    for row in rows:
        state = "revoked" if row.revoked_at else "expired" if row.expires_at and row.expires_at <= now else "active"
        table.add_row(
            row.id,
            names.get(row.user_id, row.user_id),
            row.name or "",
            _when(row.created_at),
            _when(row.expires_at) if row.expires_at else "never",
            state,
        )
    console.print(table)


@keys.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `chamberlain llm keys list`).")],
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Revoke a key: it stops working on every gateway within seconds."""
    settings = settings_from(data_dir, config)

    async def revoke_key() -> bool:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            repository = VirtualKeyRepository(database, tenant_id)
            if not any(row.id == key_id and row.revoked_at is None for row in await repository.list()):
                return False
            await record_admin_change(
                database, settings, target=f"llm-key:{key_id}", after={"revoked": True}, tenant=tenant_id
            )
            return await repository.revoke(key_id)

    if not run(revoke_key()):
        fail(f"no active key {key_id!r}")
    console.print(f"Revoked key [bold]{key_id}[/].")


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
