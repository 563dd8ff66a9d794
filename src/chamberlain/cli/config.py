"""`chamberlain config`: a tenant's sign-in settings, stored in its configuration (the `tenants.config` column, where
the admin API keeps them too); gateways pick a change up within a second.

    chamberlain config set mfa enforced            # sso.mfa: off | optional | enforced
    chamberlain config set session-timeout 480     # minutes -> sessions.idle_timeout (seconds)
    chamberlain config show

Every change is validated against TenantConfig (the error names the setting) and recorded in the audit log first.
Where chamberlain.yaml sets the same section for the tenant, the file's wins: `set` says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    errors,
    fail,
    record_admin_change,
    run,
    settings_from,
    tenant_store,
)
from chamberlain.settings import Settings
from chamberlain.store.database import Database
from chamberlain.store.tenants import TenantRepository
from chamberlain.tenancy.config import SessionPolicy, TenantConfig
from chamberlain.tenancy.effective import from_file, load_effective_config

app = typer.Typer(help="A tenant's sign-in settings: MFA and session timeout.", no_args_is_help=True)

MINUTE = 60
ConfigUpdate = Callable[[dict[str, Any]], dict[str, Any]]


class Setting(StrEnum):
    MFA = "mfa"
    SESSION_TIMEOUT = "session-timeout"


async def update_stored_config(
    database: Database,
    settings: Settings,
    tenant_id: str,
    *,
    what: str,
    section: str,
    change: ConfigUpdate,
    before_write: Callable[[], Awaitable[None]] | None = None,
) -> TenantConfig:
    """Replaces `section` of the tenant's stored configuration with `change(section as stored)`, after validating
    the whole configuration and recording the change in the audit log (before: the section as stored). Fails with
    `what` (the setting or option at fault) and the validator's message when the result is invalid. `before_write`
    runs between the record and the write (storing a secret the new configuration refers to)."""
    tenants = TenantRepository(database)
    row = await tenants.get(tenant_id)
    if row is None:
        fail(f"no tenant {tenant_id!r}")
    stored = dict(row.config or {})
    before = dict(stored.get(section) or {})
    updated = {**stored, section: change(dict(before))}
    try:
        validated = TenantConfig.model_validate(updated)
    except ValidationError as problem:
        fail(f"{what}: {first_problem(problem)}", code=2)
    await record_admin_change(
        database,
        settings,
        target=f"tenant:{tenant_id}/{section}",
        before={section: stored.get(section)},
        after={section: updated[section]},
        tenant=tenant_id,
    )
    if before_write is not None:
        await before_write()
    await tenants.set_config(tenant_id, updated)
    return validated


def first_problem(problem: ValidationError) -> str:
    """The first error's message, without pydantic's "Value error, " prefix (the caller names the setting)."""
    first = problem.errors(include_url=False)[0]
    return str(first["msg"]).removeprefix("Value error, ")


def warn_if_file_overrides(settings: Settings, tenant_id: str, section: str) -> None:
    """The configuration file's section wins over the stored one (tenancy/effective.py): say so."""
    if section in from_file(settings, tenant_id).model_fields_set:
        errors.print(
            f"[bold yellow]warning:[/] the configuration file sets {escape(section)}: for tenant "
            f"{escape(tenant_id)!r}, and that stays in force until removed from it",
            highlight=False,
            soft_wrap=True,
        )


def _session_timeout_seconds(value: str) -> int:
    bounds = {type(rule).__name__: rule for rule in SessionPolicy.model_fields["idle_timeout"].metadata}
    low, high = bounds["Ge"].ge // MINUTE, bounds["Le"].le // MINUTE
    try:
        minutes = int(value)
    except ValueError:
        minutes = -1
    if not low <= minutes <= high:
        fail(f"session-timeout: {value!r} is not a number of minutes from {low} to {high}", code=2)
    return minutes * MINUTE


@app.command("set")
def set_setting(
    setting: Annotated[Setting, typer.Argument(help="mfa (off|optional|enforced) or session-timeout (minutes).")],
    value: Annotated[str, typer.Argument(help="The new value.")],
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Change a sign-in setting of the tenant (validated, and recorded in the audit log first)."""
    settings = settings_from(data_dir, config)
    if setting is Setting.MFA:
        section = "sso"

        def change(stored: dict[str, Any]) -> dict[str, Any]:
            return {**stored, "mfa": value}

        shown = value
    else:
        section = "sessions"
        seconds = _session_timeout_seconds(value)

        def change(stored: dict[str, Any]) -> dict[str, Any]:
            return {**stored, "idle_timeout": seconds}

        shown = f"{int(value)} minutes ({seconds} s)"

    async def store() -> str:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            await update_stored_config(
                database, settings, tenant_id, what=setting.value, section=section, change=change
            )
            return tenant_id

    tenant_id = run(store())
    console.print(f"Set {setting.value} to {shown} for tenant {tenant_id!r}.", markup=False, highlight=False)
    warn_if_file_overrides(settings, tenant_id, section)


@app.command("show")
def show(tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Print the sign-in settings in force (the configuration file's sections over the stored ones)."""
    settings = settings_from(data_dir, config)

    async def effective() -> tuple[str, TenantConfig]:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            return tenant_id, await load_effective_config(database, settings, tenant_id)

    tenant_id, current = run(effective())
    idle = current.sessions.idle_timeout
    timeout = (
        f"{idle // MINUTE} minutes"
        if idle is not None
        else f"{settings.login.session_ttl // MINUTE} minutes (login.session_ttl: no tenant setting)"
    )
    lines = [
        f"tenant: {tenant_id}",
        f"mfa: {current.sso.mfa}",
        f"session-timeout: {timeout}",
        f"jit provisioning: {'on' if current.sso.jit else 'off'}",
        f"default roles: {', '.join(current.sso.default_roles) or '-'}",
        f"identity providers: {len(current.sso.providers)}",
    ]
    lines += [
        f"  {name}: {provider.kind}, domains {', '.join(provider.domains) or '-'}"
        for name, provider in sorted(current.sso.providers.items())
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
