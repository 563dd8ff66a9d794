"""What every command shares: the --data-dir option, loading settings, opening the store, reporting mistakes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from chamberlain.crypto.master_key import MasterKeyError
from chamberlain.settings import Settings, SettingsError, load_settings
from chamberlain.state import NotInitialised
from chamberlain.store.database import Database, create_database, pending_migrations
from chamberlain.store.errors import AlreadyExists

console = Console()
errors = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="CHAMBERLAIN_DATA_DIR",
        help="Where the store, keys and chamberlain.yaml live [default: ./.chamberlain].",
        show_default=False,
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CHAMBERLAIN_CONFIG",
        help="Configuration file [default: DATA_DIR/chamberlain.yaml].",
    ),
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


def read_secret_from_stdin(what: str) -> str:
    if sys.stdin.isatty():
        errors.print(f"Enter the {what}, then press Ctrl-D:")
    value = sys.stdin.read()
    # One trailing newline is what `echo` and here-strings add; anything else is part of the secret.
    return value[:-1] if value.endswith("\n") else value
