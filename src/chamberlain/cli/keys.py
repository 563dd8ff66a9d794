"""`chamberlain keys`: token signing keys."""

from __future__ import annotations

import typer
from rich.table import Table

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    console,
    initialised_store,
    record_admin_change,
    run,
    settings_from,
)
from chamberlain.crypto.master_key import load_master_key
from chamberlain.crypto.signing_keys import generate_signing_key
from chamberlain.store import keys as key_store

app = typer.Typer(help="Manage token signing keys.", no_args_is_help=True)


@app.command("rotate")
def rotate(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Start signing with a new key; the old one keeps verifying until its tokens expire."""
    settings = settings_from(data_dir, config)

    async def rotate_key() -> str:
        async with initialised_store(settings) as database:
            new_key = generate_signing_key(settings.tokens.signing_algorithm, load_master_key(settings.data_dir))
            await record_admin_change(database, settings, target="signing_key", after={"kid": new_key.kid})
            await key_store.rotate(database, new_key, keep_verifying_for=settings.tokens.access_token_ttl + 60)
            return new_key.kid

    kid = run(rotate_key())
    console.print(f"New signing key [bold]{kid}[/]; running servers switch to it within seconds.")


@app.command("list")
def list_keys(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List the keys in the JWKS."""
    settings = settings_from(data_dir, config)

    async def fetch() -> list[key_store.KeyRow]:
        async with initialised_store(settings) as database:
            return await key_store.usable_keys(database)

    table = Table("Key ID", "Algorithm", "State")
    for row in run(fetch()):
        table.add_row(str(row.kid), str(row.alg), "retiring" if row.retired_at else "signing")
    console.print(table)
