"""Errors the repositories raise for callers to turn into user-facing messages, and the one rule deciding that a
failure means "the store is unavailable" (so every surface answers 503 with Retry-After, never 500).

What a PostgreSQL outage looks like through SQLAlchemy and asyncpg (checked against a stopped cluster): the pooled
connections that died surface once as `DBAPIError` with `connection_invalidated` set (asyncpg's
ConnectionDoesNotExistError / AdminShutdownError inside), and SQLAlchemy then drops the pool's other stale
connections; new connections fail with the bare `ConnectionRefusedError` (an OSError: asyncpg's connect is not
wrapped), `TimeoutError`, or asyncpg's "cannot connect now" while the server starts or stops (SQLSTATE 57P03).
SQLite's "database is locked" after its busy timeout is an `OperationalError` too: the store is busy, not broken.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

from sqlalchemy import exc as sa

RETRY_AFTER_SECONDS: Final = 5  # what a 503 for a store outage tells clients (Retry-After, RFC 9110 §10.2.3)

# SQLSTATE classes and codes meaning "no usable connection" (PostgreSQL appendix A): 08 connection exception,
# 57P01-57P03 admin/crash shutdown and cannot-connect-now, 53300 too many connections.
_UNAVAILABLE_SQLSTATES: Final = ("08", "57P01", "57P02", "57P03", "53300")
_MAX_DEPTH: Final = 8  # exception chains are short; a bound keeps a cyclic chain from looping


class AlreadyExists(Exception):
    """A row with the same natural key (user name, server name, ...) exists in this tenant."""


def store_unavailable(error: BaseException) -> bool:
    """True when `error` (or what caused it) says the store cannot be reached or used right now: a request needing
    it should fail with 503 and be retried, and queued writers should keep their work and try again. False for
    everything else (constraint violations, bad SQL, bugs), which stay errors."""
    seen: BaseException | None = error
    for _ in range(_MAX_DEPTH):
        if seen is None:
            return False
        if _unavailable(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _unavailable(error: BaseException) -> bool:
    if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa.IntegrityError | sa.ProgrammingError | sa.DataError):
        return False  # the statement was refused: the store answered
    if isinstance(error, sa.OperationalError | sa.InterfaceError | sa.DisconnectionError | sa.TimeoutError):
        return True  # TimeoutError here is the pool's: every connection busy for pool_timeout seconds
    if isinstance(error, ConnectionError | TimeoutError):  # refused, reset, aborted; asyncpg's connect timeout
        return True
    if isinstance(error, sqlite3.OperationalError):
        return True
    return _asyncpg_unavailable(error)


def _asyncpg_unavailable(error: BaseException) -> bool:
    module = type(error).__module__
    if not module.startswith("asyncpg"):
        return False
    # asyncpg's InterfaceError ("connection is closed", "another operation is in progress" after a drop) and its
    # connection-class errors; checked by name and SQLSTATE so that this module needs no asyncpg import (SQLite-only
    # installs do not load it).
    if type(error).__name__ in ("InterfaceError", "ConnectionDoesNotExistError", "ConnectionFailureError"):
        return True
    sqlstate = str(getattr(error, "sqlstate", "") or "")
    return any(sqlstate.startswith(code) for code in _UNAVAILABLE_SQLSTATES)


# Background writers' back-off between attempts, in seconds: quick for a blip, then every 5 s while the store is out.
RETRY_DELAYS: Final = (0.05, 0.2, 1.0, 5.0)


class WriteFailures:
    """A background writer's failed attempts (the audit log's, the usage recorder's): its back-off, and one log
    line when writes start failing and one when they succeed again, not one per retry through a long outage."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self.count = 0  # consecutive failed attempts
        self._kind = ""

    def failed(self, pending: int, problem: BaseException) -> float:
        """Records a failed attempt with `pending` items kept for the next; returns the seconds to wait."""
        self.count += 1
        kind = type(problem).__name__  # never the message: it may hold a URL with a password
        if self.count == 1 or kind != self._kind:
            cause = "the store is unavailable" if store_unavailable(problem) else "the store refused them"
            self._logger.error("could not write %d %s (%s: %s); kept and retried", pending, self._what, cause, kind)
        self._kind = kind
        return RETRY_DELAYS[min(self.count, len(RETRY_DELAYS)) - 1]

    def succeeded(self) -> None:
        if self.count:
            self._logger.warning("%s written again after %d failed attempts", self._what, self.count)
        self.count = 0
        self._kind = ""

    @property
    def given_up(self) -> bool:
        """While closing: enough attempts made (the whole back-off once) to stop waiting for the store."""
        return self.count >= len(RETRY_DELAYS)
