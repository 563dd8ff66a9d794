"""`chamberlain migrate`: bring an existing store's schema up to date."""

from __future__ import annotations

from chamberlain.cli.common import ConfigFile, DataDir, console, run, settings_from
from chamberlain.store.database import create_database
from chamberlain.store.database import migrate as migrate_schema


def migrate(data_dir: DataDir = None, config: ConfigFile = None) -> None:
    """Apply pending schema migrations."""
    settings = settings_from(data_dir, config)

    async def apply() -> None:
        database = create_database(settings.effective_database_url)
        try:
            await migrate_schema(database)
        finally:
            await database.dispose()

    run(apply())
    console.print("The store is at the newest schema.")
