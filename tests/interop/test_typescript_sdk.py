"""The official MCP TypeScript SDK (`@modelcontextprotocol/sdk`, pinned in tests/interop/ts/package.json) against a
real Chamberlain: its StreamableHTTPClientTransport with an OAuthClientProvider discovers the authorization server,
registers a client, signs in and consents through the real HTML forms, exchanges the code and calls the demo tools.

Runs `node tests/interop/ts/client.mjs`; `make test` installs its node_modules first (`npm ci` in tests/interop/ts).
Skipped when node is not installed, except under CI=true, where it must run."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from chamberlain.store.clients import ClientRepository
from tests.support.gateway import gateway_with_upstreams
from tests.support.server import RunningServer

pytestmark = pytest.mark.interop

TS_DIR = Path(__file__).parent / "ts"
CLIENT_SCRIPT = TS_DIR / "client.mjs"
IN_CI = os.environ.get("CI", "").lower() == "true"
TIMEOUT_SECONDS = 120


def node_executable() -> str:
    node = shutil.which("node")
    if node is not None:
        return node
    if IN_CI:
        pytest.fail("node is required in CI for the TypeScript SDK interop test but is not on PATH")
    pytest.skip("node is not on PATH")


def run_client(node: str, *args: str) -> dict[str, Any]:
    sdk = TS_DIR / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json"
    assert sdk.is_file(), f"the TypeScript SDK is not installed: run `make test` or `npm ci` in {TS_DIR}"
    try:
        completed = subprocess.run(
            [node, str(CLIENT_SCRIPT), *args],
            cwd=TS_DIR,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"the TypeScript client did not finish in {TIMEOUT_SECONDS}s; stderr: {timeout.stderr!r}")
    assert completed.returncode == 0, (
        f"the TypeScript client failed ({completed.returncode}):\n{completed.stderr}\n{completed.stdout}"
    )
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


async def test_typescript_sdk_discovers_registers_authorizes_and_calls_tools(server: RunningServer) -> None:
    node = node_executable()
    resource = server.resource("demo")

    result = await asyncio.to_thread(run_client, node, resource, server.user, server.user_password)

    # Discovery (RFC 9728 then RFC 8414) found this server as the authorization server for /mcp/demo.
    assert result["issuer"] == server.base_url
    assert result["resource_metadata"]["resource"] == resource
    assert server.base_url in result["resource_metadata"]["authorization_servers"]

    # One public client registered (RFC 7591), then an authorization request with PKCE S256, state and resource.
    assert result["registrations"] == 1
    assert result["token_endpoint_auth_method"] == "none"
    request = result["authorization_request"]
    assert request["endpoint"] == f"{server.base_url}/authorize"
    assert request["params"]["client_id"] == result["client_id"]
    assert request["params"]["code_challenge_method"] == "S256"
    assert request["params"]["resource"] == resource
    assert request["params"]["state"] == result["state_sent"]
    assert urlsplit(request["params"]["redirect_uri"]).hostname == "127.0.0.1"

    # The browser signed in and consented on the real forms; the redirect back carried the same state and our
    # issuer (RFC 9207), which the client checked too.
    assert result["browser_steps"] == ["login", "consent"]
    assert result["redirect"] == {"state": result["state_sent"], "iss": server.base_url}
    assert result["token_type"].lower() == "bearer"
    assert result["has_refresh_token"] is True

    # The MCP calls went through with the token.
    assert {"echo", "add"} <= set(result["tools"])
    add = result["add"]
    assert add.get("isError") is not True
    if "structuredContent" in add:
        assert add["structuredContent"] == {"result": 5}
    assert [item["text"] for item in add["content"] if item["type"] == "text"] == ["5"]

    # The SDK's registration is a dynamic client in our store.
    async with server.engine() as engine:
        clients = {client.client_id: client for client in await ClientRepository(engine, server.settings.tenant).list()}
    registered = clients[result["client_id"]]
    assert registered.registration == "dynamic"
    assert registered.revoked_at is None
    assert registered.client_metadata["token_endpoint_auth_method"] == "none"
    assert registered.client_metadata["client_name"] == "Chamberlain interop (TypeScript SDK)"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with gateway_with_upstreams(tmp_path_factory.mktemp("ts-gateway")) as running:
        yield running.server


@pytest.mark.parametrize("server_name", ["up", "local"])
async def test_typescript_sdk_streams_answers_and_cancels_through_the_gateway(
    gateway: RunningServer, server_name: str
) -> None:
    node = node_executable()
    resource = gateway.resource(server_name)
    result = await asyncio.to_thread(
        run_client, node, resource, gateway.user, gateway.user_password, "--gateway-scenario"
    )
    assert result["resource_metadata"]["resource"] == resource
    assert "delete_everything" not in result["tools"]  # the developer role denies it
    scenario = result["scenario"]
    assert scenario["count"] == "counted to 3"
    assert scenario["progress"] == [1, 2, 3]
    assert scenario["ask_name"] == "hello Ada"
    assert scenario["cancel_error"] is not None
    assert scenario["upstream_saw_cancellation"] is True
    assert "not permitted" in scenario["denied"]
