"""Acceptance (issue 5, item 4): rate limits hold across two gateway processes sharing one store and one Redis.

Two `chamberlain serve` processes (separate OS processes, each with its own event loop and RateLimiter) run on one
data directory and one PostgreSQL database, as replicas behind a load balancer do: one public issuer, so a token from
either is good at both. chamberlain.yaml limits every user of the default tenant to 20 requests a minute and points
both at Redis on 127.0.0.1:6379. Concurrent `tools/call` requests of one user go through both processes at once:
the total admitted must stay within the limit plus one per process (in fact the moving window is exact), and every
refusal is a 429 with Retry-After and a JSON-RPC error carrying the request's id.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.support.mcp_sdk import jwt_claims
from tests.support.redis import REDIS_URL, delete_prefixed, require_redis
from tests.support.replicas import call_tool, prepare_store, replicas, require_postgres, user_token
from tests.support.server import free_port, postgres_database

pytestmark = pytest.mark.postgres

PER_USER = 20
PROCESSES = 2
REQUESTS_PER_PROCESS = 45  # 90 in all, well over the limit, all within the minute
RATE_LIMITED = -32005  # gateway/jsonrpc.py


async def load(base_urls: list[str], token: str) -> list[tuple[int, int, httpx.Response]]:
    """Every process gets REQUESTS_PER_PROCESS requests, all in flight together; (process, id, response) each."""
    limits = httpx.Limits(max_connections=REQUESTS_PER_PROCESS, max_keepalive_connections=REQUESTS_PER_PROCESS)
    clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url in base_urls]
    try:
        ids = [
            (index, index * 1000 + number) for index in range(len(clients)) for number in range(REQUESTS_PER_PROCESS)
        ]
        # Interleaved, so both processes are busy at the same moment rather than one after the other.
        ids.sort(key=lambda pair: (pair[1] % 1000, pair[0]))
        responses = await asyncio.gather(*(call_tool(clients[index], token, request_id) for index, request_id in ids))
        return [(index, request_id, response) for (index, request_id), response in zip(ids, responses, strict=True)]
    finally:
        for client in clients:
            await client.aclose()


def test_rate_limits_hold_across_two_gateway_processes_sharing_redis(tmp_path: Path) -> None:
    require_redis()
    require_postgres()
    ports = [free_port() for _ in range(PROCESSES)]
    issuer = f"http://127.0.0.1:{ports[0]}"  # the public URL both replicas serve (a load balancer's, in production)
    with postgres_database() as database_url:
        config = {
            "issuer": issuer,
            "redis_url": REDIS_URL,
            "tenants": {"default": {"rate_limits": {"per_user": f"{PER_USER}/minute"}}},
        }
        prepare_store(tmp_path, database_url, config=config)
        with replicas(tmp_path, ports) as base_urls:
            token = asyncio.run(user_token(base_urls[0], f"{issuer}/mcp/demo"))
            subject = jwt_claims(token)["sub"]
            try:
                results = asyncio.run(load(base_urls, token))
            finally:
                delete_prefixed(REDIS_URL, f"chamberlain:LIMITER/user/default/{subject}/")

    statuses = [response.status_code for _, _, response in results]
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}, f"only admissions and refusals expected, got {sorted(set(statuses))}"
    assert admitted <= PER_USER + PROCESSES, f"{admitted} admitted against a limit of {PER_USER} (+1 per process)"
    # Not merely "few": with 90 requests inside one minute the whole budget is used, and no more than it.
    assert admitted >= PER_USER, f"only {admitted} of {PER_USER} admitted: requests were refused without cause"
    for process in range(PROCESSES):
        assert any(index == process for index, _, _ in results), "the load went through every process"
    for _, request_id, response in results:
        if response.status_code != 429:
            continue
        retry_after = response.headers.get("retry-after", "")
        assert retry_after.isdigit(), f"Retry-After must be delay-seconds (RFC 9110 §10.2.3): {retry_after!r}"
        assert 1 <= int(retry_after) <= 61
        document = response.json()
        assert document["jsonrpc"] == "2.0"
        assert document["id"] == request_id, "the refusal answers the very request it refuses"
        assert document["error"]["code"] == RATE_LIMITED
        assert "per user" in document["error"]["message"]
