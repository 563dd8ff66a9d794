"""A tenant's quotas are enforced where things are created (client registration, the CLI) and its rate limits on
every proxied request (429 with Retry-After and a JSON-RPC error naming the limit)."""

from __future__ import annotations

import asyncio

import httpx
from typer.testing import CliRunner, Result

from chamberlain.cli.main import app as cli
from chamberlain.gateway.jsonrpc import RATE_LIMITED
from tests.support.mcp_calls import call_mcp
from tests.support.oauth import register
from tests.support.server import USER_PASSWORD, RunningServer, random_name
from tests.support.tenants import access_token, add_tenant


def invoke(server: RunningServer, *args: str, stdin: str | None = None) -> Result:
    env = {"CHAMBERLAIN_DATABASE_URL": server.database_url}
    return CliRunner().invoke(cli, [*args, "--data-dir", str(server.settings.data_dir)], input=stdin, env=env)


async def test_client_registration_stops_at_the_quota(server: RunningServer) -> None:
    tenant = random_name("quota")
    await add_tenant(server, tenant, config={"quotas": {"clients": 1}})
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}") as http:
        await register(http)
        refused = await http.post(
            "/register", json={"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}
        )
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "quota_exceeded",
        "error_description": f"tenant {tenant} has reached its quota of 1 client",
    }


async def test_the_cli_refuses_a_user_over_the_quota(server: RunningServer) -> None:
    tenant = random_name("quota")
    await add_tenant(server, tenant, users={"first": ("developer",)}, config={"quotas": {"users": 1}})
    result = await asyncio.to_thread(
        invoke,
        server,
        "users",
        "add",
        "second",
        "--role",
        "developer",
        "--password-stdin",
        "--tenant",
        tenant,
        stdin=USER_PASSWORD,
    )
    assert result.exit_code == 1
    assert f"tenant {tenant} has reached its quota of 1 user" in result.output


async def test_requests_over_the_per_user_rate_get_429_with_retry_after(server: RunningServer) -> None:
    tenant = random_name("limited")
    await add_tenant(server, tenant, users={"dev": ("developer",)}, config={"rate_limits": {"per_user": "3/minute"}})
    token = await access_token(server, tenant, "dev", f"{server.base_url}/t/{tenant}/mcp/demo")
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}", timeout=30) as http:
        answers = [await call_mcp(http, token) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    throttled = answers[-1]
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    error = throttled.json()
    assert error["id"] == 1
    assert error["error"]["code"] == RATE_LIMITED
    assert "retry after" in error["error"]["message"]


async def test_a_tenant_without_limits_is_not_throttled(server: RunningServer, http: httpx.AsyncClient) -> None:
    token = await access_token(server, server.settings.tenant, server.user, server.resource())
    statuses = {(await call_mcp(http, token)).status_code for _ in range(20)}
    assert statuses == {200}
