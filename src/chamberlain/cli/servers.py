"""`chamberlain servers`: the upstream MCP servers Chamberlain protects, each reachable at /mcp/{name}.

Secrets (a header's value, an OAuth client secret) are never taken as plain arguments, which would stay in the shell
history and the process list: they come from an environment variable (`--secret-env`) or standard input, or are
named in the vault (`--vault`, `--client-secret-vault`: SOURCE/NAME of a `chamberlain vault set` secret).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from pydantic import SecretStr, ValidationError
from rich.table import Table

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    console,
    fail,
    initialised_store,
    read_secret_from_stdin,
    record_admin_change,
    refuse_over_quota,
    run,
    settings_from,
)
from chamberlain.crypto.master_key import load_master_key
from chamberlain.dlp.levels import LevelName
from chamberlain.gateway.server_config import DEFAULT_SCOPES, ServerConfig
from chamberlain.oauth.errors import OAuthError
from chamberlain.oauth.scopes import parse_scope
from chamberlain.settings import Settings
from chamberlain.store.database import Database
from chamberlain.store.servers import Server, ServerRepository, check_server_name, configured_servers, merge_servers

app = typer.Typer(help="Manage the upstream MCP servers (protected resources).", no_args_is_help=True)

ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OAUTH_CREDENTIAL_OPTIONS = ("--client-credentials", "--token-exchange", "--refresh-token")


@dataclass(frozen=True)
class CredentialChoice:
    """The credential the options describe, without its secret, which is read only once everything else is valid."""

    option: str  # the option that chose it, for messages
    fields: dict[str, Any]
    secret_field: str | None  # None: no inline secret to read (it is in the vault, or a public client has none)
    secret_label: str  # what the prompt asks for


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Name; the server is reached at /mcp/NAME.")],
    url: Annotated[str | None, typer.Option("--url", help="Streamable HTTP server URL (http or https).")] = None,
    command: Annotated[
        str | None, typer.Option("--command", help='Stdio server to run, one shell-style string: "CMD ARGS".')
    ] = None,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="Scope a token needs (repeatable).")] = None,
    external: Annotated[
        bool, typer.Option("--external", help="The server sends data outside the company (DLP rules apply).")
    ] = False,
    external_tool: Annotated[
        list[str] | None,
        typer.Option("--external-tool", help="A tool of this server that sends data outside (repeatable)."),
    ] = None,
    classification: Annotated[
        LevelName | None,
        typer.Option("--classification", help="The least level of everything the server returns."),
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="K=V in a stdio server's environment (repeatable).")
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for the upstream.")] = None,
    max_message_bytes: Annotated[
        int | None, typer.Option("--max-message-bytes", help="Largest message accepted either way.")
    ] = None,
    header_credential: Annotated[
        str | None, typer.Option("--header-credential", help="Send a static secret in this header.")
    ] = None,
    client_credentials: Annotated[
        str | None,
        typer.Option("--client-credentials", metavar="TOKEN_ENDPOINT", help="Get OAuth client-credentials tokens."),
    ] = None,
    token_exchange: Annotated[
        str | None,
        typer.Option("--token-exchange", metavar="TOKEN_ENDPOINT", help="Exchange for per-user tokens (RFC 8693)."),
    ] = None,
    refresh_token: Annotated[
        str | None,
        typer.Option(
            "--refresh-token",
            metavar="TOKEN_ENDPOINT",
            help="Refresh access tokens from a refresh token in the vault (--vault; RFC 6749 §6). A client secret is "
            "optional: --client-secret-vault, or inline with --secret-env; none: a public client.",
        ),
    ] = None,
    vault: Annotated[
        str | None,
        typer.Option(
            "--vault",
            metavar="SOURCE/NAME",
            help="The vault secret holding the header's value (--header-credential) or the refresh token.",
        ),
    ] = None,
    client_secret_vault: Annotated[
        str | None,
        typer.Option(
            "--client-secret-vault", metavar="SOURCE/NAME", help="The vault secret holding the client secret."
        ),
    ] = None,
    per_user: Annotated[
        bool,
        typer.Option(
            "--per-user",
            help="--refresh-token: each user's own refresh token, the vault secret NAME.USER_ID bound to that user.",
        ),
    ] = False,
    client_id: Annotated[str | None, typer.Option("--client-id", help="OAuth client id at the upstream.")] = None,
    audience: Annotated[str | None, typer.Option("--audience", help="Token exchange audience.")] = None,
    resource: Annotated[str | None, typer.Option("--resource", help="RFC 8707 resource to ask tokens for.")] = None,
    token_scope: Annotated[
        str | None, typer.Option("--token-scope", help="Scope to ask the upstream's token endpoint for.")
    ] = None,
    secret_env: Annotated[
        str | None,
        typer.Option("--secret-env", metavar="VAR", help="Read the secret from this variable (else standard input)."),
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Register an upstream MCP server: --url for streamable HTTP, --command for stdio."""
    settings = settings_from(data_dir, config)
    try:
        check_server_name(name)
    except ValueError as problem:
        fail(str(problem))
    if name in settings.servers:
        fail(f"server {name!r} is defined in the configuration file: change it there")
    fields: dict[str, Any] = {
        **_transport_fields(url, command),
        "scopes": _scopes(scope),
        "external": external,
        "external_tools": tuple(external_tool or ()),
        "classification": classification,
        "env": _environment(env or [], stdio=command is not None),
    }
    if timeout is not None:
        fields["timeout"] = timeout
    if max_message_bytes is not None:
        fields["max_message_bytes"] = max_message_bytes
    credential = _credential(
        _Chosen(header_credential, client_credentials, token_exchange, refresh_token),
        _OAuth(client_id, audience, resource, token_scope),
        _VaultRefs(vault, client_secret_vault, per_user),
        inline_optional_secret=secret_env is not None,
    )
    if credential is None or credential.secret_field is None:
        if secret_env is not None:
            fail(
                "--secret-env applies only to --header-credential, --client-credentials, --token-exchange and "
                "--refresh-token, and not with --vault or --client-secret-vault"
            )
        if credential is not None:
            fields["credential"] = credential.fields
    else:
        # Every other mistake is reported before anyone is asked to type a secret.
        fields["credential"] = {**credential.fields, credential.secret_field: "pending"}
        _server_config(fields, credential)
        fields["credential"][credential.secret_field] = _read_secret(credential.secret_label, secret_env)
    server_config = _server_config(fields, credential)

    async def add_server() -> None:
        async with initialised_store(settings) as database:
            await refuse_over_quota(database, settings, settings.tenant, "servers")
            await record_admin_change(database, settings, target=f"server:{name}", after=_recordable(server_config))
            await _repository(database, settings).add(name, server_config)

    run(add_server())
    console.print(f"Added [bold]{name}[/] at {settings.public_url}/mcp/{name}")


@app.command("list")
def list_servers(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List the MCP servers, from the database and the configuration file."""
    settings = settings_from(data_dir, config)
    servers, overridden = run(_effective_servers(settings))
    table = Table("Name", "Transport", "Upstream", "External", "Scopes", "Source")
    for server in servers:
        transport, upstream = _transport(server)
        external = "yes" if server.config is not None and server.config.external else "no"
        table.add_row(server.name, transport, upstream, external, " ".join(server.scopes), _source(server))
    console.print(table)
    for server in overridden:
        console.print(f"{server.name!r} in the database is overridden by the configuration file.", markup=False)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Name of the server.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Show one MCP server's settings (secret values are shown only as "set")."""
    settings = settings_from(data_dir, config)
    servers, _ = run(_effective_servers(settings))
    server = next((server for server in servers if server.name == name), None)
    if server is None:
        fail(f"no server named {name!r}")
    rows = _description(server, settings)
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        console.print(f"{label + ':':<{width}}{value}", markup=False, highlight=False, soft_wrap=True)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Name of the server to remove.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Remove an MCP server registered in the database."""
    settings = settings_from(data_dir, config)

    async def remove_server() -> bool:
        async with initialised_store(settings) as database:
            repository = _repository(database, settings)
            existing = await repository.get(name)
            if existing is None or existing.config is None:
                return await repository.remove(name)
            await record_admin_change(database, settings, target=f"server:{name}", before=_recordable(existing.config))
            return await repository.remove(name)

    removed = run(remove_server())
    in_config = name in settings.servers
    if not removed:
        fail(
            f"server {name!r} is defined in the configuration file: remove it there"
            if in_config
            else f"no server named {name!r}"
        )
    console.print(f"Removed [bold]{name}[/] from the database.")
    if in_config:
        console.print(f"The configuration file still defines {name!r}.", markup=False)


def _repository(database: Database, settings: Settings) -> ServerRepository:
    return ServerRepository(database, settings.tenant, load_master_key(settings.data_dir))


async def _effective_servers(settings: Settings) -> tuple[list[Server], list[Server]]:
    async with initialised_store(settings) as database:
        stored = await _repository(database, settings).list()
    return merge_servers(configured_servers(settings), stored)


def _recordable(config: ServerConfig) -> dict[str, Any]:
    """The configuration as the audit log may keep it: secret values (SecretStr, the stdio environment) masked."""
    shown: dict[str, Any] = config.model_dump(mode="json")  # SecretStr fields dump as "**********"
    shown["env"] = {key: "**********" for key in config.env}
    return shown


def _transport_fields(url: str | None, command: str | None) -> dict[str, Any]:
    if url is not None and command is None:
        return {"url": _http_url("--url", url)}
    if command is None or url is not None:
        fail("give exactly one of --url (streamable HTTP) and --command (stdio)")
    try:
        argv = shlex.split(command)
    except ValueError as problem:
        fail(f"invalid --command: {problem}")
    if not argv:
        fail("invalid --command: it must name a program")
    return {"command": argv}


def _http_url(option: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"invalid {option} {value!r}: an absolute http:// or https:// URL is required")
    return value


def _scopes(given: list[str] | None) -> tuple[str, ...]:
    scopes = tuple(given or DEFAULT_SCOPES)
    try:
        parse_scope(" ".join(scopes))
    except OAuthError:
        fail(f"invalid --scope {' '.join(scopes)!r}: scopes are printable ASCII without spaces, quotes or backslashes")
    return scopes


def _environment(assignments: list[str], *, stdio: bool) -> dict[str, str]:
    if assignments and not stdio:
        fail("--env applies only to --command (stdio) servers")
    environment: dict[str, str] = {}
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals or not ENVIRONMENT_NAME.fullmatch(key):
            fail(f"invalid --env {key!r}: write NAME=VALUE, NAME made of letters, digits and '_'")
        if key in environment:
            fail(f"--env {key} is given twice")
        environment[key] = value
    return environment


@dataclass(frozen=True)
class _Chosen:
    header: str | None
    client_credentials: str | None
    token_exchange: str | None
    refresh_token: str | None


@dataclass(frozen=True)
class _OAuth:
    client_id: str | None
    audience: str | None
    resource: str | None
    token_scope: str | None


@dataclass(frozen=True)
class _VaultRefs:
    vault: str | None
    client_secret_vault: str | None
    per_user: bool


def _credential(
    given: _Chosen, oauth: _OAuth, refs: _VaultRefs, *, inline_optional_secret: bool
) -> CredentialChoice | None:
    """The credential the options describe. `inline_optional_secret`: --refresh-token reads an inline client secret
    (it may have none: a public client) only when --secret-env names one."""
    chosen = [
        option
        for option, value in (
            ("--header-credential", given.header),
            ("--client-credentials", given.client_credentials),
            ("--token-exchange", given.token_exchange),
            ("--refresh-token", given.refresh_token),
        )
        if value is not None
    ]
    if len(chosen) > 1:
        fail(f"give at most one credential, not {' and '.join(chosen)}")
    for option, value, applies in (
        ("--client-id", oauth.client_id, OAUTH_CREDENTIAL_OPTIONS),
        ("--resource", oauth.resource, OAUTH_CREDENTIAL_OPTIONS),
        ("--token-scope", oauth.token_scope, OAUTH_CREDENTIAL_OPTIONS),
        ("--audience", oauth.audience, ("--token-exchange",)),
        ("--vault", refs.vault, ("--header-credential", "--refresh-token")),
        ("--client-secret-vault", refs.client_secret_vault, OAUTH_CREDENTIAL_OPTIONS),
        ("--per-user", True if refs.per_user else None, ("--refresh-token",)),
    ):
        if value is not None and not set(chosen) & set(applies):
            fail(f"{option} applies only to {' and '.join(applies)}")
    if given.header is not None:
        fields: dict[str, Any] = {"type": "header", "header": given.header}
        if refs.vault is not None:
            return CredentialChoice("--header-credential", {**fields, "vault": refs.vault}, None, "")
        return CredentialChoice("--header-credential", fields, "value", f"value of the {given.header} header")
    endpoint = given.client_credentials or given.token_exchange or given.refresh_token
    if endpoint is None:
        return None
    option = chosen[0]
    if oauth.client_id is None:
        fail(f"{option} needs --client-id")
    kind = {
        "--client-credentials": "client_credentials",
        "--token-exchange": "token_exchange",
        "--refresh-token": "refresh_token",
    }[option]
    fields = {
        "type": kind,
        "token_endpoint": _http_url(option, endpoint),
        "client_id": oauth.client_id,
        "resource": oauth.resource,
        "scope": oauth.token_scope,
    }
    if oauth.audience is not None:
        fields["audience"] = oauth.audience
    if kind == "refresh_token":
        if refs.vault is None:
            fail("--refresh-token needs --vault SOURCE/NAME: the vault secret holding the refresh token")
        fields["vault"] = refs.vault
        fields["per_user"] = refs.per_user
    if refs.client_secret_vault is not None:
        return CredentialChoice(option, {**fields, "client_secret_vault": refs.client_secret_vault}, None, "")
    if kind == "refresh_token" and not inline_optional_secret:
        return CredentialChoice(option, fields, None, "")  # a public client (RFC 6749 §2.1)
    return CredentialChoice(option, fields, "client_secret", "client secret")


def _read_secret(label: str, variable: str | None) -> str:
    if variable is not None:
        value = os.environ.get(variable)
        if not value:
            fail(f"--secret-env: environment variable {variable} is not set or empty")
        return value
    if sys.stdin.isatty():
        value = typer.prompt(f"The {label} (not echoed)", hide_input=True)
    else:
        value = read_secret_from_stdin(label)
    if not value:
        fail(f"no {label} given on standard input")
    return value


def _server_config(fields: dict[str, Any], credential: CredentialChoice | None) -> ServerConfig:
    """Whatever the model still refuses (a bound, a header name) becomes one line naming the option."""
    try:
        return ServerConfig.model_validate(fields)
    except ValidationError as problem:
        error = problem.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "server"
        if field == "credential" and credential is not None:
            option = credential.option
            # Name the option a model field came from, when it is not the credential's own.
            for key, flag in (("vault", "--vault"), ("client_secret_vault", "--client-secret-vault")):
                if key in {str(part) for part in error["loc"]}:
                    option = flag
        else:
            option = {"scopes": "--scope", "server": "server"}.get(field, "--" + field.replace("_", "-"))
        fail(f"invalid {option}: {error['msg']}")


def _source(server: Server) -> str:
    return "configuration file" if server.source == "config" else "database"


def _transport(server: Server) -> tuple[str, str]:
    config = server.config
    if config is None:
        return "built-in", "(built-in demo)"
    if config.command is not None:
        return "command", shlex.join(config.command)
    return "url", str(config.url)


def _description(server: Server, settings: Settings) -> list[tuple[str, str]]:
    transport, upstream = _transport(server)
    rows = [
        ("name", server.name),
        ("resource", f"{settings.public_url}/mcp/{server.name}"),
        ("source", _source(server)),
        ("transport", transport),
        ("upstream", upstream),
        ("scopes", " ".join(server.scopes)),
    ]
    config = server.config
    if config is None:
        return rows
    rows += [(f"env {key}", "set") for key in sorted(config.env)]  # often an API token: never printed
    rows += [
        ("external", "yes" if config.external else "no"),
        ("external tools", ", ".join(config.external_tools) or "none"),
        ("classification", config.classification or "not declared"),
        ("timeout", f"{config.timeout:g} s"),
        ("max message bytes", str(config.max_message_bytes)),
    ]
    credential = config.credential
    for field_name in type(credential).model_fields:
        value = getattr(credential, field_name)
        if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
            continue  # not set (an inline secret not given is empty: the credential names a vault secret)
        label = "credential" if field_name == "type" else f"credential {field_name.replace('_', ' ')}"
        rows.append((label, "set" if isinstance(value, SecretStr) else str(value)))
    return rows
