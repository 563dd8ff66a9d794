"""Migrated databases for tests that work on the store directly (no gateway): one per module and backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from chamberlain.store.database import Database, create_database, migrate
from chamberlain.store.schema import metadata
from tests.conftest import require_postgres
from tests.support.server import postgres_database


async def migrate_url(url: str) -> None:
    """Creates the schema at `url` (a new database)."""
    database = create_database(url)
    try:
        await migrate(database)
    finally:
        await database.dispose()


def migrated_database_url(backend: str, tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[str]:
    """For a module-scoped fixture parametrised over "sqlite" and "postgresql": a fresh, migrated database's URL
    (PostgreSQL's dropped afterwards; skipped when unreachable outside CI)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp(name) / 'chamberlain.db'}"
        asyncio.run(migrate_url(url))
        yield url
        return
    require_postgres()
    with postgres_database() as url:
        asyncio.run(migrate_url(url))
        yield url


@contextlib.asynccontextmanager
async def opened_database(url: str) -> AsyncIterator[Database]:
    database = create_database(url)
    try:
        yield database
    finally:
        await database.dispose()


def migrated_url_fixture(name: str) -> Callable[..., Iterator[str]]:
    """A module's `url` fixture: `url = migrated_url_fixture("scim-store")` gives each test of the module the URL of
    a migrated database, once per backend (see migrated_database_url)."""

    @pytest.fixture(scope="module", params=["sqlite", "postgresql"])
    def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        yield from migrated_database_url(request.param, tmp_path_factory, name)

    return url


async def schema_differences(url: str, tables: Collection[str]) -> list[Any]:
    """What the migrated database at `url` has otherwise than schema.py declares, for these tables."""
    async with opened_database(url) as database:

        def differences(sync: Any) -> list[Any]:
            found = compare_metadata(MigrationContext.configure(sync), metadata)
            return [difference for difference in found if any(table in repr(difference) for table in tables)]

        return list(await database.run_sync(differences))
