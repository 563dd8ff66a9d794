"""`chamberlain sessions`: browser sign-ins, and revoking everything a user holds."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.table import Column, Table

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
from chamberlain.oauth.revocation_fanout import announce_revocations
from chamberlain.sessions.revocation import UserRevocation, revoke_user
from chamberlain.store.browser_sessions import BrowserSessionRepository
from chamberlain.store.consents import ConsentRepository
from chamberlain.store.grants import GrantRepository
from chamberlain.store.users import UserRepository

app = typer.Typer(help="Manage browser sessions and revoke users' access.", no_args_is_help=True)


@app.command("list")
def list_sessions(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's sessions.")] = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """List live sessions (never their ids: a handle identifies each)."""
    settings = settings_from(data_dir, config)

    async def fetch() -> list[tuple[str, ...]]:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            users = UserRepository(database, tenant_id)
            names = {account.id: account.username for account in await users.list()}
            user_id = None
            if user is not None:
                found = await users.get_by_username(user)
                if found is None:
                    fail(f"no user named {user!r}")
                user_id = found.id
            return [
                (
                    session.handle,
                    names.get(session.user_id, session.user_id),
                    _time(session.created_at),
                    _time(session.last_seen_at),
                    _time(session.idle_expires_at()),
                    "yes" if session.mfa else "no",
                )
                for session in await BrowserSessionRepository(database, tenant_id).list(user_id)
            ]

    # The handle is what the admin API revokes a single session by: never wrapped, so it can be copied whole.
    table = Table(Column("Handle", no_wrap=True), "User", "Signed in", "Last seen", "Expires", "MFA")
    for row in run(fetch()):
        table.add_row(*row)
    console.print(table)


@app.command("revoke")
def revoke(
    user: Annotated[str, typer.Argument(metavar="USER", help="User name.")],
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """End a user's sessions and revoke their refresh tokens (and access tokens) and consents."""
    settings = settings_from(data_dir, config)

    async def revoke_everything() -> UserRevocation:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            users = UserRepository(database, tenant_id)
            found = await users.get_by_username(user)
            if found is None:
                fail(f"no user named {user!r}")
            await record_admin_change(
                database,
                settings,
                target=f"user:{found.id}",
                after={"revoked": "sessions, grants, consents"},
                tenant=tenant_id,
            )
            done = await revoke_user(
                found.id,
                users=users,
                grants=GrantRepository(database, tenant_id),
                consents=ConsentRepository(database, tenant_id),
                sessions=BrowserSessionRepository(database, tenant_id),
            )
            await announce_revocations(settings.redis_url, database)
            return done

    done = run(revoke_everything())
    console.print(
        f"Revoked [bold]{user}[/]: {done.sessions} session(s), {done.grants} grant(s) with their tokens, "
        f"{done.consents} consent(s)."
    )


@app.command("revoke-all")
def revoke_all(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """End every browser session of the tenant: everyone signs in again."""
    settings = settings_from(data_dir, config)
    if not yes and not typer.confirm("End every browser session of the tenant?"):
        fail("nothing was revoked")

    async def end_all() -> int:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            await record_admin_change(
                database, settings, target=f"tenant:{tenant_id}", after={"revoked": "all sessions"}, tenant=tenant_id
            )
            return await BrowserSessionRepository(database, tenant_id).revoke_all()

    console.print(f"Ended {run(end_all())} session(s).")


def _time(value: float) -> str:
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
