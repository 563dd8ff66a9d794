"""Signing-key rotations at once (replicas, the CLI, two `chamberlain init`) leave exactly one key signing.

Each rotation runs through a Database of its own (its own connection pool, as a separate process has), many at
once, on PostgreSQL and on SQLite. On PostgreSQL without store/keys.py's advisory lock, READ COMMITTED lets two
rotations each retire the old key without seeing the other's new one: two keys would sign.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import select

from chamberlain.crypto.master_key import MasterKey
from chamberlain.crypto.signing_keys import generate_signing_key
from chamberlain.store import keys as key_store
from chamberlain.store.database import Database, create_database
from chamberlain.store.schema import signing_keys
from tests.support.databases import migrated_url_fixture

url = migrated_url_fixture("key-rotation")

MASTER_KEY = MasterKey(os.urandom(32))
WRITERS = 4
ROTATIONS_EACH = 3
KEEP_VERIFYING_FOR = 900.0


async def rotate(database: Database) -> str:
    new_key = generate_signing_key("ES256", MASTER_KEY)
    await key_store.rotate(database, new_key, keep_verifying_for=KEEP_VERIFYING_FOR)
    return new_key.kid


async def test_concurrent_rotations_leave_exactly_one_signing_key(url: str) -> None:
    databases = [create_database(url) for _ in range(WRITERS)]
    try:
        await rotate(databases[0])  # a signer to start from, as `chamberlain init` makes
        added = await asyncio.gather(*(rotate(database) for _ in range(ROTATIONS_EACH) for database in databases))
        async with databases[0].connect() as connection:
            rows = list(await connection.execute(select(signing_keys)))
    finally:
        for database in databases:
            await database.dispose()

    signing = [row for row in rows if row.retired_at is None]
    assert len(signing) == 1, f"{len(signing)} keys sign at once: {[row.kid for row in signing]}"
    assert signing[0].kid in added, "the signer is one of the new keys"
    assert {row.kid for row in rows} >= set(added), "every rotation added its key"
    for row in rows:
        if row.retired_at is None:
            continue
        # Retired keys keep verifying for the tokens they signed, never forever.
        assert row.expires_at == row.retired_at + KEEP_VERIFYING_FOR
    # One after another: each retirement is the moment its successor started signing, so the keys form one chain.
    retired_at = sorted(row.retired_at for row in rows if row.retired_at is not None)
    created_at = sorted(row.created_at for row in rows)[1:]
    assert retired_at == created_at, "a rotation retired a key that another had retired already"
