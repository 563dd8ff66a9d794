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
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chamberlain.identity.passwords import hash_password
from chamberlain.settings import load_settings
from chamberlain.store.database import create_database
from chamberlain.store.users import UserRepository
from tests.support.browser import Browser
from tests.support.mcp_calls import MCP_HEADERS
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register
from tests.support.redis import REDIS_URL, delete_prefixed, require_redis
from tests.support.server import USER, USER_PASSWORD, free_port, postgres_database, postgres_reachable

pytestmark = pytest.mark.postgres

IN_CI = os.environ.get("CI", "").lower() == "true"
PER_USER = 20
PROCESSES = 2
REQUESTS_PER_PROCESS = 45  # 90 in all, well over the limit, all within the minute
RATE_LIMITED = -32005  # gateway/jsonrpc.py


def require_postgres() -> None:
    if postgres_reachable():
        return
    if IN_CI:
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI but is not reachable")
    pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")


def chamberlain_executable() -> str:
    return str(Path(sys.executable).parent / "chamberlain")


def child_environment() -> dict[str, str]:
    # The children read chamberlain.yaml in the data dir and nothing else of ours.
    return {name: value for name, value in os.environ.items() if not name.startswith("CHAMBERLAIN_")}


@contextlib.contextmanager
def gateway_process(data_dir: Path, port: int, log: Path) -> Iterator[str]:
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [chamberlain_executable(), "serve", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=child_environment(),
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway on port {port} exited:\n{log.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway on port {port} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def prepare_store(data_dir: Path) -> None:
    from chamberlain.cli.init import initialise

    settings = load_settings(data_dir=data_dir, environ={})
    assert await initialise(settings) is not None
    database = create_database(settings.effective_database_url)
    try:
        await UserRepository(database, settings.tenant).add(USER, hash_password(USER_PASSWORD), ("developer",))
    finally:
        await database.dispose()


async def user_token(base_url: str, resource: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        client_id = (await register(http))["client_id"]
        pkce = Pkce.new()
        async with Browser(base_url) as browser:
            redirect = await browser.authorize(
                authorization_url(client_id, resource, pkce), username=USER, password=USER_PASSWORD
            )
        response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


def token_subject(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


async def call_tool(http: httpx.AsyncClient, token: str, request_id: int) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": f"call {request_id}"}},
    }
    return await http.post("/mcp/demo", json=body, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})


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
        config: dict[str, Any] = {
            "issuer": issuer,
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "tenants": {"default": {"rate_limits": {"per_user": f"{PER_USER}/minute"}}},
        }
        (tmp_path / "chamberlain.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        asyncio.run(prepare_store(tmp_path))
        with contextlib.ExitStack() as processes:
            base_urls = [
                processes.enter_context(gateway_process(tmp_path, port, tmp_path / f"gateway-{port}.log"))
                for port in ports
            ]
            token = asyncio.run(user_token(base_urls[0], f"{issuer}/mcp/demo"))
            subject = token_subject(token)
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
