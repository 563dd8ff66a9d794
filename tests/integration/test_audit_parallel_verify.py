"""Verification in worker processes reaches the same verdict, naming the same record, as verification in one.

Long logs are checked in blocks by worker processes (audit/verify.py), and the parent joins the blocks' seams and
their tree pieces; the tampering lands on and around the seams, and the checkpoints fall inside blocks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from chamberlain.audit import verify
from chamberlain.audit.checkpoints import public_keys
from chamberlain.audit.records import record_hash
from chamberlain.audit.verify import Verification, verify_tenant
from chamberlain.store.database import Database
from tests.integration.test_audit_log import Store, sign_in


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(verify, "PARALLEL_FROM", 0)  # parallel whatever the length
    monkeypatch.setattr(verify, "BLOCK", 128)  # blocks start at 0, 128, 256, 384 and 512
    initialised = Store.initialised(tmp_path / "data")
    for _ in range(2):  # checkpoints at 300 and 600: both inside a block, so their heads join pieces
        events = [sign_in(subject=f"user-{number % 7}", personal={"source_ip": "127.0.0.1"}) for number in range(300)]
        initialised.write(events)
        assert initialised.cli("audit", "checkpoint").exit_code == 0
    return initialised


def verdicts(store: Store) -> tuple[Verification, Verification]:
    async def both(database: Database) -> tuple[Verification, Verification]:
        keys = await public_keys(database)
        return (
            await verify_tenant(database, "default", keys, workers=1),
            await verify_tenant(database, "default", keys, workers=3),
        )

    return store.run(both)


def tamper(store: Store, statement: str, **parameters: object) -> None:
    async def change(database: Database) -> None:
        async with database.begin() as connection:
            await connection.execute(text(statement), parameters)

    store.run(change)


def test_an_intact_log_verifies_in_parallel(store: Store) -> None:
    sequential, parallel = verdicts(store)
    assert sequential.ok
    assert parallel == sequential


@pytest.mark.parametrize("seq", [0, 127, 128, 129, 255, 256, 299, 300, 511, 512, 599])
def test_an_altered_record_is_named_alike(store: Store, seq: int) -> None:
    tamper(store, "UPDATE audit_events SET body = CAST(body || x'20' AS BLOB) WHERE seq = :seq", seq=seq)
    sequential, parallel = verdicts(store)
    assert sequential.problem is not None
    assert sequential.problem.seq == seq
    assert parallel == sequential


@pytest.mark.parametrize("seq", [0, 128, 300, 512, 599])
def test_a_deleted_record_is_named_alike(store: Store, seq: int) -> None:
    tamper(store, "DELETE FROM audit_events WHERE seq = :seq", seq=seq)
    sequential, parallel = verdicts(store)
    assert sequential.problem is not None
    assert parallel == sequential


def test_a_value_of_another_type_is_an_alteration_not_a_crash(store: Store) -> None:
    tamper(store, "UPDATE audit_events SET body = 'text' WHERE seq = 10")
    sequential, parallel = verdicts(store)
    assert sequential.problem is not None
    assert sequential.problem.seq == 10
    assert parallel == sequential


def test_a_broken_link_at_a_seam_is_named_alike(store: Store) -> None:
    tamper(store, "UPDATE audit_events SET prev_hash = zeroblob(32) WHERE seq = 384")
    sequential, parallel = verdicts(store)
    assert sequential.problem is not None
    assert sequential.problem.seq == 384
    assert parallel == sequential


def test_a_rewritten_chain_is_caught_by_the_checkpoint_alike(store: Store) -> None:
    """A consistent rewrite from record 350 on (every hash recomputed) passes the chain; only the signed root at
    600, joined from the pieces of several blocks, can catch it."""

    async def rewrite(database: Database) -> None:
        async with database.begin() as connection:
            rows = (await connection.execute(text("SELECT seq, body, prev_hash FROM audit_events ORDER BY seq"))).all()
            previous = None
            for seq, body, prev_hash in rows:
                if seq >= 350:
                    body = bytes(body) + (b" " if seq == 350 else b"")
                    prev_hash = previous
                    new_hash = record_hash(prev_hash, body)
                    await connection.execute(
                        text("UPDATE audit_events SET body = :body, prev_hash = :prev, hash = :hash WHERE seq = :seq"),
                        {"body": body, "prev": prev_hash, "hash": new_hash, "seq": seq},
                    )
                    previous = new_hash
                else:
                    previous = (
                        await connection.execute(text("SELECT hash FROM audit_events WHERE seq = :seq"), {"seq": seq})
                    ).scalar_one()

    store.run(rewrite)
    sequential, parallel = verdicts(store)
    assert sequential.problem is not None
    assert sequential.problem.seq == 300  # the last good checkpoint covers 0..299
    assert parallel == sequential
