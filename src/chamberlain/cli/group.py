"""The root command group of `chamberlain`, apart from the commands so that the light desktop entry point
(cli/entry.py) uses it without importing the server."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


class Commands(TyperGroup):
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
