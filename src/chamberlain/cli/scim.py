"""`chamberlain scim token`: the bearer token an identity provider (Okta, Microsoft Entra) uses at the tenant's
SCIM endpoint, `{issuer}/scim/v2`. Shown once; the store keeps only a keyed digest. Creating a new one replaces the
previous token at once."""

from __future__ import annotations

import typer

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    record_admin_change,
    run,
    settings_from,
    tenant_store,
)
from chamberlain.crypto.master_key import load_master_key
from chamberlain.scim.app import SCIM_PATH
from chamberlain.scim.tokens import rotate
from chamberlain.tenancy.tenant import tenant_issuer

app = typer.Typer(help="SCIM 2.0 provisioning by an identity provider.", no_args_is_help=True)


@app.callback()
def scim() -> None:
    """SCIM 2.0 provisioning by an identity provider (Okta, Microsoft Entra) at {issuer}/scim/v2."""


@app.command("token")
def token(tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Create (or replace) the tenant's SCIM bearer token and print it once."""
    settings = settings_from(data_dir, config)

    async def create() -> tuple[str, str]:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            await record_admin_change(
                database, settings, target="scim-token", after={"rotated": True}, tenant=tenant_id
            )
            return tenant_id, await rotate(database, load_master_key(settings.data_dir), tenant_id)

    tenant_id, created = run(create())
    console.print(
        f"SCIM endpoint: [bold]{tenant_issuer(settings, tenant_id)}{SCIM_PATH}[/]. Any previous token no longer works."
    )
    console.print("Give this bearer token to the identity provider now; it is not shown again:")
    print(created)
