"""Acceptance (issue 9, item 3): Claude Code's metric names sent by the official OpenTelemetry SDK and its OTLP/HTTP
exporter (opentelemetry-exporter-otlp-proto-http, protobuf, gzip) reach the usage store and the budgets.

The endpoint runs as it is mounted in the gateway (an ASGI app under uvicorn on 127.0.0.1), with access tokens from
a real key ring for the LLM resource, a real UsageRecorder writing to a migrated database (SQLite and PostgreSQL),
and a BudgetGuard listening to that recorder. The tenant and its state are the test's own: what the gateway adds
around it (the path's tenant, virtual keys) is llm_ingestion's, exercised by the gateway's own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Scope

from chamberlain.cost.budgets import BudgetExceeded, BudgetGuard, BudgetRule, Reservation
from chamberlain.cost.pricing import Pricing
from chamberlain.cost.recorder import UsageRecorder
from chamberlain.cost.spend import Scope as BudgetScope
from chamberlain.cost.teams import team_of
from chamberlain.crypto.master_key import MasterKey
from chamberlain.crypto.signing_keys import KeyRing, generate_signing_key, load_signing_key
from chamberlain.gateway.upstream_credentials import user_id_of
from chamberlain.oauth.access_tokens import AccessTokenIssuer, AccessTokenVerifier
from chamberlain.oauth.revocation_list import RevocationList
from chamberlain.store.database import Database
from chamberlain.store.usage import UsageRepository
from chamberlain.telemetry.claude_code import Caller
from chamberlain.telemetry.otlp import Ingestion, OtlpMetricsEndpoint
from tests.support.databases import migrated_database_url, opened_database
from tests.support.server import free_port

TENANT = "default"
ISSUER = "http://127.0.0.1:8080"
RESOURCE = f"{ISSUER}/llm"
TEAMS = {"platform": ("developer",)}
MODEL = "claude-sonnet-4-5-20250929"
MASTER_KEY = MasterKey(os.urandom(32))


def key_ring() -> KeyRing:
    generated = generate_signing_key("ES256", MASTER_KEY)
    key = load_signing_key(
        kid=generated.kid,
        alg=generated.alg,
        public_jwk=generated.public_jwk,
        encrypted_private_key=generated.encrypted_private_key,
        master_key=MASTER_KEY,
        created_at=time.time(),
        retired_at=None,
        expires_at=None,
    )
    return KeyRing([key])


RING = key_ring()
ISSUE = AccessTokenIssuer(ISSUER, lambda: RING, 600)


def token(audience: str = RESOURCE, subject: str = "alice") -> str:
    issued = ISSUE.issue(
        subject=subject,
        client_id="claude-code",
        audience=audience,
        scopes=frozenset(),
        tenant=TENANT,
        grant_id="grant-1",
        auth_time=time.time(),
        roles=("developer",),
    )
    return issued.token


class StoreSpend:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def spend(
        self, tenant: str, scope: BudgetScope, subject: str | None, start: datetime, end: datetime
    ) -> Decimal:
        repository = UsageRepository(self.database, tenant)
        return await repository.spend(start, end, user=subject if scope == "user" else None)


@dataclass
class Gateway:
    url: str
    recorder: UsageRecorder
    guard: BudgetGuard
    database: Database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "otlp-ingest")


@contextlib.asynccontextmanager
async def serving(database: Database, **options: Any) -> AsyncIterator[Gateway]:
    recorder = UsageRecorder(database, commit_delay=0)
    await recorder.start()
    guard = BudgetGuard(StoreSpend(database))
    recorder.subscribe(guard.record_listener)
    verifier = AccessTokenVerifier(ISSUER, lambda: RING, RevocationList())
    pricing = Pricing.load()

    def authenticate(scope: Scope, credential: str) -> Ingestion:
        claims = verifier.verify(credential, audience=RESOURCE)
        caller = Caller(TENANT, user_id_of(claims), team_of(claims.roles, TEAMS), claims.client_id)
        return Ingestion(caller, recorder.record, pricing)

    endpoint = OtlpMetricsEndpoint(authenticate, challenge=lambda scope: 'Bearer realm="llm"', **options)
    app = Starlette(routes=[Route("/v1/metrics", endpoint, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield Gateway(f"http://127.0.0.1:{port}/v1/metrics", recorder, guard, database)
    finally:
        server.should_exit = True
        await task
        await guard.aclose()
        await recorder.aclose()


class ClaudeCode:
    """Claude Code's two usage counters on the official SDK (meter com.anthropic.claude_code), collected on demand
    and sent by the official OTLP/HTTP exporter, as Claude Code's periodic reader would every minute."""

    def __init__(self, url: str, credential: str, temporality: AggregationTemporality) -> None:
        self.reader = InMemoryMetricReader(preferred_temporality={Counter: temporality})
        resource = Resource.create({"service.name": "claude-code", "service.version": "2.1.0"})
        self.provider = MeterProvider(metric_readers=[self.reader], resource=resource)
        meter = self.provider.get_meter("com.anthropic.claude_code")
        self.cost = meter.create_counter("claude_code.cost.usage", unit="USD")
        self.tokens = meter.create_counter("claude_code.token.usage", unit="tokens")
        self.sessions = meter.create_counter("claude_code.session.count")
        self.exporter = OTLPMetricExporter(
            endpoint=url, headers={"Authorization": f"Bearer {credential}"}, compression=Compression.Gzip, timeout=10
        )
        self.sent: list[Any] = []

    def api_request(self, input_tokens: int, output_tokens: int, cache_read: int, cost: float) -> None:
        common = {
            "model": MODEL,
            "session.id": "session-1",
            "user.email": "someone.else@example.com",  # not who is counted: the token's user is
            "user.account_uuid": "acct-1",
            "organization.id": "org-1",
            "terminal.type": "tmux",
            "query_source": "main",
        }
        for kind, count in (("input", input_tokens), ("output", output_tokens), ("cacheRead", cache_read)):
            self.tokens.add(count, {**common, "type": kind})
        self.cost.add(cost, common)

    async def export(self) -> MetricExportResult:
        data = self.reader.get_metrics_data()
        assert data is not None
        self.sent.append(data)
        return await asyncio.to_thread(self.exporter.export, data)

    async def resend_last(self) -> MetricExportResult:
        return await asyncio.to_thread(self.exporter.export, self.sent[-1])

    def close(self) -> None:
        self.exporter.shutdown()
        self.provider.shutdown()


async def usage_of(database: Database, user: str, by: tuple[Any, ...] = ()) -> Any:
    now = datetime.now(UTC)
    (total,) = await UsageRepository(database, TENANT).totals(
        now - timedelta(days=1), now + timedelta(minutes=1), by, where={"user": user}
    )
    return total


def someone() -> str:
    """A user of the test's own: the module's tests share one database."""
    return f"user-{os.urandom(3).hex()}"


@pytest.mark.parametrize("temporality", [AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE])
async def test_claude_code_metrics_from_the_official_exporter_become_usage_records(
    database_url: str, temporality: AggregationTemporality
) -> None:
    user = someone()
    async with opened_database(database_url) as database, serving(database) as gateway:
        claude = ClaudeCode(gateway.url, token(subject=user), temporality)
        try:
            claude.sessions.add(1, {"session.id": "session-1"})
            claude.api_request(1000, 500, 2000, 0.0111)
            assert await claude.export() == MetricExportResult.SUCCESS
            claude.api_request(3000, 0, 0, 0.009)
            assert await claude.export() == MetricExportResult.SUCCESS
            assert await claude.resend_last() == MetricExportResult.SUCCESS  # at-least-once: counted once
        finally:
            claude.close()
        await gateway.recorder.drained()
        total = await usage_of(database, user)
        # Tokens exactly as Claude Code counted them, priced at this gateway's list prices:
        # 4000 x $3 + 500 x $15 + 2000 x $0.30 per million = $0.0201.
        assert (total.input_tokens, total.output_tokens, total.cache_read_input_tokens) == (4000, 500, 2000)
        assert total.cost_usd == Decimal("0.0201")
        assert total.requests == 2
        row = await usage_of(database, user, ("user", "team", "client", "source", "model"))
        assert row.key == (user, "platform", "claude-code", "telemetry", MODEL)


async def test_telemetry_spend_counts_against_the_users_budget(database_url: str) -> None:
    rules = [BudgetRule(scope="user", limit_usd=Decimal("1"), alert_at=())]
    async with opened_database(database_url) as database, serving(database) as gateway:
        subject = someone()
        before = await gateway.guard.reserve(TENANT, rules, user=subject, team=None, estimate_usd=Decimal("0.5"))
        assert isinstance(before, Reservation)
        await gateway.guard.settle(before, Decimal(0))
        claude = ClaudeCode(gateway.url, token(subject=subject), AggregationTemporality.DELTA)
        try:
            claude.api_request(0, 40_000, 0, 0.6)  # 40,000 output tokens x $15 per million = $0.60
            assert await claude.export() == MetricExportResult.SUCCESS
        finally:
            claude.close()
        await gateway.recorder.drained()
        await gateway.guard.drained()
        after = await gateway.guard.reserve(TENANT, rules, user=subject, team=None, estimate_usd=Decimal("0.5"))
        assert isinstance(after, BudgetExceeded)
        assert after.reason == "too_large"


async def test_the_exporter_is_refused_without_a_token_for_the_llm_resource(database_url: str) -> None:
    async with opened_database(database_url) as database, serving(database) as gateway:
        for credential in (token(audience=f"{ISSUER}/mcp/demo"), "not-a-token"):
            claude = ClaudeCode(gateway.url, credential, AggregationTemporality.DELTA)
            try:
                claude.api_request(1, 1, 1, 0.01)
                assert await claude.export() == MetricExportResult.FAILURE  # 401: not retried
            finally:
                claude.close()


async def test_the_wire_rules_over_real_http(database_url: str) -> None:
    # The official example request (opentelemetry-proto examples/metrics.json), cut to what matters here.
    example = {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
                "scopeMetrics": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "metrics": [
                            {
                                "name": "my.counter",
                                "unit": "1",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "asDouble": 5,
                                            "startTimeUnixNano": 1544712660300000000,
                                            "timeUnixNano": 1544712660300000000,
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "claude_code.token.usage",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [{"asInt": "7", "timeUnixNano": str(time.time_ns())}],
                                },
                            },
                        ],
                    }
                ],
            }
        ]
    }
    async with (
        opened_database(database_url) as database,
        serving(database, max_body_bytes=64 * 1024) as gateway,
        httpx.AsyncClient(timeout=10) as http,
    ):
        bearer = {"authorization": f"Bearer {token()}"}
        as_json = {**bearer, "content-type": "application/json"}
        answer = await http.post(gateway.url, content=json.dumps(example), headers=as_json)
        assert (answer.status_code, answer.headers["content-type"]) == (200, "application/json")
        assert answer.json() == {
            "partialSuccess": {
                "rejectedDataPoints": "1",
                "errorMessage": "claude_code.token.usage: a data point without the model attribute",
            }
        }
        gzipped = await http.post(
            gateway.url, content=gzip.compress(b"{}"), headers={**as_json, "content-encoding": "gzip"}
        )
        assert (gzipped.status_code, gzipped.json()) == (200, {})
        protobuf = await http.post(
            gateway.url, content=b"", headers={**bearer, "content-type": "application/x-protobuf"}
        )
        assert protobuf.status_code == 200
        assert protobuf.headers["content-type"] == "application/x-protobuf"
        assert ExportMetricsServiceResponse.FromString(protobuf.content) == ExportMetricsServiceResponse()

        async def refused(status: int, body: bytes, headers: dict[str, str]) -> httpx.Response:
            answer = await http.post(gateway.url, content=body, headers=headers)
            assert answer.status_code == status, answer.text
            assert "Traceback" not in answer.text
            return answer

        unauthenticated = await refused(401, b"{}", {"content-type": "application/json"})
        assert unauthenticated.headers["www-authenticate"] == 'Bearer realm="llm"'
        assert unauthenticated.json() == {
            "message": "an access token or API key is required (Authorization: Bearer, or x-api-key)"
        }
        await refused(401, b"{}", {"content-type": "application/json", "authorization": "Basic YTpi"})
        await refused(401, b"{}", {"content-type": "application/json", "x-api-key": token(audience=ISSUER)})
        assert (await refused(200, b"{}", {"content-type": "application/json", "x-api-key": token()})).json() == {}
        wrong_type = await refused(415, b"{}", {**bearer, "content-type": "text/plain"})
        assert wrong_type.headers["content-type"] == "application/x-protobuf"
        await refused(415, b"{}", {**as_json, "content-encoding": "br"})
        await refused(413, b" " * (64 * 1024 + 1), as_json)
        await refused(413, gzip.compress(b" " * (256 * 1024)), {**as_json, "content-encoding": "gzip"})
        await refused(400, b"{", as_json)
        await refused(400, b"\x0a\xff", {**bearer, "content-type": "application/x-protobuf"})
        bad_enum = json.dumps(
            {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"sum": {"aggregationTemporality": "DELTA"}}]}]}]}
        )
        assert "integers" in (await refused(400, bad_enum.encode(), as_json)).json()["message"]
