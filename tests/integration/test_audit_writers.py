"""Several writers of one tenant's audit chain (replicas, or a CLI beside the gateway), on SQLite and PostgreSQL:
a writer that loses a chain position to another re-reads the head and writes after it, so every event is kept and
the chain verifies. On PostgreSQL the rows go in by COPY, whose unique violation must count as the same conflict."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from chamberlain.audit.checkpoints import public_keys
from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.audit.reader import read_events
from chamberlain.audit.settings import AuditSettings
from chamberlain.audit.verify import verify_tenant
from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.tenants import ensure_tenant
from tests.support.databases import migrated_database_url, opened_database

KEY = MasterKey(secrets.token_bytes(32))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "audit-writers")


def event(writer: int, number: int) -> AuditEvent:
    return AuditEvent(
        action=Action.SIGN_IN,
        outcome="success",
        tenant="acme",
        actor=Actor("user", f"writer-{writer}"),
        details={"number": number},
    )


async def test_two_writers_of_one_chain_keep_every_event_in_one_valid_chain(url: str) -> None:
    async with opened_database(url) as first, opened_database(url) as second:
        await ensure_tenant(first, "acme")
        logs = [AuditLog(database, KEY, AuditSettings()) for database in (first, second)]
        for log in logs:
            await log.start()
        # Both believe the chain is empty, then write in turns: each write after the other's is a conflict.
        for number in range(20):
            for writer, log in enumerate(logs):
                log.record(event(writer, number))
            await asyncio.gather(*(log.flush() for log in logs))
        for log in logs:
            await log.aclose()
        stored = await read_events(first, "acme", limit=1_000)
        verification = await verify_tenant(first, "acme", await public_keys(first))
    assert verification.ok, verification.problem
    assert verification.records == 40
    numbers = sorted((record.public["actor"]["id"], record.public["details"]["number"]) for record in stored)
    assert numbers == sorted((f"writer-{writer}", number) for writer in (0, 1) for number in range(20))
