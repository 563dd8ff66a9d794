"""The `chamberlain` command."""

from __future__ import annotations

import typer

from chamberlain.cli import (
    audit,
    clients,
    config,
    cost,
    dlp,
    keys,
    llm,
    roles,
    scim,
    servers,
    sessions,
    sso,
    tenants,
    users,
    vault,
)
from chamberlain.cli.backup import backup, restore
from chamberlain.cli.compliance import compliance_report, security_scan
from chamberlain.cli.group import Commands
from chamberlain.cli.init import init
from chamberlain.cli.login import login, logout, token
from chamberlain.cli.migrate import migrate
from chamberlain.cli.serve import serve

app = typer.Typer(
    name="chamberlain",
    cls=Commands,
    help="Chamberlain: identity, OAuth 2.1 and policy for Claude Code and MCP servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(init)
app.command()(serve)
app.command()(migrate)
app.command()(backup)
app.command()(restore)
app.add_typer(users.app, name="users")
app.add_typer(servers.app, name="servers")
app.add_typer(roles.app, name="roles")
app.add_typer(sessions.app, name="sessions")
app.add_typer(tenants.app, name="tenants")
app.add_typer(clients.app, name="clients")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(vault.app, name="vault")
app.add_typer(dlp.app, name="dlp")
app.add_typer(cost.app, name="cost")
app.add_typer(llm.app, name="llm")
app.add_typer(sso.app, name="sso")
app.add_typer(config.app, name="config")
app.add_typer(scim.app, name="scim")
app.command("compliance-report")(compliance_report)
app.command("security-scan")(security_scan)
app.command()(login)
app.command()(token)
app.command()(logout)


def main() -> None:
    app()
