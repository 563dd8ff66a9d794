"""The `chamberlain` executable. The desktop commands (login, logout, token) run without loading the server's
modules: `chamberlain token` is Claude Code's apiKeyHelper, started again every few minutes and before a session's
first request, and importing the whole CLI (cli.main) costs it several times as long. Every other command goes to
cli.main, which offers the desktop commands too."""

from __future__ import annotations

import sys

DESKTOP_COMMANDS = ("login", "logout", "token")


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in DESKTOP_COMMANDS:
        import typer

        from chamberlain.cli import login
        from chamberlain.cli.group import Commands

        app = typer.Typer(name="chamberlain", cls=Commands, add_completion=False, pretty_exceptions_enable=False)
        for command in DESKTOP_COMMANDS:
            app.command()(getattr(login, command))
        app(prog_name="chamberlain")
        return
    from chamberlain.cli.main import main as everything

    everything()
