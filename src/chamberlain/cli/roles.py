"""`chamberlain roles`: the enterprise_roles document of a tenant (format and extensions: policy/roles.py).

`import` validates a JSON or YAML document and stores it in the tenant's configuration (the `tenants.config`
column, where the admin API keeps it too); the gateway picks it up within a second. `show` prints the document in
force and says where it comes from: for the default tenant the configuration file's top-level `roles:` wins, then
the file's `tenants.ID.roles`, then the stored document, then the built-in defaults (other tenants: the file's
`tenants.ID.roles`, the stored document, the defaults). `check` validates a file without touching the store.

An invalid document is refused with every problem on its own line, located by path (and by line when the file's
text allows). Server names that no registered server answers to are warnings: the server may be added later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.markup import escape

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    errors,
    fail,
    initialised_store,
    record_admin_change,
    run,
    settings_from,
)
from chamberlain.crypto.master_key import load_master_key
from chamberlain.policy.roles import DEFAULT_ROLES, InvalidRoles, Problem, RolesDocument, check_servers, parse_roles
from chamberlain.settings import Settings
from chamberlain.store.database import Database
from chamberlain.store.servers import ServerRepository, configured_servers
from chamberlain.store.tenants import TenantRepository
from chamberlain.tenancy.config import TenantConfig, check_tenant_id
from chamberlain.tenancy.effective import from_file

app = typer.Typer(help="Manage the roles document (enterprise_roles) of a tenant.", no_args_is_help=True)

RolesFile = Annotated[
    Path,
    typer.Argument(help="The document: JSON (a .json file) or YAML.", show_default=False),
]


@app.command("import")
def import_roles(
    file: RolesFile,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Validate a roles document and store it as the tenant's roles (recorded in the audit log first)."""
    settings = settings_from(data_dir, config)
    tenant_id = _tenant_id(tenant, settings)
    document = _load(file)
    after = document.model_dump(mode="json", exclude_unset=True)  # what was written, so `show` gives it back

    async def store() -> list[str]:
        async with initialised_store(settings) as database:
            tenants = TenantRepository(database)
            row = await tenants.get(tenant_id)
            if row is None:
                fail(f"no tenant {tenant_id!r}")
            stored = dict(row.config or {})
            updated = {**stored, "roles": after}
            try:
                TenantConfig.model_validate(updated)
            except ValidationError as problem:
                # Only the rest of the stored configuration can be at fault: the document itself validated.
                fail(f"tenant {tenant_id!r}'s stored configuration is invalid, so it was left unchanged: {problem}")
            unknown = check_servers(document, await _server_names(database, settings, tenant_id))
            await record_admin_change(
                database,
                settings,
                target=f"roles:{tenant_id}",
                before={"roles": stored.get("roles")},
                after={"roles": after},
                tenant=tenant_id,
            )
            await tenants.set_config(tenant_id, updated)
            return unknown

    unknown = run(store())
    count = len(document.enterprise_roles)
    console.print(
        f"Imported {count} role{'s' if count != 1 else ''} into tenant {tenant_id!r}.", markup=False, highlight=False
    )
    for line in unknown:
        _warn(line)
    overriding = _file_source(settings, tenant_id)
    if overriding is not None:
        _warn(f"{overriding} sets this tenant's roles and stays in force until removed from it")


@app.command("show")
def show(tenant: Tenant = None, data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Print the roles document in force as JSON (its source goes to standard error)."""
    settings = settings_from(data_dir, config)
    tenant_id = _tenant_id(tenant, settings)

    async def stored() -> tuple[bool, RolesDocument | None]:
        async with initialised_store(settings) as database:
            row = await TenantRepository(database).get(tenant_id)
        if row is None or not row.config:
            return row is not None, None
        try:
            return True, TenantConfig.model_validate(row.config).roles
        except ValidationError as problem:
            fail(f"the stored configuration of tenant {tenant_id!r} is invalid: {problem}")

    exists, stored_roles = run(stored())
    file_source = _file_source(settings, tenant_id)
    if not exists and tenant_id not in settings.tenants:
        fail(f"no tenant {tenant_id!r}")
    if file_source is not None:
        document, source = _file_roles(settings, tenant_id), file_source
    elif stored_roles is not None:
        document, source = stored_roles, "the stored document (chamberlain roles import or the admin API)"
    else:
        document, source = DEFAULT_ROLES, "the built-in defaults (nothing configured or stored)"
    typer.echo(json.dumps(document.model_dump(mode="json", exclude_unset=True), indent=2))
    errors.print(f"Roles of tenant {tenant_id!r} in force: {source}.", markup=False, highlight=False, soft_wrap=True)


@app.command("check")
def check(file: RolesFile) -> None:
    """Validate a roles document without storing it."""
    document = _load(file)
    count = len(document.enterprise_roles)
    console.print(f"{file}: valid, {count} role{'s' if count != 1 else ''}.", markup=False, highlight=False)


# -- reading documents ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Located:
    lines: dict[tuple[str, ...], int]  # path -> line (1-based) where the key or item starts
    duplicates: list[Problem]  # a key given twice: JSON and YAML loaders keep the last one without a word


def _load(file: Path) -> RolesDocument:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as problem:
        fail(f"{file}: cannot read it ({problem.strerror or problem})")
    except UnicodeDecodeError:
        fail(f"{file}: not UTF-8 text")
    data = _parse(file, text)
    located = _locate(text)
    problems = list(located.duplicates)
    try:
        document = parse_roles(data)
    except InvalidRoles as invalid:
        problems += invalid.problems
    if problems:
        errors.print(
            f"[bold red]error:[/] {escape(str(file))} is not a valid roles document:", highlight=False, soft_wrap=True
        )
        for mistake in problems:
            line = _line(mistake.path, located.lines)
            where = f"{file}:{line}: " if line is not None else ""
            errors.print(f"  {where}{mistake}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    return document


def _parse(file: Path, text: str) -> Any:
    if file.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as problem:
            fail(f"{file}:{problem.lineno}: not valid JSON ({problem.msg})")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        fail(f"{file}{line}: not valid YAML ({getattr(problem, 'problem', None) or problem})")


def _locate(text: str) -> _Located:
    """Lines of keys and items, read from the text's YAML node tree (JSON text is YAML too, nearly always: when it
    is not, problems are reported by path alone)."""
    located = _Located({}, [])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return located
    if root is not None:
        _walk(root, (), located)
    return located


def _walk(node: yaml.Node, path: tuple[str, ...], located: _Located) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                located.duplicates.append(Problem(child, "duplicate key: only the last would count"))
            seen.add(key)
            located.lines[child] = key_node.start_mark.line + 1  # the loaders keep the last of duplicates
            _walk(value_node, child, located)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, str(index))
            located.lines[child] = item.start_mark.line + 1
            _walk(item, child, located)


def _line(path: tuple[str | int, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    # A missing key has no line of its own: its parent's is the place to add it.
    written = tuple(map(str, path))
    while written:
        if written in lines:
            return lines[written]
        written = written[:-1]
    return None


# -- tenants and their servers ----------------------------------------------------------------------------------------


def _tenant_id(given: str | None, settings: Settings) -> str:
    tenant_id = given or settings.tenant
    try:
        return check_tenant_id(tenant_id)
    except ValueError as problem:
        fail(str(problem))


def _file_source(settings: Settings, tenant_id: str) -> str | None:
    """Which section of the configuration sets the tenant's roles, if one does (it wins over the stored document)."""
    if tenant_id == settings.tenant and "roles" in settings.model_fields_set:
        return "the configuration's roles: section"
    file_tenant = settings.tenants.get(tenant_id)
    if file_tenant is not None and file_tenant.roles is not None:
        return f"the configuration's tenants.{tenant_id}.roles section"
    return None


def _file_roles(settings: Settings, tenant_id: str) -> RolesDocument:
    roles = from_file(settings, tenant_id).roles
    assert roles is not None  # _file_source said so
    return roles


async def _server_names(database: Database, settings: Settings, tenant_id: str) -> set[str]:
    stored = await ServerRepository(database, tenant_id, load_master_key(settings.data_dir)).list()
    names = {server.name for server in stored}
    if tenant_id == settings.tenant:  # the configuration file's servers: belong to the default tenant
        names.update(server.name for server in configured_servers(settings))
    return names


def _warn(message: str) -> None:
    errors.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
