"""Throwaway PostgreSQL databases for tests and benchmarks: created fresh, dropped with FORCE afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def temporary_database(admin_url: str, name: str) -> Iterator[None]:
    """CREATE DATABASE `name` through `admin_url` (a plain postgresql:// URL to an existing database); DROP it
    when the block ends, whatever happened inside."""
    import asyncpg  # only needed when PostgreSQL runs

    async def execute(sql: str) -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
