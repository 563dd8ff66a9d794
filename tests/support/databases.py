"""Migrated databases for tests that work on the store directly (no gateway): one per module and backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from chamberlain.store.database import Database, create_database, migrate
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
