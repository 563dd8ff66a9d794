"""What every command shares: the --data-dir option, loading settings, opening the store, reporting mistakes."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditLog, AuditUnavailable
from chamberlain.crypto.master_key import MasterKeyError, load_master_key
from chamberlain.policy.quotas import QuotaKind, check_can_add
from chamberlain.settings import Settings, SettingsError, load_settings
from chamberlain.state import NotInitialised
from chamberlain.store.database import Database, create_database, pending_migrations
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.tenants import TenantRepository
from chamberlain.tenancy.effective import load_effective_config

console = Console()
errors = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="CHAMBERLAIN_DATA_DIR",
        help="Where the store, keys and chamberlain.yaml live (default: ./.chamberlain).",
        show_default=False,
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CHAMBERLAIN_CONFIG",
        help="Configuration file (default: DATA_DIR/chamberlain.yaml).",
    ),
]

Tenant = Annotated[
    str | None,
    typer.Option("--tenant", help="The tenant to act on (default: the configured default tenant).", show_default=False),
]

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Known mistakes become one clear line and a non-zero exit; never a traceback."""
    try:
        yield
    except (SettingsError, MasterKeyError, NotInitialised, AlreadyExists) as problem:
        fail(str(problem))
    except OSError as problem:
        fail(f"{problem.filename or ''}: {problem.strerror}" if problem.strerror else str(problem))


def settings_from(data_dir: Path | None, config: Path | None = None, **overrides: object) -> Settings:
    with reported_errors():
        return load_settings(data_dir=data_dir, config_file=config, overrides=overrides)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    with reported_errors():
        return asyncio.run(coroutine)


@contextlib.asynccontextmanager
async def initialised_store(settings: Settings) -> AsyncIterator[Database]:
    database = create_database(settings.effective_database_url)
    try:
        if await pending_migrations(database):
            raise NotInitialised(
                f"no initialised store in {settings.data_dir}: run 'chamberlain init' first (or pass --data-dir)"
            )
        yield database
    finally:
        await database.dispose()


@contextlib.asynccontextmanager
async def tenant_store(settings: Settings, tenant: str | None) -> AsyncIterator[tuple[Database, str]]:
    """The initialised store and the id of the tenant a command acts on, which must exist."""
    async with initialised_store(settings) as database:
        yield database, await existing_tenant(database, settings, tenant)


async def existing_tenant(database: Database, settings: Settings, tenant: str | None) -> str:
    """The tenant a command acts on, which must exist (the default tenant always does once initialised)."""
    tenant_id = tenant or settings.tenant
    if await TenantRepository(database).get(tenant_id) is None:
        fail(f"no tenant {tenant_id!r}: create it with 'chamberlain tenants add {tenant_id}'")
    return tenant_id


async def refuse_over_quota(database: Database, settings: Settings, tenant_id: str, kind: QuotaKind) -> None:
    """Stops the command when the tenant already has as many `kind` as its quota allows."""
    refusal = await check_can_add(
        TenantRepository(database), tenant_id, (await load_effective_config(database, settings, tenant_id)).quotas, kind
    )
    if refusal is not None:
        fail(refusal)


def read_secret_from_stdin(what: str) -> str:
    if sys.stdin.isatty():
        errors.print(f"Enter the {what}, then press Ctrl-D:")
    value = sys.stdin.read()
    # One trailing newline is what `echo` and here-strings add; anything else is part of the secret.
    return value[:-1] if value.endswith("\n") else value


async def record_admin_change(
    database: Database,
    settings: Settings,
    *,
    target: str,
    action: Action = Action.ADMIN_CHANGE,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    tenant: str | None = None,
) -> None:
    """Records an administrative change before it is made. Fail-closed actions (the default for admin changes)
    must be durable first: when the audit log cannot be written the command stops and the change is not made."""
    log = AuditLog(database, load_master_key(settings.data_dir), settings.audit)
    await log.start()
    # The writer's own log line about a failed write would precede the one-line error below: keep it quiet here.
    writer_logger = logging.getLogger(AuditLog.__module__)
    quiet = writer_logger.level
    writer_logger.setLevel(logging.CRITICAL)
    try:
        event = AuditEvent(
            action=action,
            outcome="success",
            tenant=tenant or settings.tenant,
            actor=Actor("user", f"os:{getpass.getuser()}"),
            target=target,
            details={"before": dict(before or {}), "after": dict(after or {}), "via": "cli"},
        )
        await log.record_as_configured(event)
        await log.flush()
    except AuditUnavailable:
        fail("the audit log cannot be written, so the change was refused (audit.fail_closed)")
    finally:
        await log.aclose()
        writer_logger.setLevel(quiet)
