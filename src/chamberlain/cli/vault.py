"""`chamberlain vault`: upstream credentials, one namespace per (tenant, source), envelope-encrypted in the store.

Values never travel on the command line (shell history, the process list): they come from standard input, a file,
the environment (`import`) or are generated. No command prints a value except `get`, which writes it to standard
output alone, and every read and change is in the audit log before it happens.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.table import Table

from chamberlain.audit.events import Action, Actor
from chamberlain.audit.log import AuditLog, AuditUnavailable
from chamberlain.audit.reader import read_events
from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    errors,
    fail,
    initialised_store,
    read_secret_from_stdin,
    record_admin_change,
    run,
    settings_from,
    tenant_store,
)
from chamberlain.crypto.master_key import load_master_key
from chamberlain.settings import Settings
from chamberlain.store.database import Database
from chamberlain.store.servers import RESERVED_BINDINGS, ServerRepository, configured_servers
from chamberlain.store.users import UserRepository
from chamberlain.store.vault import CredentialRecord
from chamberlain.vault.backend import SecretRef, VaultError, check_name
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import LocalKek, load_kek_ring
from chamberlain.vault.rotation import generated_rotation, new_api_key, postgres_rotation, rotate, rotation_check
from chamberlain.vault.service import Vault
from chamberlain.vault.settings import DAY, CredentialKind, VaultSettings
from chamberlain.vault.storage import open_vault_storage

app = typer.Typer(help="Manage upstream credentials in the vault.", no_args_is_help=True)

SourceArgument = Annotated[str, typer.Argument(help="The source (an upstream system: confluence, github, ...).")]
NameArgument = Annotated[str, typer.Argument(help="The secret's name within its source.")]
KindOption = Annotated[
    CredentialKind | None, typer.Option("--kind", help="What the secret is (default: api_key for a new one).")
]
BindOption = Annotated[
    list[str] | None,
    typer.Option("--bind", metavar="SERVER", help="A server of the tenant that may use it (repeatable; none: no one)."),
]
UserOption = Annotated[
    str | None, typer.Option("--user", metavar="NAME", help="A per-user credential: used only on NAME's requests.")
]
MaxAgeOption = Annotated[
    int | None,
    typer.Option("--max-age", metavar="DAYS", min=1, max=36_500, help="Days before it is due for rotation."),
]
OwnerOption = Annotated[str | None, typer.Option("--owner", help="Who answers for it (default: you, for a new one).")]
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def vault_settings(settings: Settings) -> VaultSettings:
    """The `vault:` section once Settings has it; the defaults until then."""
    configured = getattr(settings, "vault", None)
    return configured if isinstance(configured, VaultSettings) else VaultSettings()


@dataclass(frozen=True)
class OpenedVault:
    database: Database
    vault: Vault
    tenant: str


@contextlib.asynccontextmanager
async def opened_vault(settings: Settings, tenant: str | None) -> AsyncIterator[OpenedVault]:
    """The store, the tenant (which must exist) and a Vault whose reads go to a running audit log."""
    async with tenant_store(settings, tenant) as (database, tenant_id):
        master_key = load_master_key(settings.data_dir)
        configured = vault_settings(settings)
        # The same place the gateway reads: the envelope store, or OpenBao when `vault.openbao` is set.
        storage = await open_vault_storage(settings, database, master_key)
        log = AuditLog(database, master_key, settings.audit)
        await log.start()
        try:
            yield OpenedVault(database, Vault(database, storage.backend, log, configured), tenant_id)
        finally:
            await log.aclose()
            await storage.aclose()


@contextlib.contextmanager
def vault_errors() -> Iterator[None]:
    """Vault failures become one line naming the credential (never its value) and exit 1."""
    try:
        yield
    except VaultError as problem:
        fail(str(problem))
    except AuditUnavailable:
        fail("the audit log cannot be written, so the credential was not read or changed (audit.fail_closed)")


def _ref(tenant: str, source: str, name: str) -> SecretRef:
    try:
        return SecretRef(tenant, source, name)
    except ValueError as problem:
        fail(str(problem))


def _operator() -> Actor:
    return Actor("user", f"os:{getpass.getuser()}")


def _target(ref: SecretRef) -> str:
    return f"credential:{ref}"


def recordable(record: CredentialRecord) -> dict[str, Any]:
    """The record as the audit log may keep it: no value, and the owner (maybe a person's name) only as set."""
    return {
        "kind": str(record.kind),
        "bindings": list(record.bindings),
        "user_id": record.user_id,
        "owner": "set" if record.owner else None,
        "max_age_days": None if record.max_age is None else record.max_age / DAY,
        "rotation": (record.rotation or {}).get("method"),
    }


# -- set / import ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialSpec:
    """What the options say about a credential; None: keep what an existing one has (or the default)."""

    kind: CredentialKind | None
    bindings: tuple[str, ...] | None
    user: str | None
    owner: str | None
    max_age_days: int | None
    rotation: dict[str, str] | None


async def _check_bindings(opened: OpenedVault, settings: Settings, bindings: tuple[str, ...]) -> None:
    if not bindings:
        return
    master_key = load_master_key(settings.data_dir)
    known = {server.name for server in await ServerRepository(opened.database, opened.tenant, master_key).list()}
    if opened.tenant == settings.tenant:
        known |= {server.name for server in configured_servers(settings)}
    for server in bindings:
        if server not in known and server not in RESERVED_BINDINGS:
            fail(f"no server named {server!r} in tenant {opened.tenant!r}: add it first ('chamberlain servers add')")


async def _user_id(opened: OpenedVault, name: str | None) -> str | None:
    if name is None:
        return None
    user = await UserRepository(opened.database, opened.tenant).get_by_username(name)
    if user is None:
        fail(f"no user named {name!r} in tenant {opened.tenant!r}")
    return user.id


async def store_credential(
    opened: OpenedVault, settings: Settings, ref: SecretRef, value: bytes, spec: CredentialSpec, *, via: str
) -> CredentialRecord:
    """Merges the options with the existing record, records the change, then stores the new version."""
    existing = await opened.vault.record(ref)
    bindings = spec.bindings if spec.bindings is not None else (existing.bindings if existing else ())
    await _check_bindings(opened, settings, bindings)
    user_id = await _user_id(opened, spec.user) if spec.user is not None else (existing.user_id if existing else None)
    rotation = spec.rotation if spec.rotation is not None else (existing.rotation if existing else None)
    kind = spec.kind or (existing.kind if existing else CredentialKind.API_KEY)
    owner = spec.owner or (existing.owner if existing else getpass.getuser())
    max_age = spec.max_age_days * DAY if spec.max_age_days is not None else (existing.max_age if existing else None)
    planned = CredentialRecord(
        ref, kind, owner, tuple(sorted(set(bindings))), user_id, max_age, rotation, "ok", None, 0.0, 0.0
    )
    await record_admin_change(
        opened.database,
        settings,
        target=_target(ref),
        before=recordable(existing) if existing else None,
        after={**recordable(planned), "value": f"new version ({via})"},
        tenant=opened.tenant,
    )
    record, _ = await opened.vault.store(
        ref,
        value,
        kind=kind,
        owner=owner,
        bindings=bindings,
        user_id=user_id,
        max_age=max_age,
        rotation=rotation,
    )
    return record


def _strip_newline(value: bytes) -> bytes:
    """One trailing newline is what `echo` and editors add; anything else is part of the secret."""
    if value.endswith(b"\r\n"):
        return value[:-2]
    return value[:-1] if value.endswith(b"\n") else value


def _read_value(from_stdin: bool, from_file: Path | None, generate: bool, prefix: str) -> bytes:
    if generate:
        return new_api_key(prefix).encode()
    if from_file is not None:
        try:
            value = _strip_newline(from_file.read_bytes())
        except OSError as problem:
            fail(f"{from_file}: {problem.strerror or 'cannot be read'}")
    elif sys.stdin.isatty():  # typed by a person: not echoed to the screen
        value = typer.prompt("The secret (not echoed)", hide_input=True, default="", show_default=False).encode()
    else:
        value = _strip_newline(read_secret_from_stdin("secret").encode())
    if not value:
        fail("the secret is empty: nothing was stored")
    return value


@app.command("set")
def set_secret(
    source: SourceArgument,
    name: NameArgument,
    from_stdin: Annotated[bool, typer.Option("--from-stdin", help="Read the value from standard input.")] = False,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", metavar="PATH", help="Read the value from a file.")
    ] = None,
    generate: Annotated[
        bool,
        typer.Option("--generate", help="Generate a random API key (a service account's); 'vault rotate' renews it."),
    ] = False,
    prefix: Annotated[str, typer.Option("--prefix", help="With --generate: a prefix for the key.")] = "",
    kind: KindOption = None,
    bind: BindOption = None,
    user: UserOption = None,
    owner: OwnerOption = None,
    max_age: MaxAgeOption = None,
    pg_role: Annotated[
        str | None,
        typer.Option("--pg-role", metavar="ROLE", help="The value is this PostgreSQL role's password (rotatable)."),
    ] = None,
    pg_admin: Annotated[
        str | None,
        typer.Option(
            "--pg-admin", metavar="SECRET", help="With --pg-role: the secret of this source holding an admin URL."
        ),
    ] = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Store a new version of a secret (earlier versions stay until purged) and set who may use it."""
    settings = settings_from(data_dir, config)
    if sum((from_stdin, from_file is not None, generate)) != 1:
        fail("give exactly one of --from-stdin, --from-file PATH and --generate (never the value as an argument)")
    if prefix and not generate:
        fail("--prefix applies only to --generate")
    if (pg_role is None) != (pg_admin is None):
        fail("--pg-role and --pg-admin go together")
    rotation: dict[str, str] | None = None
    if generate:
        if pg_role is not None:
            fail("--generate and --pg-role exclude each other")
        rotation = generated_rotation(prefix)
    elif pg_role is not None and pg_admin is not None:
        try:
            rotation = postgres_rotation(pg_role, pg_admin)
        except ValueError as problem:
            fail(str(problem))
        kind = kind or CredentialKind.PASSWORD
    _ref(settings.tenant, source, name)  # a bad name is reported before anything is read
    spec = CredentialSpec(kind, tuple(bind) if bind is not None else None, user, owner, max_age, rotation)

    async def store() -> CredentialRecord:
        async with opened_vault(settings, tenant) as opened:
            ref = _ref(opened.tenant, source, name)
            if pg_admin is not None and await opened.vault.record(_ref(opened.tenant, source, pg_admin)) is None:
                fail(f"no secret {source}/{pg_admin} for the admin connection: store it first ('vault set')")
            value = _read_value(from_stdin, from_file, generate, prefix)
            return await store_credential(opened, settings, ref, value, spec, via="generated" if generate else "set")

    with vault_errors():
        record = run(store())
    bound = ", ".join(record.bindings) or "no server (bind one with --bind)"
    console.print(f"Stored [bold]{source}/{name}[/] ({record.kind}); usable by: {bound}.", highlight=False)


def parse_dotenv(text: str, where: str) -> list[tuple[str, str]]:
    """KEY=VALUE lines as `.env` files write them: `#` comments, `export KEY=…`, single quotes literal, double
    quotes with \\n, \\" and \\\\ escapes; no variable expansion. Errors name the line, never its value."""
    pairs: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, equals, rest = line.partition("=")
        key = key.strip()
        if not equals or not _VARIABLE.fullmatch(key):
            raise ValueError(f"{where}:{number}: expected NAME=VALUE")
        rest = rest.strip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            end = _closing_quote(rest, quote)
            if end < 0:
                raise ValueError(f"{where}:{number}: {key}: the quoted value is not closed on its line")
            body = rest[1:end]
            value = body if quote == "'" else _unescape(body)
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        pairs.append((key, value))
    return pairs


def _closing_quote(text: str, quote: str) -> int:
    index = 1
    while index < len(text):
        if quote == '"' and text[index] == "\\":
            index += 2
            continue
        if text[index] == quote:
            return index
        index += 1
    return -1


def _unescape(body: str) -> str:
    escapes = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    return re.sub(r"\\(.)", lambda match: escapes.get(match.group(1), "\\" + match.group(1)), body)


def _importable(pairs: list[tuple[str, str]], prefix: str) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """(variable, secret name, value) for each variable to import, and the variables skipped (invalid names)."""
    chosen: list[tuple[str, str, bytes]] = []
    skipped: list[str] = []
    for variable, value in pairs:
        if not variable.startswith(prefix):
            continue
        name = variable[len(prefix) :].lower()
        try:
            check_name(name, "secret name")
        except ValueError:
            skipped.append(variable)
            continue
        if value:
            chosen.append((variable, name, value.encode()))
        else:
            skipped.append(variable)
    return chosen, skipped


@app.command("import")
def import_secrets(
    source: SourceArgument,
    env: Annotated[
        str | None,
        typer.Option("--env", metavar="PREFIX", help="Import environment variables named PREFIX…; NAME: the rest."),
    ] = None,
    dotenv: Annotated[
        Path | None, typer.Option("--dotenv", metavar="FILE", help="Import every NAME=VALUE of a .env file.")
    ] = None,
    kind: KindOption = None,
    bind: BindOption = None,
    user: UserOption = None,
    owner: OwnerOption = None,
    max_age: MaxAgeOption = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Import secrets from the environment or a .env file into SOURCE (names lowercased), then remove the
    originals: a secret in the vault and in a file is still a secret in a file."""
    settings = settings_from(data_dir, config)
    if (env is None) == (dotenv is None):
        fail("give exactly one of --env PREFIX and --dotenv FILE")
    if env is not None:
        if not _VARIABLE.fullmatch(env):
            fail(f"invalid --env prefix {env!r}: letters, digits and '_'")
        chosen, skipped = _importable(sorted(os.environ.items()), env)
        origin = f"environment variables {env}*"
    else:
        assert dotenv is not None
        try:
            chosen, skipped = _importable(parse_dotenv(dotenv.read_text(encoding="utf-8"), str(dotenv)), "")
        except OSError as problem:
            fail(f"{dotenv}: {problem.strerror or 'cannot be read'}")
        except (ValueError, UnicodeDecodeError) as problem:
            fail(str(problem) if isinstance(problem, ValueError) else f"{dotenv}: not UTF-8 text")
        origin = str(dotenv)
    for variable in skipped:
        errors.print(f"skipped {variable}: empty, or not usable as a secret name", markup=False, highlight=False)
    if not chosen:
        fail(f"nothing to import from {origin}")
    spec = CredentialSpec(kind, tuple(bind) if bind is not None else None, user, owner, max_age, None)

    async def store_all() -> list[str]:
        async with opened_vault(settings, tenant) as opened:
            stored = []
            for _variable, name, value in chosen:
                await store_credential(opened, settings, _ref(opened.tenant, source, name), value, spec, via="import")
                stored.append(name)
            return stored

    with vault_errors():
        names = run(store_all())
    console.print(f"Imported {len(names)} secrets into {source}: {', '.join(names)}.", highlight=False)
    if dotenv is not None:
        console.print(f"Now delete {dotenv}: its secrets are in the vault (for example: shred -u {dotenv}).")
    else:
        console.print(
            "Now remove these variables from wherever they are set (shell profile, service unit, CI settings)."
        )


# -- read ------------------------------------------------------------------------------------------------------


@app.command("get")
def get(
    source: SourceArgument,
    name: NameArgument,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="A kept version (default: the latest).")
    ] = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Print a secret's value to standard output (nothing else goes there). The read is recorded in the audit log
    before the value is shown."""
    settings = settings_from(data_dir, config)

    async def read() -> bytes:
        async with opened_vault(settings, tenant) as opened:
            ref = _ref(opened.tenant, source, name)
            return await opened.vault.read_as_admin(ref, actor=_operator(), version=version)

    with vault_errors():
        value = run(read())
    click.echo(value, nl=sys.stdout.isatty())


@app.command("list")
def list_secrets(
    source: Annotated[str | None, typer.Argument(help="Only this source.")] = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """List the credentials: metadata only, never a value."""
    settings = settings_from(data_dir, config)

    async def fetch() -> list[tuple[str, ...]]:
        async with opened_vault(settings, tenant) as opened:
            versions = {
                (version.ref.source, version.ref.name): version.version
                for version in await opened.vault.backend.list(opened.tenant, source)
            }
            users = UserRepository(opened.database, opened.tenant)
            now = time.time()
            rows: list[tuple[str, ...]] = []
            for record in await opened.vault.records(opened.tenant, source):
                user = await users.get(record.user_id) if record.user_id else None
                max_age = opened.vault.max_age_of(record)
                rows.append(
                    (
                        record.ref.source,
                        record.ref.name,
                        str(record.kind),
                        str(versions.get((record.ref.source, record.ref.name), "-")),
                        ", ".join(record.bindings) or "-",
                        (user.username if user else "(deleted user)") if record.user_id else "-",
                        record.owner or "-",
                        _days(now - record.rotated_at),
                        _days(max_age) if max_age is not None else "-",
                        record.health if record.health == "ok" else f"unhealthy: {record.health_reason}",
                    )
                )
            return rows

    with vault_errors():
        rows = run(fetch())
    table = _table("Source", "Name", "Kind", "Version", "Bound to", "User", "Owner", "Age", "Max age", "Health")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _table(*headers: str) -> Table:
    """Cells fold instead of ending in an ellipsis: a truncated name or target would be a wrong one."""
    table = Table()
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _days(seconds: float) -> str:
    return f"{seconds / DAY:.0f} d" if seconds >= DAY else f"{seconds / 3600:.0f} h"


# -- change ----------------------------------------------------------------------------------------------------


@app.command("rm")
def remove(
    source: SourceArgument,
    name: NameArgument,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Remove a secret: every version and its record."""
    settings = settings_from(data_dir, config)

    async def delete() -> bool:
        async with opened_vault(settings, tenant) as opened:
            ref = _ref(opened.tenant, source, name)
            existing = await opened.vault.record(ref)
            if existing is None and not await opened.vault.backend.versions(ref):
                return False
            before = recordable(existing) if existing else {}
            await record_admin_change(
                opened.database, settings, target=_target(ref), before=before, after={}, tenant=opened.tenant
            )
            return await opened.vault.remove(ref)

    with vault_errors():
        removed = run(delete())
    if not removed:
        fail(f"no secret {source}/{name}")
    console.print(f"Removed [bold]{source}/{name}[/] and all its versions.", highlight=False)


@app.command("purge")
def purge(
    source: SourceArgument,
    name: NameArgument,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Versions to keep, newest first.")] = 1,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Drop old versions (kept until now for rollback)."""
    settings = settings_from(data_dir, config)

    async def drop() -> int:
        async with opened_vault(settings, tenant) as opened:
            ref = _ref(opened.tenant, source, name)
            if not await opened.vault.backend.versions(ref):
                fail(f"no secret {source}/{name}")
            await record_admin_change(
                opened.database, settings, target=_target(ref), after={"purged_keeping": keep}, tenant=opened.tenant
            )
            return await opened.vault.backend.purge(ref, keep=keep)

    with vault_errors():
        dropped = run(drop())
    console.print(f"Dropped {dropped} old versions of {source}/{name}.", highlight=False)


@app.command("rotate")
def rotate_secret(
    source: SourceArgument,
    name: NameArgument,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Renew a credential Chamberlain can renew itself: a generated API key, or a PostgreSQL role's password."""
    settings = settings_from(data_dir, config)

    async def renew() -> int:
        async with opened_vault(settings, tenant) as opened:
            ref = _ref(opened.tenant, source, name)
            record = await opened.vault.record(ref)
            if record is None:
                fail(f"no credential {source}/{name}")
            method = (record.rotation or {}).get("method")
            await record_admin_change(
                opened.database, settings, target=_target(ref), after={"rotation": method}, tenant=opened.tenant
            )
            return (await rotate(opened.vault, ref, actor=_operator())).version

    with vault_errors():
        version = run(renew())
    console.print(
        f"Rotated [bold]{source}/{name}[/]: version {version} is current; earlier ones stay until 'vault purge'.",
        highlight=False,
    )


# -- audit -----------------------------------------------------------------------------------------------------


@app.command("audit")
def audit(
    rotation_check_flag: Annotated[
        bool, typer.Option("--rotation-check", help="List credentials past or near their maximum age, with owners.")
    ] = False,
    days: Annotated[int, typer.Option("--days", min=1, help="Without --rotation-check: days of events shown.")] = 7,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Credential reads, refusals and rotations of the last days; or, with --rotation-check, what is due."""
    settings = settings_from(data_dir, config)
    if rotation_check_flag:
        _rotation_report(settings, tenant)
        return

    async def events() -> list[Mapping[str, Any]]:
        async with tenant_store(settings, tenant) as (database, tenant_id):
            found = await read_events(
                database,
                tenant_id,
                since=time.time() - days * DAY,
                limit=100_000,
                actions=[Action.CREDENTIAL_READ, Action.CREDENTIAL_REFUSED, Action.CREDENTIAL_ROTATED],
            )
            return [event.public for event in found]

    table = _table("Time", "Action", "Outcome", "Credential", "Actor", "Upstream", "Request", "Reason")
    for event in run(events()):
        details = event.get("details") or {}
        table.add_row(
            datetime.datetime.fromtimestamp(event["time"], datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            event["action"],
            event["outcome"],
            event.get("target") or "-",
            (event.get("actor") or {}).get("id", "-"),
            str(details.get("upstream", "-")),
            event.get("request_id") or "-",
            event.get("reason") or str(details.get("purpose") or details.get("stage") or ""),
        )
    console.print(table)


def _rotation_report(settings: Settings, tenant: str | None) -> None:
    async def check() -> list[tuple[str, ...]]:
        async with opened_vault(settings, tenant) as opened:
            due = await rotation_check(opened.vault, opened.tenant, time.time())
            return [
                (
                    f"{item.record.ref.source}/{item.record.ref.name}",
                    str(item.record.kind),
                    item.record.owner or "-",
                    _days(item.age),
                    _days(item.max_age),
                    "overdue" if item.overdue else "due soon",
                    "vault rotate" if item.record.rotation else "at its source, then vault set",
                )
                for item in due
            ]

    with vault_errors():
        rows = run(check())
    if not rows:
        console.print("No credential is past or near its maximum age.")
        return
    table = _table("Credential", "Kind", "Owner", "Age", "Max age", "State", "Rotate with")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    overdue = sum(1 for row in rows if row[5] == "overdue")
    console.print(f"{overdue} overdue, {len(rows) - overdue} due within 10% of their maximum age.")


# -- key-encryption key ----------------------------------------------------------------------------------------


@app.command("rotate-kek")
def rotate_kek(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file",
            metavar="PATH",
            help="Rewrap under a new KEK kept in PATH (created 0600 if missing) instead of the configured vault.kek.",
        ),
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Rewrap every tenant's data keys under a new key-encryption key; values are never decrypted. Batches commit
    one by one: if interrupted, run it again. Running gateways must be able to unwrap under the new KEK first: list
    it in vault.previous_keks (or make it vault.kek, the old one in previous_keks) before running this."""
    settings = settings_from(data_dir, config)
    configured = vault_settings(settings)

    async def rewrap() -> tuple[str, int, dict[str, int], list[str]]:
        async with initialised_store(settings) as database:
            ring = load_kek_ring(configured, data_dir=settings.data_dir, master_key=load_master_key(settings.data_dir))
            destination = f"file {new_key_file}" if new_key_file else configured.kek.describe()
            await record_admin_change(database, settings, target="vault:kek", after={"rewrap_to": destination})
            if new_key_file is not None:
                new = LocalKek.from_file(new_key_file) if new_key_file.exists() else LocalKek.create_file(new_key_file)
                ring = ring.with_current(new)
            report = await EnvelopeBackend(database, ring).rewrap(batch_size=configured.rewrap_batch_size)
            return report.kek_id, report.rewrapped, dict(report.missing_keks), report.unreadable

    with vault_errors():
        kek_id, rewrapped, missing, unreadable = run(rewrap())
    console.print(f"Rewrapped {rewrapped} data keys under key-encryption key {kek_id}.", highlight=False)
    if new_key_file is not None:
        console.print(
            f"Set vault.kek to {{type: file, path: {new_key_file}}} in chamberlain.yaml, with the previous KEK under "
            "vault.previous_keks until every gateway runs with the new setting.",
            markup=False,
            highlight=False,
        )
    if missing or unreadable:
        _incomplete(missing, unreadable)


def _incomplete(missing: dict[str, int], unreadable: list[str]) -> NoReturn:
    for kek_id, count in sorted(missing.items()):
        errors.print(f"{count} data keys are wrapped by {kek_id}, which is not configured", markup=False)
    for where in unreadable:
        errors.print(f"{where}: its data key does not unwrap under the KEK its row names", markup=False)
    fail("the rotation is incomplete: add the missing KEKs to vault.previous_keks and run it again")
