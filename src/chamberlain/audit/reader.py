"""Reading the audit log back: events in chain order, with personal fields decrypted only when asked for."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Select, select

from chamberlain.audit.privacy import SubjectKeys, decrypt_personal
from chamberlain.audit.records import StoredEvent, parse_body
from chamberlain.store.database import Database
from chamberlain.store.schema import audit_events


async def read_events(
    database: Database,
    tenant: str,
    *,
    from_seq: int = 0,
    limit: int = 1000,
    since: float | None = None,
    until: float | None = None,
    actions: Collection[str] | None = None,
    subject_keys: SubjectKeys | None = None,
) -> list[StoredEvent]:
    """Events of one tenant ordered by seq. With `subject_keys`, personal fields are decrypted where the key
    still exists; without, `personal` is None."""
    query: Select[tuple[object, ...]] = (
        select(audit_events)
        .where(audit_events.c.tenant_id == tenant, audit_events.c.seq >= from_seq)
        .order_by(audit_events.c.seq)
        .limit(limit)
    )
    if since is not None:
        query = query.where(audit_events.c.time >= since)
    if until is not None:
        query = query.where(audit_events.c.time < until)
    if actions is not None:
        query = query.where(audit_events.c.action.in_(list(actions)))
    async with database.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
        subjects = {row["subject"] for row in rows if row["subject"] is not None and row["body"] is not None}
        keys = await subject_keys.keys(connection, tenant, subjects, create=False) if subject_keys and subjects else {}
    events = []
    for row in rows:
        body = row["body"]
        public: dict[str, Any] = {}
        level = None
        personal = None
        if body is not None:
            public, level, ciphertext = parse_body(body)
            if subject_keys is not None and ciphertext is not None:
                personal = decrypt_personal(keys.get(row["subject"]), row["event_id"], ciphertext)
        # The hashed body is authoritative; the columns only serve queries (a changed column shows in neither).
        source: Mapping[str, Any] = public if body is not None else dict(row)
        events.append(
            StoredEvent(
                tenant=tenant,
                seq=row["seq"],
                event_id=row["event_id"],
                time=source["time"],
                action=source["action"],
                outcome=source["outcome"],
                classification=source["classification"],
                subject=source["subject"],
                level=level,
                public=public,
                personal=personal,
                prev_hash=row["prev_hash"],
                hash=row["hash"],
                purged=body is None,
            )
        )
    return events


async def tenants_with_events(database: Database) -> list[str]:
    async with database.connect() as connection:
        result = await connection.execute(
            select(audit_events.c.tenant_id).distinct().order_by(audit_events.c.tenant_id)
        )
        return [str(tenant) for tenant in result.scalars()]
