"""The usage records: appended in batches by the recorder (cost/recorder.py), summed for budgets and reports.

Rows are written with the bare driver (COPY on PostgreSQL), so every value is made safe for its column first: text
cut to the column's length and rid of NUL (PostgreSQL refuses it), counts bounded to the column's integer type. A
record can then never fail its batch, and a failed batch means only that the store is unreachable (retried).
Costs are stored in billionths of a dollar (schema.py says why) and summed in SQL as integers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, String, and_, case, func, select

from chamberlain.cost.records import UsageRecord
from chamberlain.store.database import Connection, Database, insert_rows
from chamberlain.store.schema import usage_records

Dimension = Literal["model", "user", "team", "client", "source"]
NANO = Decimal("1e-9")
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
_table = usage_records
_DIMENSIONS: dict[Dimension, Any] = {
    "model": _table.c.model,
    "user": _table.c.user_id,
    "team": _table.c.team,
    "client": _table.c.client_id,
    "source": _table.c.source,
}


def to_nano(usd: Decimal) -> int:
    return min(int((usd / NANO).to_integral_value(ROUND_HALF_EVEN)), _INT64)


def from_nano(nano: int) -> Decimal:
    return Decimal(nano) * NANO


def usage_row(record: UsageRecord) -> tuple[Any, ...]:
    """The record's values in the column order of `usage_records`, each safe for its column. Raises for a value
    of the wrong type (the recorder drops that record rather than fail its batch)."""
    usage = record.usage
    return (
        uuid.uuid4().hex,
        _text(record.tenant, _table.c.tenant_id),
        (record.at if record.at.tzinfo is not None else record.at.replace(tzinfo=UTC)).timestamp(),
        _text(record.user, _table.c.user_id),
        _text(record.team, _table.c.team),
        _text(record.client_id, _table.c.client_id),
        _text(record.model, _table.c.model) or "",
        _text(record.requested_model, _table.c.requested_model),
        _count(usage.input_tokens),
        _count(usage.output_tokens),
        _count(usage.cache_creation_input_tokens),
        _count(usage.cache_creation_1h_input_tokens),
        _count(usage.cache_read_input_tokens),
        _count(usage.web_search_requests),
        to_nano(record.cost_usd),
        None if record.latency_ms is None else float(record.latency_ms),
        _text(record.source, _table.c.source),
        _text(record.request_id, _table.c.request_id),
        _text(record.session_id, _table.c.session_id),
        bool(record.complete),
    )


async def append_usage(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    await insert_rows(connection, _table, rows)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Sums over the records of one group (or all of them)."""

    key: tuple[str | None, ...]  # the group's values, one per dimension grouped by (empty when not grouped)
    requests: int
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_creation_1h_input_tokens: int
    cache_read_input_tokens: int
    web_search_requests: int
    cost_nanousd: int
    incomplete: int  # responses cut off mid-stream
    users: int  # distinct users
    sessions: int  # distinct Claude Code sessions (telemetry records name them)
    session_cost_nanousd: int  # the cost of the records that name a session

    @property
    def cost_usd(self) -> Decimal:
        return from_nano(self.cost_nanousd)

    @property
    def session_cost_usd(self) -> Decimal:
        return from_nano(self.session_cost_nanousd)

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


class UsageRepository:
    """One tenant's usage records."""

    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    async def totals(
        self,
        since: datetime,
        until: datetime,
        by: Sequence[Dimension] = (),
        *,
        where: dict[Dimension, str] | None = None,
    ) -> list[UsageTotals]:
        """Sums over [since, until), one row per distinct combination of the `by` dimensions (a single row, all
        zeros when nothing was used, if `by` is empty), largest cost first; `where` narrows to one user, team, ..."""
        columns = [_DIMENSIONS[dimension] for dimension in by]
        sums = [
            func.count(),
            func.coalesce(func.sum(_table.c.input_tokens), 0),
            func.coalesce(func.sum(_table.c.output_tokens), 0),
            func.coalesce(func.sum(_table.c.cache_creation_input_tokens), 0),
            func.coalesce(func.sum(_table.c.cache_creation_1h_input_tokens), 0),
            func.coalesce(func.sum(_table.c.cache_read_input_tokens), 0),
            func.coalesce(func.sum(_table.c.web_search_requests), 0),
            func.coalesce(func.sum(_table.c.cost_nanousd), 0),
            func.coalesce(func.sum(case((_table.c.complete.is_(False), 1), else_=0)), 0),
            func.count(func.distinct(_table.c.user_id)),
            func.count(func.distinct(_table.c.session_id)),
            func.coalesce(func.sum(case((_table.c.session_id.is_not(None), _table.c.cost_nanousd), else_=0)), 0),
        ]
        statement = select(*columns, *sums).where(self._within(since, until, where))
        if columns:
            statement = statement.group_by(*columns)
        async with self._database.connect() as connection:
            rows = (await connection.execute(statement)).all()
        width = len(columns)
        totals = [
            UsageTotals(tuple(row[:width]), *(int(value) for value in row[width:]))  # PostgreSQL sums are NUMERIC
            for row in rows
        ]
        return sorted(totals, key=lambda total: (-total.cost_nanousd, tuple(part or "" for part in total.key)))

    async def spend(
        self, since: datetime, until: datetime, *, user: str | None = None, team: str | None = None
    ) -> Decimal:
        """The list cost of [since, until), of one user or team if given: where a budget's period starts from."""
        where: dict[Dimension, str] = {}
        if user is not None:
            where["user"] = user
        if team is not None:
            where["team"] = team
        statement = select(func.coalesce(func.sum(_table.c.cost_nanousd), 0)).where(self._within(since, until, where))
        async with self._database.connect() as connection:
            return from_nano(int(await connection.scalar(statement)))

    def _within(self, since: datetime, until: datetime, where: dict[Dimension, str] | None) -> ColumnElement[bool]:
        conditions = [
            _table.c.tenant_id == self._tenant_id,
            _table.c.at >= since.timestamp(),
            _table.c.at < until.timestamp(),
        ]
        conditions += [_DIMENSIONS[dimension] == value for dimension, value in (where or {}).items()]
        return and_(*conditions)


def _text(value: str | None, column: Any) -> str | None:
    if value is None:
        return None
    length = column.type.length if isinstance(column.type, String) else None
    cleaned = value.replace("\x00", "")
    return cleaned[:length] if length is not None else cleaned


def _count(value: int) -> int:
    return max(0, min(int(value), _INT32))
