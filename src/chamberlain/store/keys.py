"""Signing keys at rest (private halves encrypted under the master key).

Exactly one key signs (retired_at NULL). Rotations may run at once (two replicas, a replica and the CLI, two
`chamberlain init` on a fresh store), so `rotate` serialises them: on PostgreSQL, under READ COMMITTED, two
rotations would otherwise each retire the old key, neither would see the other's new one, and both new keys would
sign; a transaction-scoped advisory lock makes the second wait and then retire the first's key. SQLite has one
writer at a time (its database lock, taken at the first write), which serialises them already.
"""

from __future__ import annotations

import time

from sqlalchemy import Row, or_, select, update

from chamberlain.crypto.signing_keys import GeneratedKey
from chamberlain.store.database import Database
from chamberlain.store.locks import lock_for_transaction
from chamberlain.store.schema import signing_keys

KeyRow = Row[tuple[object, ...]]


async def usable_keys(database: Database) -> list[KeyRow]:
    """The active key and every retired key whose tokens may still be alive."""
    async with database.connect() as connection:
        rows = await connection.execute(
            select(signing_keys).where(
                or_(signing_keys.c.expires_at.is_(None), signing_keys.c.expires_at > time.time())
            )
        )
        return list(rows)


async def rotate(database: Database, new_key: GeneratedKey, *, keep_verifying_for: float) -> None:
    """Retires the current signer and adds the new one in one transaction, so there is always exactly one, also
    when rotations run at once (serialised: see the module's docstring)."""
    async with database.begin() as connection:
        await lock_for_transaction(database, connection, "chamberlain.signing_keys.rotate")
        now = time.time()  # after the wait: the key retired here was the signer until this moment
        await connection.execute(
            update(signing_keys)
            .where(signing_keys.c.retired_at.is_(None))
            .values(retired_at=now, expires_at=now + keep_verifying_for)
        )
        await connection.execute(
            signing_keys.insert().values(
                kid=new_key.kid,
                alg=new_key.alg,
                public_jwk=new_key.public_jwk,
                private_key=new_key.encrypted_private_key,
                created_at=now,
            )
        )
