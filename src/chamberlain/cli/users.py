"""`chamberlain users`: local accounts."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from chamberlain.audit.emit import keyed_hash, keyed_hash_key
from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    fail,
    read_secret_from_stdin,
    record_admin_change,
    refuse_over_quota,
    run,
    settings_from,
    tenant_store,
)
from chamberlain.crypto.master_key import load_master_key
from chamberlain.identity.passwords import PasswordPolicyError, hash_password
from chamberlain.identity.totp import encrypt_seed, new_totp_seed, provisioning_uri
from chamberlain.store.users import UserRepository

app = typer.Typer(help="Manage local users.", no_args_is_help=True)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[list[str], typer.Option("--role", help="Role to grant (repeatable).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Add a local user."""
    settings = settings_from(data_dir, config)
    if not password_stdin:
        fail("pass --password-stdin and send the password on standard input (never on the command line)")
    if not name.strip() or len(name) > 200 or name != name.strip():
        fail("the user name must be 1-200 characters without leading or trailing spaces")
    try:
        password_hash = hash_password(read_secret_from_stdin("password"))
    except PasswordPolicyError as problem:
        fail(str(problem))

    async def add_user() -> None:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            await refuse_over_quota(database, settings, tenant_id, "users")
            # A user name is personal data: the record names the new account by a keyed hash of it, never in clear.
            hashed = keyed_hash(keyed_hash_key(load_master_key(settings.data_dir)), name)[:16]
            await record_admin_change(
                database, settings, target=f"user-name:{hashed}", after={"roles": list(role)}, tenant=tenant_id
            )
            await UserRepository(database, tenant_id).add(name, password_hash, tuple(role))

    run(add_user())
    console.print(f"Added user [bold]{name}[/] with roles {', '.join(role)}.")


@app.command("list")
def list_users(tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List local users."""
    settings = settings_from(data_dir, config)

    async def fetch() -> list[tuple[str, str, str, str]]:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            return [
                (
                    user.username,
                    ", ".join(user.roles),
                    "yes" if user.totp_secret else "no",
                    _state(user.disabled, user.locked_until),
                )
                for user in await UserRepository(database, tenant_id).list()
            ]

    table = Table("User", "Roles", "TOTP", "State")
    for row in run(fetch()):
        table.add_row(*row)
    console.print(table)


def _state(disabled: bool, locked_until: float | None) -> str:
    if disabled:
        return "disabled"
    if locked_until and locked_until > time.time():
        return "locked"
    return "active"


@app.command("totp")
def totp(
    name: Annotated[str, typer.Argument(help="User name.")],
    disable: Annotated[bool, typer.Option("--disable", help="Remove the user's TOTP factor.")] = False,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Enrol a user in TOTP (prints the secret and an otpauth:// URI once), or remove the factor."""
    settings = settings_from(data_dir, config)
    seed = new_totp_seed()

    async def update() -> bool:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            users = UserRepository(database, tenant_id)
            user = await users.get_by_username(name)
            if user is None:
                return False
            after = {"totp": "removed" if disable else "enrolled"}
            await record_admin_change(database, settings, target=f"user:{user.id}", after=after, tenant=tenant_id)
            secret = None if disable else encrypt_seed(seed, user.id, load_master_key(settings.data_dir))
            await users.set_totp_secret(user.id, secret)
            return True

    if not run(update()):
        fail(f"no user named {name!r}")
    if disable:
        console.print(f"Removed the TOTP factor of [bold]{name}[/].")
        return
    console.print(f"TOTP enrolled for [bold]{name}[/]. Secret: [bold]{seed}[/]")
    console.print(provisioning_uri(seed, username=name, issuer="Chamberlain"), soft_wrap=True)
