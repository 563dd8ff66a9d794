"""Writers that must not interleave (replicas, the CLI) take a transaction-scoped lock named after what they change.

PostgreSQL: `pg_advisory_xact_lock` on a signed 64-bit key derived from the name (SHA-256), released when the
transaction ends, so a crash never leaves it held. Two names that collide only serialise two unrelated writers.
SQLite needs nothing: it has one writer at a time (its database lock, taken at the first write).
"""

from __future__ import annotations

import hashlib

from sqlalchemy import BigInteger, bindparam, func, select

from chamberlain.store.database import Connection, Database


def lock_key(*name: str) -> int:
    """The advisory lock key of a name given in parts (joined with NUL, so ("a", "bc") differs from ("ab", "c"))."""
    digest = hashlib.sha256("\x00".join(name).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def lock_for_transaction(database: Database, connection: Connection, *name: str) -> None:
    """Waits for, then holds until the transaction ends, the lock of `name` (PostgreSQL; a no-op on SQLite)."""
    if database.url.get_backend_name() == "postgresql":
        await connection.execute(
            select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger))), {"key": lock_key(*name)}
        )
