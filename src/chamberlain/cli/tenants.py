"""`chamberlain tenants`: the realms one Chamberlain serves, each its own issuer under /t/{id}."""

from __future__ import annotations

import json
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
from chamberlain.settings import Settings
from chamberlain.store.tenants import TenantRepository, TenantRow
from chamberlain.tenancy.config import check_tenant_id
from chamberlain.tenancy.tenant import tenant_issuer

app = typer.Typer(help="Manage tenants.", no_args_is_help=True)


@app.command("add")
def add(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="Tenant id: lower-case letters, digits and '-'.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name (default: the id).")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Create a tenant. Its issuer is PUBLIC_URL/t/ID; add its users with `users add --tenant ID`."""
    settings = settings_from(data_dir, config)
    try:
        check_tenant_id(tenant_id)
    except ValueError as invalid:
        fail(str(invalid))

    async def create() -> None:
        async with initialised_store(settings) as database:
            await record_admin_change(
                database, settings, target=f"tenant:{tenant_id}", after={"name": name or tenant_id}, tenant=tenant_id
            )
            await TenantRepository(database).create(tenant_id, name or tenant_id)

    run(create())
    console.print(f"Added tenant [bold]{tenant_id}[/]: issuer {tenant_issuer(settings, tenant_id)}", soft_wrap=True)


@app.command("list")
def list_tenants(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List tenants and their issuers."""
    settings = settings_from(data_dir, config)
    table = Table("Tenant", "Name", "Issuer")
    for row in run(_tenants(settings)):
        table.add_row(row.id, row.name, tenant_issuer(settings, row.id))
    console.print(table)


@app.command("show")
def show(
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Show a tenant's stored configuration (roles, sessions, quotas, rate limits) as JSON."""
    settings = settings_from(data_dir, config)
    found = [row for row in run(_tenants(settings)) if row.id == tenant_id]
    if not found:
        fail(f"no tenant {tenant_id!r}")
    row = found[0]
    document = {"id": row.id, "name": row.name, "issuer": tenant_issuer(settings, row.id), "config": row.config or {}}
    console.print_json(json.dumps(document))


async def _tenants(settings: Settings) -> list[TenantRow]:
    async with initialised_store(settings) as database:
        return await TenantRepository(database).list()
