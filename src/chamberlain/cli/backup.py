"""`chamberlain backup` and `chamberlain restore`: the whole store in one encrypted file, and back."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import DBAPIError

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    console,
    fail,
    read_secret_from_stdin,
    record_admin_change,
    reported_errors,
    run,
    settings_from,
)
from chamberlain.crypto.master_key import MasterKey, load_master_key
from chamberlain.settings import Settings
from chamberlain.store.backup import (
    BackupError,
    BackupHeader,
    KeySource,
    MasterKeySource,
    PassphraseSource,
    Restored,
    dump,
)
from chamberlain.store.backup import restore as restore_store
from chamberlain.store.database import create_database

T = TypeVar("T")

File = Annotated[Path, typer.Argument(help="The backup file.", show_default=False)]
PassphraseStdin = Annotated[
    bool,
    typer.Option(
        "--passphrase-stdin",
        help="Encrypt under a passphrase read from standard input (scrypt) instead of the master key.",
    ),
]


def backup(
    file: File,
    passphrase_stdin: PassphraseStdin = False,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Write every table of the store, from one consistent snapshot, to an encrypted file (mode 0600)."""
    settings = settings_from(data_dir, config)
    source: KeySource = (
        PassphraseSource(read_secret_from_stdin("passphrase"))
        if passphrase_stdin
        else MasterKeySource(_master(settings))
    )

    async def write() -> BackupHeader:
        # Not initialised_store(): a store behind the code's schema is what one backs up before `chamberlain migrate`.
        database = create_database(settings.effective_database_url)
        try:
            return await dump(database, file, source, force=force)
        finally:
            await database.dispose()

    header = _run(write())
    console.print(
        f"Backed up {header.rows} rows of {len(header.tables)} tables (schema revision {header.revision}) to {file}.",
        highlight=False,
    )
    if not passphrase_stdin:
        console.print("It is encrypted under the master key: keep a copy of the key apart from the backup.")


def restore(
    file: File,
    passphrase_stdin: Annotated[
        bool,
        typer.Option("--passphrase-stdin", help="The backup was encrypted under a passphrase: read it from stdin."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the rows of a store that is not empty (all of them).")
    ] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Replace the store's contents with a backup's, in one transaction, and migrate them if the backup is older.

    Stop every Chamberlain process that uses the store first: they keep keys and audit chain heads in memory."""
    settings = settings_from(data_dir, config)
    # Loaded whichever key opens the file: the restore is recorded in the audit log, which needs it, and finding it
    # missing after the store was replaced would be too late.
    _master(settings)
    source = _key_source(settings, passphrase_stdin)

    async def apply() -> Restored:
        database = create_database(settings.effective_database_url)
        try:
            restored = await restore_store(database, file, source, force=force)
            header = restored.header
            # Recorded after the restore, which replaces the audit log itself: so the event is the newest record
            # of the restored chain instead of one the restore deleted.
            await record_admin_change(
                database,
                settings,
                target="store",
                after={
                    "restored_from": str(file),
                    "backup_created_at": header.created_at,
                    "backup_revision": header.revision,
                    "rows": header.rows,
                    "replaced_existing_rows": restored.replaced,
                },
            )
            return restored
        finally:
            await database.dispose()

    restored = _run(apply())
    header = restored.header
    console.print(
        f"Restored {header.rows} rows of {len(header.tables)} tables from {file} "
        f"(made {header.created_at} at schema revision {header.revision}).",
        highlight=False,
    )
    if restored.upgraded_to is not None:
        console.print(f"Migrated the restored store to schema revision {restored.upgraded_to}.", highlight=False)


def _key_source(settings: Settings, passphrase_stdin: bool) -> KeySource:
    if passphrase_stdin:
        return PassphraseSource(read_secret_from_stdin("passphrase"))
    return MasterKeySource(_master(settings))


def _master(settings: Settings) -> MasterKey:
    with reported_errors():
        return load_master_key(settings.data_dir)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return run(coroutine)
    except BackupError as problem:
        fail(str(problem))
    except DBAPIError as problem:
        # Both commands run in one transaction, rolled back whole when it fails: the database's own first line.
        reason = str(problem.orig).strip().splitlines()[0] if str(problem.orig).strip() else type(problem).__name__
        fail(f"the database refused it (nothing was changed): {reason}")
