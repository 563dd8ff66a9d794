"""The `chamberlain` command."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from chamberlain.cli import audit, clients, keys, roles, servers, sessions, tenants, users, vault
from chamberlain.cli.compliance import compliance_report, security_scan
from chamberlain.cli.init import init
from chamberlain.cli.migrate import migrate
from chamberlain.cli.serve import serve



class _Commands(TyperGroup):
    """The root command group. Click's usage error for a surplus argument quotes the argument, which is how a secret
    typed on the command line (`vault set SOURCE NAME <secret>`) would reach the terminal, a CI log or a support
    ticket: that error is reported without it."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as error:
            # Click's UsageError (vendored by Typer, so matched by its message, which Click has kept for years).
            message = getattr(error, "message", None)
            if isinstance(message, str) and message.startswith("Got unexpected extra argument"):
                error.message = (  # type: ignore[attr-defined]
                    "unexpected extra argument (not shown: values such as secrets are never taken on the command"
                    " line; see --help for --from-stdin and --from-file)"
                )
            raise


app = typer.Typer(
    name="chamberlain",
    cls=_Commands,
    help="Chamberlain: identity, OAuth 2.1 and policy for Claude Code and MCP servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(init)
app.command()(serve)
app.command()(migrate)
app.add_typer(users.app, name="users")
app.add_typer(servers.app, name="servers")
app.add_typer(roles.app, name="roles")
app.add_typer(sessions.app, name="sessions")
app.add_typer(tenants.app, name="tenants")
app.add_typer(clients.app, name="clients")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(vault.app, name="vault")
app.command("compliance-report")(compliance_report)
app.command("security-scan")(security_scan)


def main() -> None:
    app()
