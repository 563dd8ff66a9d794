"""Retention: event bodies older than their classification's retention are purged; legal holds keep them.

Purging empties a record's body (and so its personal fields) but keeps its hashes, and the same transaction stores
a signed tombstone checkpoint saying records below a position may be empty: the chain and the tree still verify,
and nothing about a purged event but its place in the log remains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update

from chamberlain.audit.checkpoints import Checkpoint, Checkpointer, checkpoint_row
from chamberlain.audit.settings import AuditSettings
from chamberlain.store.database import Database
from chamberlain.store.schema import audit_checkpoints, audit_events, audit_legal_holds

WHOLE_TENANT = "*"
_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Purge:
    tenant: str
    purged: int
    tombstone: Checkpoint | None


async def purge_expired(
    database: Database, checkpointer: Checkpointer, settings: AuditSettings, tenant: str, *, now: float | None = None
) -> Purge:
    now = time.time() if now is None else now
    held = await held_subjects(database, tenant)
    if WHOLE_TENANT in held:
        return Purge(tenant, 0, None)
    ruled = {rule.classification for rule in settings.classification_rules}
    expired_by_class = [
        (audit_events.c.classification == classification)
        & (audit_events.c.time < now - settings.retention_days_for(classification) * _DAY)
        for classification in ruled
    ]
    default_cutoff = now - settings.retention_days_for("") * _DAY
    expired = audit_events.c.classification.not_in(list(ruled)) & (audit_events.c.time < default_cutoff)
    for condition in expired_by_class:
        expired = expired | condition
    candidates = (
        (audit_events.c.tenant_id == tenant)
        & audit_events.c.body.is_not(None)
        & expired
        & (audit_events.c.subject.is_(None) | audit_events.c.subject.not_in(sorted(held)))
    )
    async with database.connect() as connection:
        highest = await connection.scalar(select(func.max(audit_events.c.seq)).where(candidates))
    if highest is None:
        return Purge(tenant, 0, None)
    tombstone = await checkpointer.prepare(tenant, kind="tombstone", purged_below=int(highest) + 1)
    assert tombstone is not None
    async with database.begin() as connection:
        result = await connection.execute(
            update(audit_events).where(candidates, audit_events.c.seq <= highest).values(body=None)
        )
        await connection.execute(insert(audit_checkpoints).values(**checkpoint_row(tombstone)))
    return Purge(tenant, result.rowcount, tombstone)


async def held_subjects(database: Database, tenant: str) -> set[str]:
    async with database.connect() as connection:
        rows = await connection.execute(
            select(audit_legal_holds.c.subject).where(audit_legal_holds.c.tenant_id == tenant)
        )
        return {str(subject) for subject in rows.scalars()}


async def place_hold(database: Database, tenant: str, subject: str, reason: str) -> None:
    async with database.begin() as connection:
        await connection.execute(
            insert(audit_legal_holds).values(tenant_id=tenant, subject=subject, reason=reason, created_at=time.time())
        )


async def lift_hold(database: Database, tenant: str, subject: str) -> bool:
    async with database.begin() as connection:
        result = await connection.execute(
            delete(audit_legal_holds).where(
                audit_legal_holds.c.tenant_id == tenant, audit_legal_holds.c.subject == subject
            )
        )
        return result.rowcount > 0
