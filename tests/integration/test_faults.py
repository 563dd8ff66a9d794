"""Failure behaviour (issue 10, acceptance 4): PostgreSQL stopped and started under load, under a real gateway
process, on a throwaway cluster of the test's own (never the shared one on 5432); and a Redis of the test's own
(never the shared one on 6379) stopped and started under a gateway that rate-limits through it.

While the store is down, requests that need it fail closed with 503 and Retry-After in their surface's format (never
500), requests that do not (a tools/call with a valid JWT) keep working; when it returns, service resumes without
restarting the gateway; and every acknowledged request's audit event and every acknowledged LLM call's usage record
is in the store, the audit chain intact.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from chamberlain.gateway.jsonrpc import RATE_LIMITED
from chamberlain.identity.passwords import hash_password
from chamberlain.store.users import UserRepository
from tests.support.anthropic_upstream import running_anthropic_upstream
from tests.support.faults import stored
from tests.support.llm_gateway import (
    ROLES,
    TEAM_KEY,
    UPSTREAM_KEY,
    LlmGateway,
    llm_gateway,
    llm_settings,
    store_api_keys,
    wait_until,
)
from tests.support.mcp_calls import MCP_HEADERS, call_mcp
from tests.support.oauth import refresh
from tests.support.pg_cluster import PgCluster, pg_available, pg_cluster
from tests.support.redis import IN_CI, own_redis, require_redis_server
from tests.support.replicas import gateway_process, prepare_store, run_sync, store_llm_api_keys, user_tokens
from tests.support.server import USER_PASSWORD, RunningServer, free_port, running_server
from tests.support.tenants import access_token

MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
OUTAGE_SECONDS = 3.0
RECOVERY_TIMEOUT = 30.0


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    if not pg_available():
        if IN_CI:
            pytest.fail("PostgreSQL 15's initdb and pg_ctl are required in CI")
        pytest.skip("PostgreSQL 15's initdb and pg_ctl are not installed")
    with pg_cluster() as running:
        running.create_database("chamberlain")
        yield running


@dataclass(frozen=True)
class Outcome:
    kind: str  # "tool", "refresh", "message"
    phase: str  # "up", "down" (sent while the store was stopped), "restarting", "back"
    request_id: str
    status: int
    body: bytes
    headers: httpx.Headers


@dataclass
class Load:
    phase: str = "up"
    outcomes: list[Outcome] = field(default_factory=list)
    readiness: dict[str, int] = field(default_factory=dict)  # phase -> /readyz status

    def of(self, kind: str, phase: str | None = None) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind and (phase is None or o.phase == phase)]

    def ok(self, kind: str, phase: str) -> int:
        return sum(1 for o in self.of(kind, phase) if o.status == 200)


async def _apply_load(base_url: str, cluster: PgCluster) -> Load:
    mcp = await user_tokens(base_url, f"{base_url}/mcp/demo")
    llm = await user_tokens(base_url, f"{base_url}/llm")
    load = Load()
    stopping = asyncio.Event()
    refresh_token = str(mcp["refresh_token"])

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:

        async def tool(request_id: str) -> httpx.Response:
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": request_id}},
            }
            headers = {**MCP_HEADERS, "Authorization": f"Bearer {mcp['access_token']}", "X-Request-Id": request_id}
            return await http.post("/mcp/demo", json=body, headers=headers)

        async def rotate(request_id: str) -> httpx.Response:
            nonlocal refresh_token
            response = await refresh(http, str(mcp["client_id"]), refresh_token)
            if response.status_code == 200:  # rotated: the old one is spent (a 503 spent nothing)
                refresh_token = str(response.json()["refresh_token"])
            return response

        async def message(request_id: str) -> httpx.Response:
            headers = {
                "authorization": f"Bearer {llm['access_token']}",
                "anthropic-version": "2023-06-01",
                "x-request-id": request_id,
            }
            return await http.post("/v1/messages", json=MESSAGE, headers=headers)

        async def loop(kind: str, send: Callable[[str], Awaitable[httpx.Response]], pause: float) -> None:
            while not stopping.is_set():
                request_id = f"fault-{kind}-{secrets.token_hex(6)}"
                phase = load.phase
                response = await send(request_id)
                load.outcomes.append(
                    Outcome(kind, phase, request_id, response.status_code, response.content, response.headers)
                )
                await asyncio.sleep(pause)

        async def until(condition: Callable[[], bool], within: float) -> None:
            deadline = asyncio.get_running_loop().time() + within
            while not condition():
                assert asyncio.get_running_loop().time() < deadline, f"not within {within} s: {summary(load)}"
                await asyncio.sleep(0.05)

        workers = [
            asyncio.create_task(loop("tool", tool, 0.01)),
            asyncio.create_task(loop("refresh", rotate, 0.05)),
            asyncio.create_task(loop("message", message, 0.02)),
        ]
        try:
            await until(lambda: all(load.ok(kind, "up") >= 3 for kind in ("tool", "refresh", "message")), 30)
            load.readiness["up"] = (await http.get("/readyz")).status_code
            await asyncio.to_thread(cluster.stop)  # fast shutdown: every session is ended, as in a restart
            load.phase = "down"
            await asyncio.sleep(OUTAGE_SECONDS)
            load.readiness["down"] = (await http.get("/readyz")).status_code
            load.phase = "restarting"  # answers while it starts may go either way
            await asyncio.to_thread(cluster.start)
            load.phase = "back"
            # Service resumes by itself: no gateway restart, only the pool reconnecting.
            await until(lambda: all(load.ok(kind, "back") >= 3 for kind in ("tool", "refresh", "message")), 30)
            deadline = asyncio.get_running_loop().time() + RECOVERY_TIMEOUT
            while (status := (await http.get("/readyz")).status_code) != 200:
                assert asyncio.get_running_loop().time() < deadline, "/readyz did not recover"
                await asyncio.sleep(0.2)
            load.readiness["back"] = status
        finally:
            stopping.set()
            await asyncio.gather(*workers, return_exceptions=True)
    return load


def summary(load: Load) -> dict[tuple[str, str, int], int]:
    counts: dict[tuple[str, str, int], int] = {}
    for outcome in load.outcomes:
        key = (outcome.kind, outcome.phase, outcome.status)
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.postgres
def test_postgresql_stopped_and_started_under_load_fails_closed_resumes_and_loses_nothing(
    tmp_path: Path, cluster: PgCluster
) -> None:
    log = tmp_path / "gateway.log"
    with running_anthropic_upstream() as upstream:
        prepare_store(
            tmp_path, cluster.database_url("chamberlain"), config={"llm": llm_settings(upstream), "roles": ROLES}
        )
        store_llm_api_keys(tmp_path, {"main": UPSTREAM_KEY, "platform": TEAM_KEY})
        with gateway_process(tmp_path, free_port(), log) as base_url:
            load = run_sync(_apply_load(base_url, cluster))
        # The gateway has stopped (SIGTERM): whatever it still held in its queues was written on the way out.
    output = log.read_text(errors="replace")
    counts = summary(load)

    # Never a 500, in any phase, on any surface; only 200 or 503.
    assert {o.status for o in load.outcomes} <= {200, 503}, (counts, output[-3000:])
    # The store was really down: the refreshes sent meanwhile failed closed, in OAuth's format, with Retry-After.
    down_refreshes = load.of("refresh", "down")
    assert down_refreshes, counts
    assert all(o.status == 503 for o in down_refreshes), counts
    for outcome in down_refreshes:
        assert outcome.headers["retry-after"].isdigit()
        assert outcome.headers["cache-control"] == "no-store"
        assert httpx.Response(503, content=outcome.body).json()["error"] == "temporarily_unavailable"
    # Tokens are checked without the store: tools/call kept working throughout.
    assert load.ok("tool", "down") >= 3, counts
    assert all(o.status == 200 for o in load.of("tool", "down")), counts
    # LLM calls that failed did so in Anthropic's format (the SDKs retry a 503 after retry-after).
    for outcome in load.of("message"):
        if outcome.status == 503:
            error = httpx.Response(503, content=outcome.body).json()
            assert error["type"] == "error", error
            assert error["error"]["type"] == "overloaded_error", error
            assert outcome.headers["retry-after"].isdigit()
    assert load.readiness == {"up": 200, "down": 503, "back": 200}
    # Logged once per outage, not every second; no stack trace for an outage.
    assert output.count("the store is unreachable") == 1, output[-3000:]
    assert output.count("the store is reachable again") == 1, output[-3000:]

    found = run_sync(stored(tmp_path))
    acknowledged_tools = {o.request_id for o in load.of("tool") if o.status == 200}
    acknowledged_messages = {o.request_id for o in load.of("message") if o.status == 200}
    assert acknowledged_tools - found.audited == set(), "acknowledged tools/call without an audit event"
    assert acknowledged_messages - found.metered == set(), "acknowledged LLM calls without a usage record"
    assert found.problem is None, found.problem


# -- Redis --------------------------------------------------------------------------------------------------------

LIMIT = 4


async def _calls(server: RunningServer, token: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        return [await call_mcp(http, token) for _ in range(count)]


async def _add_developers(server: RunningServer, *names: str) -> None:
    async with server.engine() as database:
        users = UserRepository(database, server.settings.tenant)
        for name in names:
            await users.add(name, hash_password(USER_PASSWORD), ("developer",))


def _redis_keys(url: str, match: str) -> list[str]:
    """The keys matching `match` in the test's own Redis (rate limits: *LIMITER*; budgets: *:budget:*)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return list(client.scan_iter(match=match, count=1000))
    finally:
        client.close()


def test_redis_stopped_and_started_limits_fall_back_per_process_then_are_shared_again(tmp_path: Path) -> None:
    require_redis_server()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    limits = {"default": {"rate_limits": {"per_user": f"{LIMIT}/minute"}}}
    with (
        running_server(tmp_path / "open", redis_url=url, tenants=limits) as open_server,
        running_server(tmp_path / "closed", redis_url=url, tenants=limits, rate_limits_fail_closed=True) as closed,
    ):
        run_sync(_add_developers(open_server, "bob", "carol"))
        open_token = run_sync(access_token(open_server, "default", open_server.user, open_server.resource()))
        # Others for the outage and after it: alice's refusal is remembered until Redis's window resets.
        bob_token = run_sync(access_token(open_server, "default", "bob", open_server.resource()))
        carol_token = run_sync(access_token(open_server, "default", "carol", open_server.resource()))
        closed_token = run_sync(access_token(closed, "default", closed.user, closed.resource()))
        limiter = open_server.state.rate_limiter

        with own_redis(port):
            answers = run_sync(_calls(open_server, open_token, LIMIT + 1))
            assert [answer.status_code for answer in answers] == [200] * LIMIT + [429]
            assert _redis_keys(url, "*LIMITER*"), "counted in Redis"
            assert run_sync(_calls(closed, closed_token, 1))[0].status_code == 200

        # Redis is down. Fail open (the default): this process's own memory counts, so the limit still holds.
        assert run_sync(_calls(open_server, open_token, 1))[0].status_code == 429  # alice's spent window is kept
        answers = run_sync(_calls(open_server, bob_token, LIMIT + 1))
        assert [answer.status_code for answer in answers] == [200] * LIMIT + [429]
        assert not limiter.shared
        # Fail closed: 503 with Retry-After, as a JSON-RPC error the SDKs show.
        refused = run_sync(_calls(closed, closed_token, 2))
        for answer in refused:
            assert answer.status_code == 503
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["error"]["code"] == RATE_LIMITED

        with own_redis(port):  # a fresh, empty Redis on the same port: a restart without persistence
            wait_until(lambda: limiter.shared)  # the probe finds it again; nothing restarted
            wait_until(lambda: closed.state.rate_limiter.shared)
            answers = run_sync(_calls(open_server, carol_token, LIMIT + 1))
            assert [answer.status_code for answer in answers] == [200] * LIMIT + [429]
            assert _redis_keys(url, "*LIMITER*"), "counted in Redis again"
            assert run_sync(_calls(closed, closed_token, 1))[0].status_code == 200


BUDGETS = [{"scope": "user", "period": "month", "limit_usd": "100", "alert_at": [1.0]}]


async def _message(gateway: LlmGateway, token: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=gateway.server.base_url, timeout=30) as http:
        return await http.post("/v1/messages", json=MESSAGE, headers=headers)


def test_redis_stopped_and_started_budgets_count_per_process_then_in_redis_again(tmp_path: Path) -> None:
    require_redis_server()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with (
        llm_gateway(tmp_path / "open", redis_url=url, budgets=BUDGETS) as open_gateway,
        llm_gateway(tmp_path / "closed", redis_url=url, budgets=BUDGETS, rate_limits_fail_closed=True) as closed,
    ):
        tokens = {}
        for gateway in (open_gateway, closed):
            run_sync(store_api_keys(gateway.server))
            server = gateway.server
            tokens[id(gateway)] = run_sync(access_token(server, "default", server.user, gateway.resource))
        with own_redis(port):
            for gateway in (open_gateway, closed):
                assert run_sync(_message(gateway, tokens[id(gateway)])).status_code == 200
            assert _redis_keys(url, "*:budget:*"), "budgets counted in Redis"

        # Redis is down: this process counts alone (the default), or budgets cannot be checked and the request is
        # refused with a retryable 503 in Anthropic's format (rate_limits_fail_closed).
        assert run_sync(_message(open_gateway, tokens[id(open_gateway)])).status_code == 200
        assert not open_gateway.server.state.budget_guard.shared
        refused = run_sync(_message(closed, tokens[id(closed)]))
        assert refused.status_code == 503
        assert refused.json()["error"]["type"] == "api_error"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-should-retry"] == "true"

        with own_redis(port):  # empty: counters are rebuilt from the usage store
            for gateway in (open_gateway, closed):
                wait_until(lambda gateway=gateway: gateway.server.state.budget_guard.shared)
                assert run_sync(_message(gateway, tokens[id(gateway)])).status_code == 200
            assert _redis_keys(url, "*:budget:*"), "budgets counted in Redis again"
