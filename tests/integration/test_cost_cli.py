"""`chamberlain cost` on SQLite and PostgreSQL: the report by model, user and team, the team summary as CSV, JSON
to a file, the forecast's alert exit status, the efficiency table, and mistakes (an unknown tenant, an invalid
pricing file, a store never initialised, a wrong option) as one clear line, never a traceback. Figures are the
three fixture requests of tests/unit/test_cost_usage.py, priced by hand there."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from chamberlain.cli.main import app
from chamberlain.cost.pricing import Pricing
from chamberlain.cost.recorder import UsageRecorder
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.reports import month_start
from chamberlain.cost.usage import TokenUsage
from chamberlain.settings import load_settings
from chamberlain.store.users import UserRepository
from tests.conftest import require_postgres
from tests.support.databases import opened_database
from tests.support.server import postgres_database

PRICING = Pricing.load()
# (model, usage, user, team, session): $0.01850685, $0.16086 and $0.06875 in list cost.
REQUESTS = [
    ("claude-sonnet-4-5-20250929", TokenUsage(4, 142, 1867, 31212), "bob", "payments", "s-1"),
    ("claude-opus-4-6", TokenUsage(12, 1024, 12288, 0, 10240, 2), "bob", "payments", "s-1"),
    ("claude-opus-4-5-20251101", TokenUsage(1500, 800, 3000, 45000), "carol", "platform", "s-2"),
]


@dataclass
class Home:
    data_dir: Path
    database_url: str | None

    def cli(self, *args: str) -> Result:
        environment = {"COLUMNS": "250"}
        if self.database_url:
            environment["CHAMBERLAIN_DATABASE_URL"] = self.database_url
        return CliRunner().invoke(app, [*args, "--data-dir", str(self.data_dir)], env=environment)

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.exit_code == 0, result.output
        return result


def one_line(result: Result) -> str:
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", result.output).split())


def recent(now: datetime) -> datetime:
    """A time in the last hour that is also in this calendar month."""
    return now - min(timedelta(hours=1), (now - month_start(now)) / 2)


async def _seed(home: Home) -> None:
    settings = load_settings(data_dir=home.data_dir, overrides={"database_url": home.database_url}, environ={})
    async with opened_database(settings.effective_database_url) as database:
        users = UserRepository(database, settings.tenant)
        ids = {name: (await users.add(name, None, ("developer",))).id for name in ("bob", "carol")}
        recorder = UsageRecorder(database, commit_delay=0)
        await recorder.start()
        at = recent(datetime.now(UTC))
        for model, usage, user, team, session in REQUESTS:
            cost = PRICING.cost(model, usage, at=at)
            recorder.record(
                UsageRecord(settings.tenant, ids[user], team, "claude-code", model, None, usage, cost, 900.0, at,
                            "proxy", session_id=session)
            )  # fmt: skip
        await recorder.aclose()


def _seeded_home(data_dir: Path, database_url: str | None) -> Home:
    """The same steps on either backend: `chamberlain init`, then the users and REQUESTS written to the store."""
    home = Home(data_dir, database_url)
    home.ok("init")
    asyncio.run(_seed(home))
    return home


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def home(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    data_dir = tmp_path_factory.mktemp(f"cost-cli-{request.param}")
    if request.param == "sqlite":
        yield _seeded_home(data_dir, None)
        return
    require_postgres()
    with postgres_database() as url:
        yield _seeded_home(data_dir, url)


def test_report_by_model(home: Home) -> None:
    text = one_line(home.ok("cost", "report", "--by", "model", "--period", "24h"))
    assert "cost by model, 24h" in text
    assert "claude-opus-4-6 1 12 1,024 12,288 0 $0.1609 $0.1609" in text
    assert "claude-opus-4-5-20251101 1 1,500 800 3,000 45,000 $0.0688" in text
    assert "claude-sonnet-4-5-20250929 1 4 142 1,867 31,212 $0.0185" in text
    assert "Total 3" in text
    assert "$0.2481" in text  # 0.01850685 + 0.16086 + 0.06875 = 0.24811685


def test_report_by_user_shows_names(home: Home) -> None:
    text = one_line(home.ok("cost", "report", "--by", "user", "--period", "7d"))
    assert re.search(r"bob 2 .* \$0\.1794", text)  # 0.01850685 + 0.16086
    assert re.search(r"carol 1 .* \$0\.0688", text)


def test_team_summary_as_csv(home: Home) -> None:
    result = home.ok("cost", "report", "--team-summary", "--period", "month", "--export", "csv")
    rows = {row["team"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert set(rows) == {"payments", "platform"}
    assert rows["payments"]["list_cost_usd"] == "0.179367"  # 0.17936685 to the micro-dollar
    assert rows["payments"]["users"] == "1"
    assert rows["payments"]["top_model"] == "claude-opus-4-6"
    assert float(rows["platform"]["cache_hit_rate"]) == pytest.approx(45000 / 49500)


def test_report_as_json_to_a_file(home: Home, tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    home.ok("cost", "report", "--by", "team", "--export", "json", "--output", str(path))
    document = json.loads(path.read_text())
    assert document["report"] == "cost"
    assert document["total"]["list_cost_usd"] == "0.248117"
    assert [group["key"] for group in document["groups"]] == ["payments", "platform"]


def test_forecast_exits_3_when_the_projection_reaches_the_threshold(home: Home) -> None:
    alerted = home.cli("cost", "forecast", "--alert-at", "0.0001", "--format", "json")
    assert alerted.exit_code == 3, alerted.output
    document = json.loads(alerted.stdout)
    assert document["alert"] is True
    assert Decimal(document["spend_to_date_usd"]) == Decimal("0.248117")
    quiet = home.ok("cost", "forecast", "--alert-at", "1000000", "--by", "team")
    assert "projected net" in quiet.output
    assert "payments" in quiet.output


def test_efficiency_against_last_month(home: Home) -> None:
    text = one_line(home.ok("cost", "efficiency", "--compare", "last-month"))
    assert "Cache hit rate" in text
    assert "Cost per session" in text
    assert "claude-opus-4-6" in text
    document = json.loads(home.ok("cost", "efficiency", "--format", "json").stdout)
    assert document["current"]["sessions"] == 2
    assert document["current"]["users"] == 2
    assert document["previous"]["requests"] == 0


def test_mistakes_are_one_line_never_a_traceback(home: Home, tmp_path: Path) -> None:
    unknown = home.cli("cost", "report", "--tenant", "nosuch")
    assert unknown.exit_code == 1
    assert "no tenant 'nosuch'" in unknown.output
    bare = Home(tmp_path / "empty", None).cli("cost", "forecast")
    assert bare.exit_code == 1
    assert "chamberlain init" in bare.output
    wrong = home.cli("cost", "report", "--period", "fortnight")
    assert wrong.exit_code == 2
    assert "fortnight" in wrong.output
    for result in (unknown, bare, wrong):
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_invalid_pricing_file_is_named_with_its_line(home: Home, tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  claude-opus-4-6:\n    prices:\n      - {input: 5, output: lots}\n")
    config = tmp_path / "chamberlain.yaml"
    config.write_text(f"llm:\n  pricing_file: {prices}\n")
    result = home.cli("cost", "report", "--config", str(config))
    assert result.exit_code == 1
    assert f"{prices}:4: setting 'models.claude-opus-4-6.prices.0.output'" in one_line(result)
    assert "Traceback" not in result.output
