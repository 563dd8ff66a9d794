"""Acceptance (issue 10, items 3 and 5): three replicas on one PostgreSQL database and one Redis act as one gateway.

Three `chamberlain serve` processes (separate OS processes, as behind a load balancer) share a data directory, a
PostgreSQL database and Redis on loopback, and serve one public issuer. Then:
- a token issued by one replica is accepted by the others (tools/call through /mcp/demo);
- a grant revoked at one replica (RFC 7009 revocation of its refresh token) is refused at the others within one
  second of the revocation's answer: access tokens are JWTs checked without the store, against each replica's
  in-memory revocation list, which Redis pub/sub updates at once (oauth/revocation_fanout.py; the store poll of
  state.py is the fallback);
- a per-user rate limit holds in total across the three (counted in Redis);
- an LLM budget holds in total across the three (held in Redis): at most its room, plus one per process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from chamberlain.cost.budgets import micros_up, usd
from chamberlain.cost.pricing import Pricing
from chamberlain.llm.messages import BYTES_PER_TOKEN
from tests.support.anthropic_upstream import Answer, AnthropicUpstream, running_anthropic_upstream
from tests.support.llm_gateway import ROLES, TEAM_KEY, UPSTREAM_KEY, llm_settings, new_request_id
from tests.support.mcp_sdk import jwt_claims
from tests.support.redis import REDIS_URL, delete_prefixed, require_redis
from tests.support.replicas import (
    call_tool,
    prepare_store,
    replicas,
    require_postgres,
    store_llm_api_keys,
    user_tokens,
)
from tests.support.server import USER_PASSWORD, free_port, postgres_database

pytestmark = pytest.mark.postgres

REPLICAS = 3
PER_USER = 60  # requests a minute for each user, across the replicas
RATE_LIMITED = -32005  # gateway/jsonrpc.py
REVOCATION_BOUND = 1.0  # seconds from the revocation's answer to its refusal everywhere (issue 10)
BUDGET_ROOM = 10  # estimates of HAIKU_REQUEST the user's monthly budget has room for
HAIKU_REQUEST = orjson.dumps(
    {"model": "claude-haiku-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Weather?"}]}
)
# One user per test: each has its own rate-limit window and budget.
TOKEN_USER, REVOKED_USER, LIMITED_USER, BUDGET_USER = "tina", "rex", "lima", "bud"


@dataclass
class Cluster:
    issuer: str  # the one public URL (a load balancer's in production): replica 0's
    base_urls: list[str]
    upstream: AnthropicUpstream

    def resource(self, path: str = "/mcp/demo") -> str:
        return f"{self.issuer}{path}"


def budget_limit() -> str:
    estimate = Pricing.load().estimate(
        "claude-haiku-4-5", len(HAIKU_REQUEST) // BYTES_PER_TOKEN, 1024, at=datetime.now(UTC)
    )
    return str(usd(micros_up(estimate) * BUDGET_ROOM))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_redis()
    require_postgres()
    data_dir = tmp_path_factory.mktemp("replicas")
    ports = [free_port() for _ in range(REPLICAS)]
    issuer = f"http://127.0.0.1:{ports[0]}"
    with running_anthropic_upstream() as upstream, postgres_database() as database_url:
        config: dict[str, Any] = {
            "issuer": issuer,
            "redis_url": REDIS_URL,
            "roles": ROLES,
            "llm": llm_settings(upstream),
            "budgets": [{"scope": "user", "period": "month", "limit_usd": budget_limit(), "alert_at": [1.0]}],
            "tenants": {"default": {"rate_limits": {"per_user": f"{PER_USER}/minute"}}},
        }
        users = [
            (name, USER_PASSWORD, ("developer",)) for name in (TOKEN_USER, REVOKED_USER, LIMITED_USER, BUDGET_USER)
        ]
        prepare_store(data_dir, database_url, config=config, users=users)
        store_llm_api_keys(data_dir, {"main": UPSTREAM_KEY, "platform": TEAM_KEY})
        with replicas(data_dir, ports) as base_urls:
            yield Cluster(issuer, base_urls, upstream)


def clients(cluster: Cluster, **options: Any) -> list[httpx.AsyncClient]:
    return [httpx.AsyncClient(base_url=url, timeout=60, **options) for url in cluster.base_urls]


async def close(http: list[httpx.AsyncClient]) -> None:
    for client in http:
        await client.aclose()


def forget_counters(tenant: str, subject: str) -> None:
    """Redis keys of this user's rate-limit windows and budget counters (a fresh database gives fresh ids, but
    the shared Redis outlives the test)."""
    delete_prefixed(REDIS_URL, f"chamberlain:LIMITER/user/{tenant}/{subject}/")
    delete_prefixed(REDIS_URL, f"chamberlain:budget:{tenant}/user/{quote(subject, safe='')}/")


async def test_a_token_issued_by_one_replica_is_accepted_by_the_others(cluster: Cluster) -> None:
    tokens = await user_tokens(cluster.base_urls[1], cluster.resource(), username=TOKEN_USER)
    http = clients(cluster)
    try:
        for number, client in enumerate(http):
            response = await call_tool(client, tokens["access_token"], number)
            assert response.status_code == 200, f"replica {number}: {response.status_code} {response.text}"
            document = response.json()
            assert document["id"] == number
            assert document["result"]["content"][0]["text"] == f"call {number}"
        # And one not issued by any replica is refused by all: acceptance is by signature, not by luck.
        forged = tokens["access_token"][:-4] + ("AAAA" if not tokens["access_token"].endswith("AAAA") else "BBBB")
        for client in http:
            assert (await call_tool(client, forged, 1)).status_code == 401
    finally:
        await close(http)
        forget_counters("default", jwt_claims(tokens["access_token"])["sub"])


async def refused_everywhere(http: list[httpx.AsyncClient], token: str) -> dict[int, httpx.Response]:
    """Calls each replica until it refuses the token; the first refusal of each."""

    async def until_refused(number: int, client: httpx.AsyncClient) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            response = await call_tool(client, token, attempt)
            if response.status_code != 200:
                return response
            await asyncio.sleep(0.02)

    refusals = await asyncio.gather(*(until_refused(number, client) for number, client in enumerate(http)))
    return dict(enumerate(refusals))


async def test_a_revocation_at_one_replica_is_refused_at_every_replica_within_a_second(cluster: Cluster) -> None:
    tokens = await user_tokens(cluster.base_urls[0], cluster.resource(), username=REVOKED_USER)
    access_token = tokens["access_token"]
    http = clients(cluster)
    try:
        for number, client in enumerate(http):  # accepted everywhere first: the refusal below is the revocation's
            assert (await call_tool(client, access_token, number)).status_code == 200
        revoked = await http[0].post(
            "/revoke",
            data={
                "token": tokens["refresh_token"],
                "token_type_hint": "refresh_token",
                "client_id": tokens["client_id"],
            },
        )
        answered = time.monotonic()
        assert revoked.status_code == 200, revoked.text
        async with asyncio.timeout(REVOCATION_BOUND):
            refusals = await refused_everywhere(http, access_token)
        elapsed = time.monotonic() - answered
    finally:
        await close(http)
        forget_counters("default", jwt_claims(access_token)["sub"])

    assert elapsed <= REVOCATION_BOUND
    for number, response in refusals.items():
        # RFC 6750 §3.1: a revoked token is an invalid_token, answered 401 with the challenge.
        assert response.status_code == 401, f"replica {number}: {response.status_code} {response.text}"
        assert 'error="invalid_token"' in response.headers.get("www-authenticate", "")


async def test_a_rate_limit_holds_in_total_across_the_replicas(cluster: Cluster) -> None:
    access_token = (await user_tokens(cluster.base_urls[2], cluster.resource(), username=LIMITED_USER))["access_token"]
    # 1.5 times the limit in all, inside the minute; each replica gets no more than the limit, so counting per
    # replica would admit every request: only a shared count keeps the total to the limit.
    per_replica = PER_USER * 3 // (2 * REPLICAS)
    limits = httpx.Limits(max_connections=per_replica, max_keepalive_connections=per_replica)
    http = clients(cluster, limits=limits)
    try:
        # Interleaved across the replicas, so that all of them admit at the same moment.
        calls = [(number, step * REPLICAS + number) for step in range(per_replica) for number in range(REPLICAS)]
        responses = await asyncio.gather(*(call_tool(http[number], access_token, rid) for number, rid in calls))
    finally:
        await close(http)
        forget_counters("default", jwt_claims(access_token)["sub"])

    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    admitted = statuses.count(200)
    assert PER_USER <= admitted <= PER_USER + REPLICAS, f"{admitted} admitted against {PER_USER} (+1 per replica)"
    for (_, request_id), response in zip(calls, responses, strict=True):
        if response.status_code == 429:
            assert response.json()["id"] == request_id
            assert response.json()["error"]["code"] == RATE_LIMITED


async def test_a_budget_holds_in_total_across_the_replicas(cluster: Cluster) -> None:
    access_token = (await user_tokens(cluster.base_urls[0], cluster.resource("/llm"), username=BUDGET_USER))[
        "access_token"
    ]
    cluster.upstream.default = Answer(fixture="message_text.json", delay=3.0)  # all held before any settles
    received_before = len(cluster.upstream.received)
    each = 2 * BUDGET_ROOM // REPLICAS + 1  # twice the room in all
    http = clients(cluster)

    async def one(client: httpx.AsyncClient) -> httpx.Response:
        headers = {
            "authorization": f"Bearer {access_token}",
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
            "x-request-id": new_request_id(),
        }
        return await client.post("/v1/messages", content=HAIKU_REQUEST, headers=headers)

    try:
        answers = await asyncio.gather(*(one(client) for _ in range(each) for client in http))
    finally:
        await close(http)
        forget_counters("default", jwt_claims(access_token)["sub"])

    statuses = [response.status_code for response in answers]
    succeeded = statuses.count(200)
    refusals = sorted(
        {(response.status_code, response.text[:200]) for response in answers if response.status_code != 200}
    )
    assert BUDGET_ROOM <= succeeded <= BUDGET_ROOM + REPLICAS, (
        f"{succeeded} answered against room for {BUDGET_ROOM}: {refusals}"
    )
    for response in answers:
        if response.status_code == 200:
            continue
        assert response.status_code in (400, 429), response.text
        error = response.json()
        assert error["type"] == "error"
        assert error["error"]["type"] in ("invalid_request_error", "rate_limit_error")
    # Refused requests never reached the upstream: the budget is held before anything is sent.
    assert len(cluster.upstream.received) - received_before == succeeded
