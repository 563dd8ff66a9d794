"""The console's own reads: bounded queries (LIMIT, keyset paging, aggregates over today or this month), so a page
costs the same with 100,000 audit events and 10,000 users as with ten. Everything is filtered on the tenant."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select

from chamberlain.audit.records import parse_body
from chamberlain.store.database import Database
from chamberlain.store.schema import audit_events, usage_records, users
from chamberlain.store.usage import from_nano

OUTCOMES = ("success", "failure", "denied", "error")
# Every MCP request is audited (allowed, denied or failed); LLM requests are counted from usage records, since the
# audit log has only the LLM requests policy refused or rerouted.
REQUEST_ACTIONS = ("mcp.request",)


async def usernames(database: Database, tenant: str, user_ids: Collection[str]) -> dict[str, str]:
    """The names of these users (ids of another tenant, or of no one, are absent): one query, not one per user."""
    wanted = [user_id for user_id in user_ids if user_id][:1000]
    if not wanted:
        return {}
    statement = select(users.c.id, users.c.username).where(users.c.tenant_id == tenant, users.c.id.in_(wanted))
    async with database.connect() as connection:
        return {str(row.id): str(row.username) for row in await connection.execute(statement)}


@dataclass(frozen=True)
class AuditFilter:
    subject: str | None = None  # the user id events are about (the `subject` column)
    action: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None

    def conditions(self, tenant: str) -> list[Any]:
        where: list[Any] = [audit_events.c.tenant_id == tenant]
        if self.subject is not None:
            where.append(audit_events.c.subject == self.subject)
        if self.action is not None:
            where.append(audit_events.c.action == self.action)
        if self.outcome is not None:
            where.append(audit_events.c.outcome == self.outcome)
        if self.since is not None:
            where.append(audit_events.c.time >= self.since)
        if self.until is not None:
            where.append(audit_events.c.time < self.until)
        return where


@dataclass(frozen=True)
class AuditRow:
    seq: int
    event_id: str
    time: float
    action: str
    outcome: str
    subject: str | None
    public: dict[str, Any]  # {} once purged by retention

    @property
    def actor(self) -> str:
        actor = self.public.get("actor") or {}
        return f"{actor.get('type', '')}:{actor.get('id', '')}" if actor else ""

    @property
    def target(self) -> str:
        return str(self.public.get("target") or "")


async def audit_page(
    database: Database, tenant: str, chosen: AuditFilter, *, before: int | None, limit: int
) -> list[AuditRow]:
    """Newest first, keyset on seq (the primary key, read backwards): an "Older" page costs what the first does."""
    where = chosen.conditions(tenant)
    if before is not None:
        where.append(audit_events.c.seq < before)
    statement = select(audit_events).where(*where).order_by(audit_events.c.seq.desc()).limit(limit)
    async with database.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [_row(row) for row in rows]


async def audit_event(database: Database, tenant: str, event_id: str) -> AuditRow | None:
    statement = select(audit_events).where(audit_events.c.tenant_id == tenant, audit_events.c.event_id == event_id)
    async with database.connect() as connection:
        row = (await connection.execute(statement)).mappings().first()
    return _row(row) if row is not None else None


def _row(row: Any) -> AuditRow:
    public = parse_body(row["body"])[0] if row["body"] is not None else {}
    return AuditRow(row["seq"], row["event_id"], row["time"], row["action"], row["outcome"], row["subject"], public)


@dataclass(frozen=True)
class Today:
    requests: int  # MCP requests (audited); the overview adds the LLM requests from usage records
    denials: int
    dlp_hits: int
    errors: int


async def today_counts(database: Database, tenant: str, now: datetime) -> Today:
    """Today's (UTC) figures in one aggregate over the (tenant_id, time) index."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    requests = audit_events.c.action.in_(REQUEST_ACTIONS)
    statement = select(
        func.count().filter(requests),
        func.count().filter(audit_events.c.outcome == "denied"),
        func.count().filter(audit_events.c.action == "dlp.detection"),
        func.count().filter(requests, audit_events.c.outcome == "error"),
    ).where(audit_events.c.tenant_id == tenant, audit_events.c.time >= midnight)
    async with database.connect() as connection:
        row = (await connection.execute(statement)).one()
    return Today(*(int(value or 0) for value in row))


async def daily_spend(database: Database, tenant: str, days: Sequence[datetime], until: datetime) -> list[Decimal]:
    """List cost per UTC day starting at each of `days` (ascending, a day apart) up to `until`: one grouped query
    over the (tenant_id, at) index. The day is a CASE on the bounds, which both SQLite and PostgreSQL evaluate alike
    (a float's cast to an integer truncates in one and rounds in the other)."""
    bounds = [day.timestamp() for day in days[1:]]
    day = case(*((usage_records.c.at < bound, index) for index, bound in enumerate(bounds)), else_=len(bounds))
    statement = (
        select(day.label("day"), func.sum(usage_records.c.cost_nanousd).label("nano"))
        .where(
            usage_records.c.tenant_id == tenant,
            usage_records.c.at >= days[0].timestamp(),
            usage_records.c.at < until.timestamp(),
        )
        .group_by(day)
    )
    spent = [Decimal(0)] * len(days)
    async with database.connect() as connection:
        for row in (await connection.execute(statement)).mappings():
            spent[int(row["day"])] = from_nano(int(row["nano"] or 0))  # PostgreSQL sums are NUMERIC
    return spent


async def recent_actions(database: Database, tenant: str, actions: Sequence[str], limit: int) -> list[AuditRow]:
    statement = (
        select(audit_events)
        .where(audit_events.c.tenant_id == tenant, audit_events.c.action.in_(list(actions)))
        .order_by(audit_events.c.seq.desc())
        .limit(limit)
    )
    async with database.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [_row(row) for row in rows]
