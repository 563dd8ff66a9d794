"""Cost reports on SQLite and PostgreSQL, checked against records whose figures are worked out by hand: spend by
model, user and team over 24h, 7d, this month and last month; volume discounts taken per calendar month (a 7-day
window across a month boundary gets each month's rate); the team summary; the month-end forecast and its alert; the
efficiency figures against last month; CSV with spreadsheet formulas neutralised."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from chamberlain.cost.pricing import Pricing
from chamberlain.cost.recorder import UsageRecorder
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.reports import cost_report, efficiency, forecast, report_csv, team_summary
from chamberlain.cost.usage import TokenUsage
from chamberlain.store.database import Database
from chamberlain.store.usage import UsageRepository
from tests.support.databases import migrated_database_url, opened_database
from tests.support.server import random_name

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)  # 2.5 days into March; 28.5 days left
OPUS, SONNET, HAIKU = "claude-opus-4-6", "claude-sonnet-4-5-20250929", "claude-haiku-4-5"
TIERS = """\
volume_discounts:
  - applies_to: total
    tiers:
      - {above: 100, discount: 0.10}
      - {above: 1000, discount: 0.20}
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# February (last month) comes to $1,100: over $1,000, so 20% off. March so far comes to $120: 10% off.
RECORDS: list[dict[str, Any]] = [
    # A
    {"at": at("2026-02-10T10:00"), "user": "u-alice", "team": "platform", "model": OPUS, "cost": "700",
     "usage": TokenUsage(input_tokens=1000, output_tokens=500, cache_read_input_tokens=9000), "session": "s-a1"},
    # B: inside the 7-day window (from Feb 24 12:00)
    {"at": at("2026-02-27T08:00"), "user": "u-bob", "team": "payments", "model": SONNET, "cost": "400",
     "usage": TokenUsage(2000, 300, 1000, 2000), "session": "s-b1"},
    # C
    {"at": at("2026-03-01T09:00"), "user": "u-alice", "team": "platform", "model": OPUS, "cost": "50",
     "usage": TokenUsage(input_tokens=500, output_tokens=80, cache_read_input_tokens=4500), "session": "s-a2"},
    # D: no team, cut off mid-stream, no session known
    {"at": at("2026-03-02T15:00"), "user": "u-carol", "team": None, "model": HAIKU, "cost": "30",
     "usage": TokenUsage(input_tokens=100, output_tokens=100), "complete": False},
    # E
    {"at": at("2026-03-03T11:00"), "user": "u-bob", "team": "payments", "model": SONNET, "cost": "40",
     "usage": TokenUsage(input_tokens=1000, output_tokens=90, cache_read_input_tokens=3000), "session": "s-b2"},
    # At `now` and after it: outside every window that ends now.
    {"at": NOW, "user": "u-bob", "team": "payments", "model": SONNET, "cost": "1000", "usage": TokenUsage(1, 1)},
]  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "cost-reports")


@pytest.fixture(scope="module")
async def seeded(database_url: str) -> AsyncIterator[tuple[Database, str]]:
    async with opened_database(database_url) as database:
        tenant = random_name("tenant")
        recorder = UsageRecorder(database, commit_delay=0)
        await recorder.start()
        for spec in RECORDS:
            recorder.record(
                UsageRecord(
                    tenant=tenant,
                    user=spec["user"],
                    team=spec["team"],
                    client_id="claude-code",
                    model=spec["model"],
                    requested_model=None,
                    usage=spec["usage"],
                    cost_usd=Decimal(spec["cost"]),
                    latency_ms=None,
                    at=spec["at"],
                    source="proxy",
                    session_id=spec.get("session"),
                    complete=spec.get("complete", True),
                )
            )
        await recorder.aclose()
        yield database, tenant


@pytest.fixture(scope="module")
def pricing(tmp_path_factory: pytest.TempPathFactory) -> Pricing:
    path: Path = tmp_path_factory.mktemp("pricing") / "pricing.yaml"
    path.write_text(TIERS)
    return Pricing.load(path)


@pytest.fixture
def repository(seeded: tuple[Database, str]) -> UsageRepository:
    return UsageRepository(*seeded)


async def test_seven_days_by_model_across_a_month_boundary(repository: UsageRepository, pricing: Pricing) -> None:
    report = await cost_report(repository, pricing, tenant="t", by="model", period="7d", now=NOW)
    assert report.window.since == at("2026-02-24T12:00")
    figures = {group.key: (group.requests, group.list_cost_usd, group.net_cost_usd) for group in report.groups}
    # Sonnet: $400 in February at 20% off and $40 in March at 10% off = 320 + 36.
    assert figures == {
        SONNET: (2, Decimal("440.000000"), Decimal("356.000000")),
        OPUS: (1, Decimal("50.000000"), Decimal("45.000000")),
        HAIKU: (1, Decimal("30.000000"), Decimal("27.000000")),
    }
    assert [group.key for group in report.groups] == [SONNET, OPUS, HAIKU]  # largest first
    assert report.total.list_cost_usd == Decimal(520)
    assert report.total.net_cost_usd == Decimal(428)
    assert report.volume_discount_usd == Decimal(92)
    assert report.groups[0].share == pytest.approx(440 / 520)
    assert report.total.requests == 4
    assert report.total.incomplete == 1
    assert report.total.cache_read_tokens == 2000 + 4500 + 3000


async def test_this_month_by_team(repository: UsageRepository, pricing: Pricing) -> None:
    report = await cost_report(repository, pricing, tenant="t", by="team", period="month", now=NOW)
    assert report.window.label == "2026-03 to date"
    assert [(group.key, group.list_cost_usd, group.net_cost_usd, group.users) for group in report.groups] == [
        ("platform", Decimal(50), Decimal(45), 1),
        ("payments", Decimal(40), Decimal(36), 1),
        (None, Decimal(30), Decimal(27), 1),
    ]


async def test_last_month_by_user_with_names(repository: UsageRepository, pricing: Pricing) -> None:
    names = {"u-alice": "alice", "u-bob": "bob"}
    report = await cost_report(repository, pricing, tenant="t", by="user", period="last-month", now=NOW, names=names)
    assert report.window.label == "2026-02"
    assert [(group.key, group.name, group.list_cost_usd, group.net_cost_usd) for group in report.groups] == [
        ("u-alice", "alice", Decimal(700), Decimal(560)),
        ("u-bob", "bob", Decimal(400), Decimal(320)),
    ]
    assert report.volume_discount_usd == Decimal(220)


async def test_the_last_24_hours(repository: UsageRepository, pricing: Pricing) -> None:
    report = await cost_report(repository, pricing, tenant="t", by="user", period="24h", now=NOW)
    assert {group.key: group.list_cost_usd for group in report.groups} == {"u-carol": 30, "u-bob": 40}


async def test_team_summary(repository: UsageRepository, pricing: Pricing) -> None:
    summary = await team_summary(repository, pricing, tenant="t", period="month", now=NOW)
    platform, payments, nobody = summary.teams
    assert (platform.team, platform.users, platform.requests, platform.top_model) == ("platform", 1, 1, OPUS)
    assert (platform.list_cost_usd, platform.net_cost_usd, platform.cost_per_user_usd) == (50, 45, 50)
    assert platform.cache_hit_rate == pytest.approx(4500 / 5000)
    assert payments.cache_hit_rate == pytest.approx(3000 / 4000)
    assert (nobody.team, nobody.cache_hit_rate, nobody.top_model) == (None, 0.0, HAIKU)
    assert (summary.list_cost_usd, summary.net_cost_usd) == (120, 108)


async def test_forecast_projects_the_recent_rate_to_month_end(repository: UsageRepository, pricing: Pricing) -> None:
    result = await forecast(repository, pricing, tenant="t", now=NOW, alert_at=Decimal(1000), by="team")
    # $120 in 2.5 days: $48 a day; 28.5 days left: 120 + 48 x 28.5 = $1,488 list; over $1,000, so 20% off.
    assert result.month == "2026-03"
    assert result.spend_to_date_usd == 120
    assert result.daily_rate_usd == 48
    assert result.projected_list_usd == 1488
    assert result.projected_volume_discount_usd == Decimal("297.6")
    assert result.projected_net_usd == Decimal("1190.4")
    assert result.last_month_net_usd == 880  # 1,100 less 20%
    assert result.alert is True
    # Each team at its own rate: platform 50 + 20 x 28.5, payments 40 + 16 x 28.5, no team 30 + 12 x 28.5.
    assert [(group.key, group.projected_usd) for group in result.groups] == [
        ("platform", 620),
        ("payments", 496),
        (None, 372),
    ]
    quiet = await forecast(repository, pricing, tenant="t", now=NOW, alert_at=Decimal("1190.41"))
    assert quiet.alert is False
    assert quiet.groups == []
    assert (await forecast(repository, pricing, tenant="t", now=NOW)).alert is None


async def test_efficiency_against_last_month(repository: UsageRepository) -> None:
    result = await efficiency(repository, tenant="t", period="month", compare="last-month", now=NOW)
    current, previous = result.current, result.previous
    assert previous is not None
    assert (current.requests, current.list_cost_usd, current.users, current.sessions) == (3, 120, 3, 2)
    assert current.cache_hit_rate == pytest.approx(7500 / 9100)
    assert current.cost_per_request_usd == 40
    assert current.cost_per_session_usd == 45  # C and E name sessions: $90 over two
    assert current.cost_per_user_usd == 40
    assert current.incomplete_share == pytest.approx(1 / 3)
    assert [(share.model, share.list_cost_usd) for share in current.model_mix] == [
        (OPUS, 50),
        (SONNET, 40),
        (HAIKU, 30),
    ]
    assert current.model_mix[0].cost_share == pytest.approx(50 / 120)
    assert (previous.requests, previous.list_cost_usd, previous.cost_per_session_usd) == (2, 1100, 550)
    assert previous.cache_hit_rate == pytest.approx(11000 / 15000)
    assert result.changes["requests"] == pytest.approx(0.5)
    assert result.changes["cost_per_user_usd"] == pytest.approx((40 - 550) / 550)
    alone = await efficiency(repository, tenant="t", period="24h", compare="none", now=NOW)
    assert (alone.previous, alone.changes, alone.current.requests) == (None, {}, 2)


async def test_csv_has_a_row_per_group_and_no_formulas(seeded: tuple[Database, str], pricing: Pricing) -> None:
    database, _ = seeded
    tenant = random_name("tenant")
    recorder = UsageRecorder(database, commit_delay=0)
    await recorder.start()
    for team in ('=HYPERLINK("http://evil.example")', "ops"):
        recorder.record(
            UsageRecord(tenant, "u-1", team, None, HAIKU, None, TokenUsage(1, 1), Decimal("1.5"), None,
                        at("2026-03-02T00:00"), "proxy")
        )  # fmt: skip
    await recorder.aclose()
    repository = UsageRepository(database, tenant)
    report = await cost_report(repository, pricing, tenant=tenant, by="team", period="month", now=NOW)
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert [row["key"] for row in rows] == ['\'=HYPERLINK("http://evil.example")', "ops"]
    assert rows[1]["list_cost_usd"] == "1.500000"
    assert rows[1]["requests"] == "1"
    summary = await team_summary(repository, pricing, tenant=tenant, period="month", now=NOW)
    header = next(csv.reader(io.StringIO(report_csv(summary))))
    assert header[:3] == ["team", "users", "requests"]
