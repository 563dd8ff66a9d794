"""Claude Code's telemetry through the whole gateway: the official OTLP/HTTP exporter posts Claude Code's metric
names to {issuer}/v1/metrics with a token for the LLM resource; the usage lands in the store as the caller's, and
counts against the caller's budget, so the next proxied request that would pass it is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from sqlalchemy import select

from chamberlain.store.schema import usage_records
from chamberlain.store.users import UserRepository
from tests.support.llm_gateway import LlmGateway, llm_gateway, store_api_keys
from tests.support.server import RunningServer
from tests.support.tenants import access_token, add_tenant

OTHER_TENANT = "otlp-other"
MODEL = "claude-sonnet-4-5-20250929"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    budgets = [{"scope": "user", "limit_usd": 1, "alert_at": []}]  # $1 a month for each user
    with llm_gateway(tmp_path_factory.mktemp("otlp-gateway"), budgets=budgets) as running:
        yield running


def export(url: str, credential: str, output_tokens: int) -> MetricExportResult:
    """One Claude Code API request's counters, sent by the official SDK and exporter (protobuf, gzip)."""
    reader = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "claude-code"}))
    meter = provider.get_meter("com.anthropic.claude_code")
    attributes = {"model": MODEL, "session.id": "session-9", "user.email": "not.me@example.com"}
    meter.create_counter("claude_code.token.usage", unit="tokens").add(output_tokens, {**attributes, "type": "output"})
    meter.create_counter("claude_code.cost.usage", unit="USD").add(output_tokens * 15 / 1e6, attributes)
    exporter = OTLPMetricExporter(
        endpoint=url, headers={"Authorization": f"Bearer {credential}"}, compression=Compression.Gzip, timeout=10
    )
    try:
        data = reader.get_metrics_data()
        assert data is not None
        return exporter.export(data)
    finally:
        exporter.shutdown()
        provider.shutdown()


async def telemetry_rows(server: RunningServer, user_id: str, within: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    async with server.engine() as database:
        while True:
            async with database.connect() as connection:
                query = select(usage_records).where(
                    usage_records.c.user_id == user_id, usage_records.c.source == "telemetry"
                )
                rows = [dict(row) for row in (await connection.execute(query)).mappings().all()]
            if rows or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.05)


async def test_telemetry_is_the_callers_usage_and_counts_against_their_budget(gateway: LlmGateway) -> None:
    server = gateway.server
    await store_api_keys(server)
    await add_tenant(server, OTHER_TENANT, users={"tess": ("developer",)})
    async with server.engine() as database:
        alice = await UserRepository(database, server.settings.tenant).get_by_username("alice")
    assert alice is not None
    token = await access_token(server, server.settings.tenant, "alice", gateway.resource)
    metrics_url = f"{server.base_url}/v1/metrics"

    # 66,600 output tokens x $15 per million = $0.999 of alice's $1.
    assert await asyncio.to_thread(export, metrics_url, token, 66_600) == MetricExportResult.SUCCESS
    (row,) = await telemetry_rows(server, alice.id)
    assert (row["model"], row["output_tokens"], row["session_id"]) == (MODEL, 66_600, "session-9")
    assert Decimal(row["cost_nanousd"]) / 10**9 == Decimal("0.999")

    request = {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        headers = {"authorization": f"Bearer {token}", "anthropic-version": "2023-06-01"}
        refused = await http.post("/v1/messages", json=request, headers=headers)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["type"] == "invalid_request_error"
        assert "monthly budget of USD 1.00 for you" in refused.json()["error"]["message"]
        assert refused.headers["x-should-retry"] == "false"
        assert int(refused.headers["retry-after"]) > 0

        # The same token is no good at another tenant's endpoint, nor an MCP token at this one.
        foreign = await http.post(
            f"/t/{OTHER_TENANT}/v1/metrics",
            content=b"{}",
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
        assert foreign.status_code == 401
        assert foreign.headers["www-authenticate"].startswith(
            f'Bearer resource_metadata="{server.base_url}/.well-known/oauth-protected-resource/t/{OTHER_TENANT}/llm"'
        )
        assert foreign.json()["message"] == "the access token was issued by someone else"
    mcp_token = await access_token(server, server.settings.tenant, "alice", server.resource())
    assert await asyncio.to_thread(export, metrics_url, mcp_token, 10) == MetricExportResult.FAILURE
    assert len(await telemetry_rows(server, alice.id, within=0)) == 1
