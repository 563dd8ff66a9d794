"""/cost in the admin API through the real HTTP stack, on SQLite and PostgreSQL: administrators and audit readers
read the reports (and audit readers nothing else, and nothing unsafe), other users and anonymous callers are refused
with RFC 9457 problems, bad parameters are 422 problems, CSV comes as text/csv, and a tenant's reports hold only
its own records. Figures are the fixture requests of tests/unit/test_cost_usage.py, priced by hand there."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from chamberlain.cost.pricing import Pricing
from chamberlain.cost.recorder import UsageRecorder
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.reports import month_start
from chamberlain.cost.usage import TokenUsage
from chamberlain.store.users import UserRepository
from tests.conftest import require_postgres
from tests.support.server import RunningServer, postgres_database, random_name, running_server

PROBLEM = "application/problem+json"
PASSWORD = "a long enough password"
PRICING = Pricing.load()
ROLES = {
    "enterprise_roles": {
        "admin": {"mcp_servers": "*", "data_classification_access": "*", "administrative_functions": True},
        "developer": {"mcp_servers": ["demo"]},
        "auditor": {"mcp_servers": [], "audit_access": "read"},
    }
}
REQUESTS = [
    ("claude-sonnet-4-5-20250929", TokenUsage(4, 142, 1867, 31212), "payments"),  # $0.01850685
    ("claude-opus-4-6", TokenUsage(12, 1024, 12288, 0, 10240, 2), "payments"),  # $0.16086
    ("claude-opus-4-5-20251101", TokenUsage(1500, 800, 3000, 45000), "platform"),  # $0.06875
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir: Path = tmp_path_factory.mktemp(f"cost-admin-{request.param}")
    if request.param == "sqlite":
        with running_server(data_dir, roles=ROLES) as running:
            yield running
        return
    require_postgres()
    with postgres_database() as url, running_server(data_dir, url, roles=ROLES) as running:
        yield running


def mint(server: RunningServer, subject: str, tenant_id: str | None = None) -> str:
    tenant = server.state.tenant(tenant_id or server.settings.tenant)
    assert tenant is not None
    return tenant.token_issuer.issue(
        subject=subject,
        client_id="test",
        audience=tenant.admin_resource,
        scopes=frozenset(),
        tenant=tenant.id,
        grant_id=None,
        auth_time=None,
    ).token


def api_url(server: RunningServer, tenant_id: str | None = None) -> str:
    return server.base_url + (f"/t/{tenant_id}" if tenant_id else "") + "/admin/api"


async def seed(server: RunningServer, tenant: str, requests: list[tuple[str, TokenUsage, str]]) -> None:
    now = datetime.now(UTC)
    at = now - min(timedelta(hours=1), (now - month_start(now)) / 2)  # in the last hour and in this month
    async with server.engine() as database:
        recorder = UsageRecorder(database, commit_delay=0)
        await recorder.start()
        for model, usage, team in requests:
            cost = PRICING.cost(model, usage, at=at)
            recorder.record(
                UsageRecord(tenant, "u-1", team, "claude-code", model, None, usage, cost, None, at, "proxy")
            )
        await recorder.aclose()


async def client_as(server: RunningServer, username: str, roles: tuple[str, ...]) -> httpx.AsyncClient:
    async with server.engine() as database:
        user = await UserRepository(database, server.settings.tenant).add(username, None, roles)
    headers = {"Authorization": f"Bearer {mint(server, user.id)}"}
    return httpx.AsyncClient(base_url=api_url(server), headers=headers, timeout=30)


@pytest.fixture(scope="module")
async def seeded(server: RunningServer) -> RunningServer:
    await seed(server, server.settings.tenant, REQUESTS)
    return server


@pytest.fixture
async def admin(seeded: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_as(seeded, random_name("admin"), ("admin",)) as client:
        yield client


@pytest.fixture
async def auditor(seeded: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_as(seeded, random_name("auditor"), ("auditor",)) as client:
        yield client


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "Traceback" not in response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_an_administrator_reads_the_report(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/cost/report", params={"by": "model", "period": "24h"})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    report = response.json()
    assert report["by"] == "model"
    assert report["total"]["list_cost_usd"] == "0.248117"  # 0.01850685 + 0.16086 + 0.06875
    assert report["total"]["requests"] == 3
    assert {group["key"]: group["list_cost_usd"] for group in report["groups"]} == {
        "claude-opus-4-6": "0.160860",
        "claude-opus-4-5-20251101": "0.068750",
        "claude-sonnet-4-5-20250929": "0.018507",
    }


async def test_csv_is_text_csv(admin: httpx.AsyncClient) -> None:
    response = await admin.get("/cost/team-summary", params={"format": "csv", "period": "7d"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = {row["team"]: row for row in csv.DictReader(io.StringIO(response.text))}
    assert rows["payments"]["list_cost_usd"] == "0.179367"
    assert rows["platform"]["top_model"] == "claude-opus-4-5-20251101"
    by_team = await admin.get("/cost/report", params={"by": "team", "format": "csv"})
    assert [row["key"] for row in csv.DictReader(io.StringIO(by_team.text))] == ["payments", "platform"]


async def test_forecast_and_efficiency(admin: httpx.AsyncClient) -> None:
    forecast = (await admin.get("/cost/forecast", params={"alert_at": "0.1", "by": "team"})).json()
    assert forecast["spend_to_date_usd"] == "0.248117"
    assert forecast["alert"] is True
    assert [group["key"] for group in forecast["groups"]] == ["payments", "platform"]
    assert (await admin.get("/cost/forecast", params={"alert_at": "5000"})).json()["alert"] is False
    efficiency = (await admin.get("/cost/efficiency", params={"compare": "previous", "period": "7d"})).json()
    assert efficiency["current"]["requests"] == 3
    assert efficiency["current"]["cache_hit_rate"] == pytest.approx(76212 / (1516 + 17155 + 76212))
    assert efficiency["previous"]["requests"] == 0


async def test_an_audit_reader_reads_cost_and_nothing_else(auditor: httpx.AsyncClient) -> None:
    assert (await auditor.get("/cost/report")).status_code == 200
    assert (await auditor.get("/cost/forecast")).status_code == 200
    assert (await auditor.get("/cost/efficiency")).status_code == 200
    for method, path in (("GET", "/users"), ("GET", "/roles"), ("POST", "/users"), ("POST", "/cost/report")):
        assert_problem(await auditor.request(method, path, json={}), 403)


async def test_others_are_refused(seeded: RunningServer) -> None:
    async with await client_as(seeded, random_name("dev"), ("developer",)) as developer:
        body = assert_problem(await developer.get("/cost/report"), 403)
        assert "administrative functions" in body["detail"]
    async with httpx.AsyncClient(base_url=api_url(seeded), timeout=30) as anonymous:
        response = await anonymous.get("/cost/report")
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "params",
    [{"by": "client"}, {"period": "fortnight"}, {"format": "xml"}],
    ids=["by", "period", "format"],
)
async def test_bad_parameters_are_problems(admin: httpx.AsyncClient, params: dict[str, str]) -> None:
    body = assert_problem(await admin.get("/cost/report", params=params), 422)
    assert body["errors"][0]["location"] == "query"


async def test_bad_forecast_parameters_are_problems(admin: httpx.AsyncClient) -> None:
    assert_problem(await admin.get("/cost/forecast", params={"alert_at": "-1"}), 422)
    assert_problem(await admin.get("/cost/forecast", params={"alert_at": "lots"}), 422)
    assert_problem(await admin.get("/cost/efficiency", params={"compare": "yesterday"}), 422)


async def test_a_tenant_reads_only_its_own_records(seeded: RunningServer, admin: httpx.AsyncClient) -> None:
    tenant_id = random_name("t")
    root_user = await client_as(seeded, random_name("root"), ("admin",))
    async with root_user:
        created = await root_user.post(
            "/tenants", json={"id": tenant_id, "initial_admin": {"username": "root", "password": PASSWORD}}
        )
    assert created.status_code == 201, created.text
    await seed(seeded, tenant_id, [("claude-haiku-4-5", TokenUsage(1000, 100), "ops")])  # $0.0015
    headers = {"Authorization": f"Bearer {mint(seeded, created.json()['initial_admin_id'], tenant_id)}"}
    async with httpx.AsyncClient(base_url=api_url(seeded, tenant_id), headers=headers, timeout=30) as other:
        theirs = (await other.get("/cost/report", params={"by": "team"})).json()
        assert theirs["tenant"] == tenant_id
        assert [(group["key"], group["list_cost_usd"]) for group in theirs["groups"]] == [("ops", "0.001500")]
        # Their token is refused by the default tenant's API; the default tenant's report never counts theirs.
        async with httpx.AsyncClient(base_url=api_url(seeded), headers=headers, timeout=30) as crossing:
            assert_problem(await crossing.get("/cost/report"), 401)
    mine = (await admin.get("/cost/report", params={"by": "team"})).json()
    assert "ops" not in [group["key"] for group in mine["groups"]]
    assert mine["total"]["list_cost_usd"] == "0.248117"
