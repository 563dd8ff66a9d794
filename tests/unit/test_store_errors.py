"""The one rule deciding "the store is unavailable" (503 and retry) against everything else (500, a bug)."""

from __future__ import annotations

import logging
import sqlite3

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import exc as sa
from sqlalchemy import text

from chamberlain.store.database import create_database
from chamberlain.store.errors import RETRY_DELAYS, WriteFailures, store_unavailable
from tests.support.server import free_port


def dbapi_error(cls: type[sa.DBAPIError], orig: BaseException, *, invalidated: bool = False) -> sa.DBAPIError:
    return cls("SELECT 1", None, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


async def test_a_postgresql_nobody_listens_on_is_unavailable() -> None:
    database = create_database(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        with pytest.raises(OSError, match="Connect call failed") as raised:  # asyncpg's connect is not wrapped
            async with database.connect() as connection:
                await connection.scalar(text("SELECT 1"))
    finally:
        await database.dispose()
    assert store_unavailable(raised.value)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
        dbapi_error(sa.DBAPIError, Exception("closed"), invalidated=True),
        dbapi_error(sa.OperationalError, Exception("server closed the connection")),
        dbapi_error(sa.InterfaceError, Exception("connection is closed")),
        sa.TimeoutError("QueuePool limit reached"),
        sqlite3.OperationalError("database is locked"),
    ],
    ids=repr,
)
def test_connection_failures_are_unavailable(error: BaseException) -> None:
    assert store_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        dbapi_error(sa.IntegrityError, Exception("duplicate key")),
        dbapi_error(sa.ProgrammingError, Exception("syntax error")),
        dbapi_error(sa.DataError, Exception("invalid input syntax")),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedTableError("relation does not exist"),
        ValueError("a bug"),
        KeyError("tenant"),
        FileNotFoundError("master.key"),  # an OSError, but not a connection's
        RuntimeError("anything else"),
    ],
    ids=repr,
)
def test_refusals_and_bugs_are_not_unavailable(error: BaseException) -> None:
    assert not store_unavailable(error)


def test_the_cause_of_a_wrapping_error_counts() -> None:
    wrapped = RuntimeError("while refreshing")
    wrapped.__cause__ = ConnectionRefusedError(111, "refused")
    assert store_unavailable(wrapped)
    assert not store_unavailable(RuntimeError("while refreshing"))


def test_a_cyclic_chain_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert not store_unavailable(first)


def test_an_outage_is_logged_when_it_begins_and_ends_not_at_every_retry(caplog: pytest.LogCaptureFixture) -> None:
    failures = WriteFailures(logging.getLogger("test.writer"), "things")
    with caplog.at_level(logging.WARNING, logger="test.writer"):
        delays = [failures.failed(10, ConnectionRefusedError(111, "postgresql://user:secret@db/x")) for _ in range(6)]
        failures.succeeded()
        failures.succeeded()
    assert delays == [*RETRY_DELAYS, RETRY_DELAYS[-1], RETRY_DELAYS[-1]]  # backs off, then holds at the longest
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "could not write 10 things (the store is unavailable: ConnectionRefusedError); kept and retried",
        "things written again after 6 failed attempts",
    ]
    assert "secret" not in caplog.text


def test_a_different_failure_during_an_outage_is_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    failures = WriteFailures(logging.getLogger("test.writer"), "things")
    with caplog.at_level(logging.WARNING, logger="test.writer"):
        failures.failed(1, ConnectionRefusedError())
        failures.failed(1, dbapi_error(sa.IntegrityError, Exception("duplicate")))
    assert [record.getMessage() for record in caplog.records][-1].endswith(
        "(the store refused them: IntegrityError); kept and retried"
    )
    assert not failures.given_up
