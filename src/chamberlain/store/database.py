"""The store's connections, and schema migrations (Alembic) run in-process.

Two backends behind one small interface (`Database.begin()` / `Database.connect()` yielding a `Connection`):
- PostgreSQL through asyncpg, fully asynchronous: the multi-replica deployment.
- SQLite, embedded and executed inline on the event loop's thread. A SQLite statement on a local WAL database
  takes microseconds; handing each one to a worker thread (aiosqlite) costs several times that in thread hops
  and wake-ups (measured: 2.6 ms against 0.4 ms of CPU per refresh-token rotation). Writers in this process are
  serialised by an asyncio lock, so a transaction that awaits can never wait on SQLite's own lock held by a
  sibling coroutine; another process (the CLI) holding the lock briefly blocks the loop for that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import CursorResult, Engine, Executable, ScalarResult, Table, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine.url import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")
Parameters = Mapping[str, Any] | None
ExecuteParameters = Parameters | Sequence[Mapping[str, Any]]  # a list of rows: executemany
_CONNECT_TIMEOUT = 5.0  # seconds for a new PostgreSQL connection (TCP and startup)
_POOL_TIMEOUT = 10.0  # seconds a request waits for a pooled connection before failing as "store unavailable"


class Connection(Protocol):
    """What repositories use: SQLAlchemy's execute, scalar and scalars, awaited."""

    async def execute(self, statement: Executable, parameters: ExecuteParameters = None) -> CursorResult[Any]: ...

    async def scalar(self, statement: Executable, parameters: Parameters = None) -> Any: ...

    async def scalars(self, statement: Executable, parameters: Parameters = None) -> ScalarResult[Any]: ...

    async def exec_driver_sql(self, statement: str, parameters: Sequence[tuple[Any, ...]]) -> Any: ...

    async def get_raw_connection(self) -> Any: ...


class Database(Protocol):
    url: URL

    def begin(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A transaction: committed when the block ends normally, rolled back when it raises."""
        ...

    def connect(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A connection for reads."""
        ...

    async def run_sync(self, work: Callable[[SyncConnection], T]) -> T:
        """Runs `work` with a synchronous connection inside a transaction (Alembic needs one)."""
        ...

    async def dispose(self) -> None: ...


class _PostgresDatabase:
    def __init__(self, url: URL) -> None:
        self.url = url
        # No pre-ping: it is one more round trip on every checkout. A connection that died (a PostgreSQL restart)
        # fails its request once (503, store/errors.py) and SQLAlchemy then invalidates the whole pool, so the
        # next checkouts connect afresh: service resumes by itself when the server is back. A connection attempt
        # gives up after `_CONNECT_TIMEOUT` (asyncpg waits 60 s by default), so an unreachable host holds a request
        # seconds, not a minute; `pool_timeout` bounds the wait for a free connection likewise.
        self._engine: AsyncEngine = create_async_engine(
            url,
            pool_size=10,
            max_overflow=20,
            pool_pre_ping=False,
            pool_recycle=1800,
            pool_timeout=_POOL_TIMEOUT,
            connect_args={"timeout": _CONNECT_TIMEOUT},
        )

    def begin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._engine.begin()

    def connect(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._engine.connect()

    async def run_sync(self, work: Callable[[SyncConnection], T]) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def dispose(self) -> None:
        await self._engine.dispose()


class _InlineConnection:
    def __init__(self, connection: SyncConnection) -> None:
        self._connection = connection

    async def execute(self, statement: Executable, parameters: ExecuteParameters = None) -> CursorResult[Any]:
        return self._connection.execute(statement, parameters)

    async def scalar(self, statement: Executable, parameters: Parameters = None) -> Any:
        return self._connection.scalar(statement, parameters)

    async def scalars(self, statement: Executable, parameters: Parameters = None) -> ScalarResult[Any]:
        return self._connection.scalars(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Sequence[tuple[Any, ...]]) -> Any:
        return self._connection.exec_driver_sql(statement, parameters)

    async def get_raw_connection(self) -> Any:
        return self._connection.connection


class _SqliteDatabase:
    def __init__(self, url: URL) -> None:
        self.url = url
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        self._engine: Engine = create_sync_engine(url, connect_args={"timeout": 30})
        event.listen(self._engine, "connect", _tune_sqlite)
        self._write_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        async with self._write_lock:
            with self._engine.begin() as connection:
                yield _InlineConnection(connection)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        with self._engine.connect() as connection:
            yield _InlineConnection(connection)

    async def run_sync(self, work: Callable[[SyncConnection], T]) -> T:
        async with self._write_lock:
            with self._engine.begin() as connection:
                return work(connection)

    async def dispose(self) -> None:
        self._engine.dispose()


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while a writer commits; NORMAL sync is durable across application crashes in WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_database(url: str) -> Database:
    """`sqlite:///PATH` (or `sqlite+aiosqlite://`) or `postgresql://…` (or `postgresql+asyncpg://…`)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _SqliteDatabase(parsed.set(drivername="sqlite"))
    if backend == "postgresql":
        return _PostgresDatabase(parsed.set(drivername="postgresql+asyncpg"))
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://…")


def alembic_config(connection: SyncConnection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def migrate(database: Database) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    await database.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))


async def current_revision(database: Database) -> str | None:
    """The schema revision the database is at; None for a database Chamberlain never initialised."""
    return await database.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def pending_migrations(database: Database) -> bool:
    """True when the database is behind the code's newest revision (or not initialised at all)."""

    def check(sync: SyncConnection) -> bool:
        script = ScriptDirectory.from_config(alembic_config(sync))
        return MigrationContext.configure(sync).get_current_revision() != script.get_current_head()

    return await database.run_sync(check)


async def insert_rows(connection: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Appends rows (values in the table's column order) with the bare driver: COPY on PostgreSQL, executemany on
    SQLite, inside the caller's transaction.

    For append-only tables on a hot path: SQLAlchemy's per-value type processing costs more than the insert itself
    (measured on the audit log: 14 µs a row through insert(), 9 through the driver), and PostgreSQL's COPY costs
    the server a fraction of row-by-row INSERTs. Values must be what the driver takes as they are: str, int, float,
    bytes, None.
    """
    columns = [column.name for column in table.columns]
    if isinstance(connection, AsyncConnection):
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection  # asyncpg.Connection
        try:
            await driver.copy_records_to_table(table.name, records=rows, columns=columns)
        except Exception as problem:
            # SQLSTATE class 23, integrity constraint violation: raised as SQLAlchemy raises it for its own statements
            # (and on SQLite here), so callers handle one exception: the audit log's second writer of a chain
            # position re-reads the head and retries.
            if str(getattr(problem, "sqlstate", "")).startswith("23"):
                raise IntegrityError(f"COPY {table.name}", None, problem) from None
            raise
        return
    placeholders = ", ".join("?" for _ in columns)
    statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608 - schema names
    await connection.exec_driver_sql(statement, rows)


async def fetch_rows(connection: Connection, statement: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Runs a read with the bare driver and returns plain tuples: for bulk reads where building SQLAlchemy rows
    costs more than the read (the audit verifier reads every record). `statement` uses `?` placeholders."""
    raw = await connection.get_raw_connection()
    if isinstance(connection, AsyncConnection):  # asyncpg: $1, $2, ... and Records, which index like tuples
        return list(await raw.driver_connection.fetch(_numbered(statement), *parameters))
    cursor = raw.driver_connection.execute(statement, parameters)
    try:
        return list(cursor.fetchall())
    finally:
        cursor.close()


class RawReader(Protocol):
    """A bare-driver connection for bulk reads in a worker process: no SQLAlchemy engine to start (on PostgreSQL
    its first connection runs several introspection queries), plain tuples back. `?` placeholders."""

    async def fetch(self, statement: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...

    async def close(self) -> None: ...


async def open_raw_reader(url: str) -> RawReader:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # Imported here: only readers of PostgreSQL need it (SQLAlchemy loads it for the engine otherwise).
        import asyncpg  # type: ignore[import-untyped]

        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return _AsyncpgReader(await asyncpg.connect(dsn))
    return _SqliteReader(sqlite3.connect(f"file:{parsed.database}?mode=ro", uri=True))


class _AsyncpgReader:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def fetch(self, statement: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return list(await self._connection.fetch(_numbered(statement), *parameters))

    async def close(self) -> None:
        await self._connection.close()


class _SqliteReader:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def fetch(self, statement: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._connection.execute(statement, parameters).fetchall()

    async def close(self) -> None:
        self._connection.close()


def _numbered(statement: str) -> str:
    """`?` placeholders (sqlite3's qmark style) as asyncpg's `$1`, `$2`, ..."""
    parts = statement.split("?")
    return parts[0] + "".join(f"${number}{part}" for number, part in enumerate(parts[1:], start=1))
