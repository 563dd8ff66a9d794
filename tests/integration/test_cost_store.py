"""The usage recorder and store on SQLite and PostgreSQL: records written in batches off the request path and summed
back exactly; listeners told at record() time; a full queue drops and says so; a failing store loses nothing; a
closing recorder writes its queue; values no column could take never fail a batch; one tenant never sees another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from chamberlain.cost.pricing import Pricing
from chamberlain.cost.recorder import UsageRecorder
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.usage import TokenUsage
from chamberlain.store.database import Connection, Database
from chamberlain.store.schema import metadata, usage_records
from chamberlain.store.usage import UsageRepository
from tests.support.databases import migrated_database_url, opened_database
from tests.support.server import random_name

PRICING = Pricing.load()
AT = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "cost-store")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async with opened_database(database_url) as database:
        yield database


@pytest.fixture
def tenant() -> str:
    return random_name("tenant")


@pytest.fixture
async def recorder(database: Database) -> AsyncIterator[UsageRecorder]:
    recorder = UsageRecorder(database, commit_delay=0)
    await recorder.start()
    yield recorder
    await recorder.aclose()


def usage_record(tenant: str, model: str, usage: TokenUsage, **values: Any) -> UsageRecord:
    at = values.pop("at", AT)
    fields: dict[str, Any] = {
        "tenant": tenant,
        "user": "u-1",
        "team": "platform",
        "client_id": "claude-code",
        "model": model,
        "requested_model": None,
        "usage": usage,
        "latency_ms": 812.5,
        "at": at,
        "source": "proxy",
        "request_id": "req_011CVQe1dLrGNMJyE1ghG1av",
    }
    fields.update(values)
    if "cost_usd" not in fields:
        fields["cost_usd"] = PRICING.cost(model, usage, at=at)
    return UsageRecord(**fields)


async def rows_of(database: Database, tenant: str) -> list[dict[str, Any]]:
    async with database.connect() as connection:
        result = await connection.execute(
            select(usage_records).where(usage_records.c.tenant_id == tenant).order_by(usage_records.c.at)
        )
        return [dict(row) for row in result.mappings()]


async def test_the_migration_creates_what_the_schema_declares(database: Database) -> None:
    def differences(sync: Any) -> list[Any]:
        context = MigrationContext.configure(sync)
        return [difference for difference in compare_metadata(context, metadata) if "usage_records" in repr(difference)]

    assert await database.run_sync(differences) == []


async def test_records_are_written_exactly(database: Database, recorder: UsageRecorder, tenant: str) -> None:
    streamed = TokenUsage(4, 142, 1867, 31212)
    cached = TokenUsage(12, 1024, 12288, 0, 10240, 2)
    recorder.record(usage_record(tenant, "claude-sonnet-4-5-20250929", streamed, session_id="s-1"))
    recorder.record(
        usage_record(
            tenant,
            "claude-opus-4-6",
            cached,
            at=AT + timedelta(seconds=1),
            user=None,
            team=None,
            requested_model="fast",
            complete=False,
            source="telemetry",
            latency_ms=None,
        )
    )
    await recorder.drained()
    first, second = await rows_of(database, tenant)
    assert first["cost_nanousd"] == 18_506_850  # $0.01850685 (tests/unit/test_cost_usage.py)
    assert (first["input_tokens"], first["output_tokens"]) == (4, 142)
    assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"]) == (1867, 31212)
    assert (first["user_id"], first["team"], first["session_id"], first["complete"]) == ("u-1", "platform", "s-1", True)
    assert first["at"] == AT.timestamp()
    assert second["cost_nanousd"] == 160_860_000  # $0.16086
    assert (second["cache_creation_1h_input_tokens"], second["web_search_requests"]) == (10240, 2)
    assert (second["user_id"], second["team"], second["requested_model"]) == (None, None, "fast")
    assert (second["complete"], second["source"], second["latency_ms"]) == (False, "telemetry", None)


async def test_listeners_hear_each_record_at_once(recorder: UsageRecorder, tenant: str) -> None:
    heard: list[Decimal] = []

    def broken(_: UsageRecord) -> None:
        raise RuntimeError("a listener's bug")

    recorder.subscribe(broken)
    recorder.subscribe(lambda record: heard.append(record.cost_usd))
    record = usage_record(tenant, "claude-haiku-4-5", TokenUsage(1000, 100))
    recorder.record(record)  # no await between recording and hearing: a budget counts the spend immediately
    assert heard == [Decimal("0.0015")]
    await recorder.drained()


async def test_a_full_queue_drops_and_logs(database: Database, tenant: str, caplog: pytest.LogCaptureFixture) -> None:
    recorder = UsageRecorder(database, queue_limit=3, commit_delay=0)
    heard: list[UsageRecord] = []
    recorder.subscribe(heard.append)
    for _ in range(5):  # not started: nothing is written yet
        recorder.record(usage_record(tenant, "claude-haiku-4-5", TokenUsage(10, 10)))
    assert recorder.dropped == 2
    assert len(heard) == 5  # budgets still count what the store could not keep
    with caplog.at_level(logging.WARNING, logger="chamberlain.cost.recorder"):
        await recorder.start()
        await recorder.drained()
        await recorder.aclose()
    assert "2 records dropped" in caplog.text
    assert len(await rows_of(database, tenant)) == 3


class FailingDatabase:
    """The real store, except that the first `failures` transactions fail as an unreachable server would."""

    def __init__(self, database: Database, failures: int) -> None:
        self._database = database
        self.url = database.url
        self.failures = failures

    def begin(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionRefusedError("the store is down")
        return self._database.begin()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)


async def test_a_failing_store_loses_nothing_and_duplicates_nothing(database: Database, tenant: str) -> None:
    flaky = FailingDatabase(database, failures=2)
    recorder = UsageRecorder(flaky, commit_delay=0, batch_size=7)  # type: ignore[arg-type]
    await recorder.start()
    for index in range(20):
        recorder.record(usage_record(tenant, "claude-haiku-4-5", TokenUsage(index, 1)))
    await asyncio.wait_for(recorder.drained(), 10)
    await recorder.aclose()
    rows = await rows_of(database, tenant)
    assert sorted(row["input_tokens"] for row in rows) == list(range(20))


async def test_closing_writes_the_queue(database: Database, tenant: str) -> None:
    recorder = UsageRecorder(database, commit_delay=10)  # a long group-commit wait, cut short by aclose
    await recorder.start()
    for _ in range(3):
        recorder.record(usage_record(tenant, "claude-haiku-4-5", TokenUsage(10, 10)))
    await recorder.aclose()
    assert len(await rows_of(database, tenant)) == 3


async def test_values_no_column_takes_never_fail_a_batch(
    database: Database, recorder: UsageRecorder, tenant: str
) -> None:
    recorder.record(
        usage_record(
            tenant,
            "claude-haiku-4-5\x00" + "x" * 500,  # PostgreSQL refuses NUL in text; the column holds 200 characters
            TokenUsage(10**12, 1),
            cost_usd=Decimal("0.5"),
            request_id="r" * 5000,
            requested_model="\x00",
            at=datetime(2026, 3, 10, 9, 30),  # naive: taken as UTC
        )
    )
    recorder.record(replace(usage_record(tenant, "claude-haiku-4-5", TokenUsage(1, 1)), at="not a time"))  # type: ignore[arg-type]
    recorder.record(usage_record(tenant, "claude-haiku-4-5", TokenUsage(2, 2)))
    await recorder.drained()
    rows = await rows_of(database, tenant)
    assert len(rows) == 2  # the malformed record was dropped, the others written
    odd = next(row for row in rows if row["model"].startswith("claude-haiku-4-5x"))
    assert len(odd["model"]) == 200
    assert odd["input_tokens"] == 2**31 - 1
    assert len(odd["request_id"]) == 200
    assert odd["requested_model"] == ""
    assert odd["at"] == AT.timestamp()


async def test_sums_by_dimension_exact_and_per_tenant(database: Database, recorder: UsageRecorder, tenant: str) -> None:
    other = random_name("tenant")
    people = [("u-1", "platform"), ("u-2", "platform"), ("u-3", "payments"), ("u-4", None)]
    models = ["claude-opus-4-6", "claude-sonnet-4-5", "claude-haiku-4-5"]
    expected: dict[tuple[str | None, str], Decimal] = {}
    for index in range(300):
        user, team = people[index % 4]
        model = models[index % 3]
        usage = TokenUsage(100 + index, 50 + index, 1000 * (index % 5), 5000 * (index % 7), 500 * (index % 2))
        record = usage_record(tenant, model, usage, user=user, team=team, at=AT + timedelta(minutes=index))
        recorder.record(record)
        recorder.record(replace(record, tenant=other))
        expected[(team, model)] = expected.get((team, model), Decimal(0)) + record.cost_usd
    await recorder.drained()
    repository = UsageRepository(database, tenant)
    until = AT + timedelta(days=1)
    by_team_model = await repository.totals(AT, until, ("team", "model"))
    assert {totals.key: totals.cost_usd for totals in by_team_model} == expected
    assert [totals.cost_nanousd for totals in by_team_model] == sorted(
        (totals.cost_nanousd for totals in by_team_model), reverse=True
    )
    (overall,) = await repository.totals(AT, until)
    assert overall.requests == 300
    assert overall.users == 4
    assert overall.cost_usd == sum(expected.values())
    assert await repository.spend(AT, until) == sum(expected.values())
    assert await repository.spend(AT, until, team="payments") == sum(
        cost for (team, _), cost in expected.items() if team == "payments"
    )
    # [since, until): the first record is in, one at `until` is out.
    assert (await repository.totals(AT, AT + timedelta(minutes=1)))[0].requests == 1
    assert (await repository.totals(AT - timedelta(minutes=1), AT))[0].requests == 0
    (empty,) = await UsageRepository(database, random_name("tenant")).totals(AT, until)
    assert (empty.requests, empty.cost_nanousd, empty.users) == (0, 0, 0)
    async with database.connect() as connection:
        assert (
            await connection.scalar(
                select(func.count()).select_from(usage_records).where(usage_records.c.tenant_id == other)
            )
            == 300
        )
