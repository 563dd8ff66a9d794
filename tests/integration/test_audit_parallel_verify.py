"""Verification in worker processes reaches the same verdict, naming the same record, as verification in one.

Long logs are chain-checked in parallel ranges (audit/verify.py); the ranges' seams are where a parallel check
could go wrong, so the tampering lands on and around them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from chamberlain.audit import verify
from chamberlain.audit.checkpoints import public_keys
from chamberlain.audit.verify import Verification, verify_tenant
from chamberlain.store.database import Database
from tests.integration.test_audit_log import Store, sign_in

RECORDS = 600


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(verify, "PARALLEL_FROM", 0)  # parallel whatever the length
    initialised = Store.initialised(tmp_path / "data")
    initialised.write(
        [sign_in(subject=f"user-{number % 7}", personal={"source_ip": "127.0.0.1"}) for number in range(RECORDS)]
    )
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


@pytest.mark.parametrize("seq", [0, 199, 200, 201, 399, 400, 599])  # 3 workers: ranges start at 0, 200 and 400
def test_an_altered_record_is_named_alike(store: Store, seq: int) -> None:
    tamper(store, "UPDATE audit_events SET body = CAST(body || x'20' AS BLOB) WHERE seq = :seq", seq=seq)
    sequential, parallel = verdicts(store)
    assert sequential.problem is not None
    assert sequential.problem.seq == seq
    assert parallel == sequential


@pytest.mark.parametrize("seq", [0, 200, 400, 599])
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
    tamper(store, "UPDATE audit_events SET prev_hash = zeroblob(32) WHERE seq = 400")
    sequential, parallel = verdicts(store)
    assert sequential.problem is not None
    assert sequential.problem.seq == 400
    assert parallel == sequential
