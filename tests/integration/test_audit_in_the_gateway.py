"""The audit log behind the running gateway: what sign-in, the token endpoint and the proxy record, and what is
refused when the log cannot be written (fail-closed for MCP requests and credential reads, as configured)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from sqlalchemy import text

from chamberlain.audit.privacy import SubjectKeys
from chamberlain.audit.reader import read_events
from chamberlain.audit.records import StoredEvent
from chamberlain.gateway.jsonrpc import AUDIT_UNAVAILABLE, UPSTREAM_FAILED
from tests.support.browser import Browser
from tests.support.gateway import Gateway, gateway_with_upstreams
from tests.support.mcp_sdk import jwt_claims
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register
from tests.support.server import RunningServer

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
FAIL_CLOSED = {"fail_closed": ["admin.change", "credential.read", "mcp.request"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_with_upstreams(tmp_path_factory.mktemp("audited"), audit=FAIL_CLOSED) as running:
        yield running


@pytest.fixture
async def client(stack: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.server.base_url, timeout=30) as http:
        yield http


async def user_token(server: RunningServer, http: httpx.AsyncClient, server_name: str) -> str:
    client_id = (await register(http))["client_id"]
    pkce = Pkce.new()
    async with Browser(server.base_url) as browser:
        redirect = await browser.authorize(
            authorization_url(client_id, server.resource(server_name), pkce),
            username=server.user,
            password=server.user_password,
        )
    response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
    return str(response.json()["access_token"])


async def call(
    http: httpx.AsyncClient, token: str, server_name: str, extra: dict[str, str] | None = None
) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}", **(extra or {})}
    return await http.post(f"/mcp/{server_name}", json=body, headers=headers)


@contextlib.asynccontextmanager
async def audit_unwritable(server: RunningServer) -> AsyncIterator[None]:
    """Makes the audit table refuse every insert, as a full or read-only audit store would."""
    async with server.engine() as database, database.begin() as connection:
        await connection.execute(
            text(
                "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_events "
                "BEGIN SELECT RAISE(ABORT, 'audit storage unwritable'); END"
            )
        )
    try:
        yield
    finally:
        async with server.engine() as database, database.begin() as connection:
            await connection.execute(text("DROP TRIGGER audit_unwritable"))


async def events_until(
    server: RunningServer, done: Callable[[list[StoredEvent]], bool], *, personal: bool = False
) -> list[StoredEvent]:
    """The tenant's events once `done` holds for them; the gateway writes them in the background within moments."""
    keys = SubjectKeys(server.state.master_key) if personal else None
    for _ in range(200):
        async with server.engine() as database:
            events = await read_events(database, server.settings.tenant, limit=100_000, subject_keys=keys)
        if done(events):
            return events
        await asyncio.sleep(0.05)
    pytest.fail("the expected audit events never arrived")


async def test_sign_in_tokens_and_mcp_requests_are_recorded(stack: Gateway, client: httpx.AsyncClient) -> None:
    server = stack.server
    token = await user_token(server, client, "plain")
    assert (await call(client, token, "plain")).status_code == 200
    user_id = jwt_claims(token)["sub"]

    def mcp_recorded(events: list[StoredEvent]) -> bool:
        return any(event.action == "mcp.request" and event.subject == user_id for event in events)

    events = await events_until(server, mcp_recorded, personal=True)
    actions = [(event.action, event.outcome) for event in events]
    assert ("auth.sign_in", "success") in actions
    assert ("session.created", "success") in actions
    assert ("consent.given", "success") in actions
    assert ("client.registered", "success") in actions
    assert ("token.issued", "success") in actions
    mcp = [event for event in events if event.action == "mcp.request" and event.subject == user_id]
    assert mcp
    assert mcp[-1].public["target"] == "mcp:plain/echo"
    sign_in = next(event for event in events if event.action == "auth.sign_in" and event.subject == user_id)
    assert sign_in.personal == {"source_ip": "127.0.0.1"}
    # The address is stored encrypted: the raw row does not contain it.
    async with server.engine() as database, database.connect() as connection:
        raw = await connection.scalar(
            text("SELECT body FROM audit_events WHERE event_id = :id"), {"id": sign_in.event_id}
        )
    assert b"127.0.0.1" not in raw


async def test_with_the_log_unwritable_fail_closed_mcp_requests_are_refused_and_resume(
    stack: Gateway, client: httpx.AsyncClient
) -> None:
    server = stack.server
    token = await user_token(server, client, "plain")
    async with audit_unwritable(server):
        refused = await call(client, token, "plain")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == AUDIT_UNAVAILABLE
    assert (await call(client, token, "plain")).status_code == 200


async def test_with_the_log_unwritable_no_upstream_credential_is_read(
    stack: Gateway, client: httpx.AsyncClient
) -> None:
    server = stack.server
    token = await user_token(server, client, "machine")
    fetched_before = stack.authorization_server.count("client_credentials")
    async with audit_unwritable(server):
        refused = await call(client, token, "machine")
    error = refused.json()["error"]
    assert error["code"] in (AUDIT_UNAVAILABLE, UPSTREAM_FAILED)
    # Nothing reached the token endpoint: the secret was not used.
    assert stack.authorization_server.count("client_credentials") == fetched_before
    works = await call(client, token, "machine")
    assert works.json()["result"]["content"][0]["text"] == "x"
    assert stack.authorization_server.count("client_credentials") == fetched_before + 1


async def test_events_carry_the_request_id_the_response_echoes(stack: Gateway, client: httpx.AsyncClient) -> None:
    server = stack.server
    token = await user_token(server, client, "plain")
    given = await call(client, token, "plain", {"X-Request-Id": "lb-7f3a.42"})
    assert given.headers["x-request-id"] == "lb-7f3a.42"
    replaced = await call(client, token, "plain", {"X-Request-Id": "bad id\twith<junk>"})
    minted = replaced.headers["x-request-id"]
    assert minted != "bad id\twith<junk>"
    assert len(minted) == 32

    def both_recorded(events: list[StoredEvent]) -> bool:
        ids = {event.public.get("request_id") for event in events if event.action == "mcp.request"}
        return {"lb-7f3a.42", minted} <= ids

    await events_until(server, both_recorded)
