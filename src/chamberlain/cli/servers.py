"""`chamberlain servers`: the MCP servers Chamberlain protects, each reachable at /mcp/{name}."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.table import Table

from chamberlain.cli.common import ConfigFile, DataDir, console, fail, initialised_store, run, settings_from
from chamberlain.oauth.errors import OAuthError
from chamberlain.oauth.scopes import parse_scope
from chamberlain.store.servers import ServerRepository

app = typer.Typer(help="Manage the MCP servers (protected resources).", no_args_is_help=True)

# The name becomes a URL path segment and part of every token's audience: keep it plain.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Name; the server is reached at /mcp/NAME.")],
    url: Annotated[str, typer.Option("--url", help="Upstream MCP server URL (http or https).")],
    scope: Annotated[list[str] | None, typer.Option("--scope", help="Scope a token needs (repeatable).")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Register an MCP server."""
    settings = settings_from(data_dir, config)
    if not NAME.fullmatch(name):
        fail(f"invalid server name {name!r}: use 1-63 of a-z, 0-9, '-' and '_', starting with a letter or digit")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"invalid --url {url!r}: an absolute http:// or https:// URL is required")
    scopes = tuple(scope or ["mcp:tools"])
    try:
        parse_scope(" ".join(scopes))
    except OAuthError:
        fail(f"invalid --scope {' '.join(scopes)!r}: scopes are printable ASCII without spaces, quotes or backslashes")

    async def add_server() -> None:
        async with initialised_store(settings) as database:
            await ServerRepository(database, settings.tenant).add(name, url, scopes)

    run(add_server())
    console.print(f"Added [bold]{name}[/] at {settings.public_url}/mcp/{name}")


@app.command("list")
def list_servers(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """List the registered MCP servers."""
    settings = settings_from(data_dir, config)

    async def fetch() -> list[tuple[str, str, str, str]]:
        async with initialised_store(settings) as database:
            return [
                (
                    server.name,
                    f"{settings.public_url}/mcp/{server.name}",
                    server.url or "(built-in demo)",
                    " ".join(server.scopes),
                )
                for server in await ServerRepository(database, settings.tenant).list()
            ]

    table = Table("Name", "Resource", "Upstream", "Scopes")
    for row in run(fetch()):
        table.add_row(*row)
    console.print(table)


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Name of the server to remove.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Remove an MCP server."""
    settings = settings_from(data_dir, config)

    async def remove_server() -> bool:
        async with initialised_store(settings) as database:
            return await ServerRepository(database, settings.tenant).remove(name)

    if not run(remove_server()):
        fail(f"no server named {name!r}")
    console.print(f"Removed [bold]{name}[/].")
