"""The MCP gateway end to end: real upstream processes (official SDK), the real gateway, plain HTTP clients.

Every request carries a token got through the real sign-in and consent; the upstream's own view (the
Authorization header it received) is checked through its `whoami` tool.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from chamberlain.audit.events import Action
from chamberlain.gateway.events import GatewayEvent
from chamberlain.gateway.jsonrpc import HEADER_MISMATCH, NOT_PERMITTED, SESSION_NOT_FOUND, UPSTREAM_FAILED
from chamberlain.vault.leak_guard import MARKER
from tests.support.audit_events import recorded
from tests.support.browser import Browser
from tests.support.gateway import (
    ADMIN,
    GUEST,
    PASSWORDS,
    UPSTREAM_AUDIENCE,
    UPSTREAM_SECRET,
    Gateway,
    gateway_with_upstreams,
)
from tests.support.mcp_sdk import jwt_claims
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register
from tests.support.server import RunningServer

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_with_upstreams(tmp_path_factory.mktemp("gateway")) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(stack: Gateway) -> RunningServer:
    return stack.server


@pytest.fixture
async def client(gateway: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
        yield http


_tokens: dict[tuple[str, str], str] = {}


async def token(gateway: RunningServer, http: httpx.AsyncClient, server_name: str, user: str = "alice") -> str:
    """An access token for `user` and /mcp/{server_name}, through registration, sign-in, consent and the code grant."""
    key = (user, server_name)
    if key not in _tokens:
        password = PASSWORDS.get(user, gateway.user_password)
        client_id = (await register(http))["client_id"]
        pkce = Pkce.new()
        async with Browser(gateway.base_url) as browser:
            redirect = await browser.authorize(
                authorization_url(client_id, gateway.resource(server_name), pkce), username=user, password=password
            )
        response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
        assert response.status_code == 200, response.text
        _tokens[key] = response.json()["access_token"]
    return _tokens[key]


async def rpc(
    http: httpx.AsyncClient,
    bearer: str,
    server_name: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params or {}}
    return await http.post(
        f"/mcp/{server_name}",
        json=body,
        headers={**MCP_HEADERS, "Authorization": f"Bearer {bearer}", **(headers or {})},
    )


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response, whether it came as JSON or as an SSE stream."""
    if response.headers["content-type"].startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    document = response.json()
    return document if isinstance(document, list) else [document]


def final(response: httpx.Response) -> dict[str, Any]:
    return [message for message in messages(response) if "method" not in message][-1]


def tool_names(response: httpx.Response) -> set[str]:
    return {tool["name"] for tool in final(response)["result"]["tools"]}


@contextlib.contextmanager
def recorded_events(gateway: RunningServer) -> Iterator[list[GatewayEvent]]:
    seen: list[GatewayEvent] = []
    unsubscribe = gateway.state.events.subscribe(seen.append)
    try:
        yield seen
    finally:
        unsubscribe()


# -- reaching the upstream -------------------------------------------------------------------------------------


async def test_tools_list_and_call_reach_the_http_upstream(gateway: RunningServer, client: httpx.AsyncClient) -> None:
    bearer = await token(gateway, client, "plain")
    listed = await rpc(client, bearer, "plain", "tools/list")
    assert listed.status_code == 200
    assert {"echo", "add", "whoami"} <= tool_names(listed)
    called = await rpc(client, bearer, "plain", "tools/call", {"name": "add", "arguments": {"a": 2, "b": 40}})
    assert final(called)["result"]["content"][0]["text"] == "42"


async def test_the_client_token_never_reaches_the_upstream(gateway: RunningServer, client: httpx.AsyncClient) -> None:
    plain = await rpc(
        client, await token(gateway, client, "plain"), "plain", "tools/call", {"name": "whoami", "arguments": {}}
    )
    assert final(plain)["result"]["content"][0]["text"] == "none"
    keyed_token = await token(gateway, client, "keyed")
    keyed = await rpc(client, keyed_token, "keyed", "tools/call", {"name": "whoami_hex", "arguments": {}})
    seen = bytes.fromhex(final(keyed)["result"]["content"][0]["text"]).decode()
    assert seen == "Bearer " + UPSTREAM_SECRET
    assert keyed_token not in seen


async def test_with_token_exchange_the_upstream_sees_its_own_audience_and_the_users_subject(
    stack: Gateway, gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    exchanges_before = stack.authorization_server.count(TOKEN_EXCHANGE)
    seen: dict[str, dict[str, Any]] = {}
    for user in ("alice", ADMIN):
        bearer = await token(gateway, client, "exchanged", user=user)
        for _ in range(2):
            called = await rpc(client, bearer, "exchanged", "tools/call", {"name": "whoami_hex", "arguments": {}})
            presented = bytes.fromhex(final(called)["result"]["content"][0]["text"]).decode()
            assert presented.startswith("Bearer ")
            assert bearer not in presented
        seen[user] = stack.authorization_server.verify(presented.removeprefix("Bearer "))
        assert seen[user]["aud"] == UPSTREAM_AUDIENCE
        assert seen[user]["sub"] == jwt_claims(bearer)["sub"]
    assert seen["alice"]["sub"] != seen[ADMIN]["sub"]
    # Cached per user: two calls each, one exchange each.
    assert stack.authorization_server.count(TOKEN_EXCHANGE) - exchanges_before == 2


async def test_a_stdio_upstream_is_reached_through_the_same_path(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "local")
    init = await rpc(
        client,
        bearer,
        "local",
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    )
    assert init.status_code == 200, init.text
    session = init.headers["mcp-session-id"]
    called = await rpc(
        client, bearer, "local", "tools/call", {"name": "whoami", "arguments": {}}, headers={"Mcp-Session-Id": session}
    )
    assert final(called)["result"]["content"][0]["text"] == "stdio"


# -- the leak guard --------------------------------------------------------------------------------------------


def text_result(response: httpx.Response) -> str:
    return str(final(response)["result"]["content"][0]["text"])


async def leak_events(gateway: RunningServer, request_id: str) -> list[dict[str, Any]]:
    return [event.public for event in await recorded(gateway, request_id, Action.DLP_DETECTION)]


async def test_an_injected_credential_echoed_by_the_upstream_is_redacted_and_the_redaction_recorded(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    request_id = f"leak-{uuid.uuid4().hex}"
    echoed = await rpc(
        client,
        await token(gateway, client, "keyed"),
        "keyed",
        "tools/call",
        {"name": "whoami", "arguments": {}},
        headers={"X-Request-Id": request_id},
    )
    assert text_result(echoed) == MARKER.decode()  # the whole header value, scheme and all
    assert UPSTREAM_SECRET not in echoed.text
    [event] = await leak_events(gateway, request_id)
    assert event["details"]["credentials"] == ["upstream:keyed:authorization"]
    assert event["details"]["direction"] == "response"
    assert event["target"] == "mcp:keyed"
    assert UPSTREAM_SECRET not in json.dumps(event)


@pytest.mark.parametrize(
    "written",
    [
        UPSTREAM_SECRET,
        base64.b64encode(f"user:{UPSTREAM_SECRET}".encode()).decode(),
        quote(UPSTREAM_SECRET, safe=""),
        "prefix " + UPSTREAM_SECRET.upper() + " (not the value: letters differ)",
    ],
    ids=["raw", "base64", "percent", "different"],
)
async def test_an_injected_credential_in_a_clients_arguments_never_reaches_another_upstream(
    gateway: RunningServer, client: httpx.AsyncClient, written: str
) -> None:
    keyed = await rpc(client, await token(gateway, client, "keyed"), "keyed", "tools/list")
    assert keyed.status_code == 200  # the gateway has injected the key in this tenant, so it knows it
    request_id = f"leak-{uuid.uuid4().hex}"
    echoed = await rpc(
        client,
        await token(gateway, client, "plain"),
        "plain",
        "tools/call",
        {"name": "echo", "arguments": {"text": written}},
        headers={"X-Request-Id": request_id},
    )
    text = text_result(echoed)
    if "not the value" in written:
        assert text == written
        return
    assert MARKER.decode() in text
    assert written not in text
    [event] = await leak_events(gateway, request_id)
    assert event["details"]["direction"] == "request"
    assert event["details"]["upstream"] == "plain"


# -- policy -------------------------------------------------------------------------------------------------------


async def test_a_denied_tool_is_hidden_and_refused_for_a_developer(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "plain")
    assert "delete_everything" not in tool_names(await rpc(client, bearer, "plain", "tools/list"))
    with recorded_events(gateway) as events:
        refused = await rpc(client, bearer, "plain", "tools/call", {"name": "delete_everything", "arguments": {}})
        await asyncio.sleep(0.2)
    error = final(refused)["error"]
    assert error["code"] == NOT_PERMITTED
    assert "not permitted" in error["message"]
    assert any(event.decision == "denied" and event.target == "delete_everything" for event in events)


async def test_an_admin_sees_and_calls_the_tool_a_developer_cannot(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "plain", user=ADMIN)
    assert "delete_everything" in tool_names(await rpc(client, bearer, "plain", "tools/list"))
    called = await rpc(client, bearer, "plain", "tools/call", {"name": "delete_everything", "arguments": {}})
    assert final(called)["result"]["content"][0]["text"] == "everything deleted"


async def test_a_refused_call_is_never_sent_upstream(gateway: RunningServer, client: httpx.AsyncClient) -> None:
    # "down" has no upstream at all: a refusal that reached it would be an upstream failure, not a policy error.
    bearer = await token(gateway, client, "down")
    refused = await rpc(client, bearer, "down", "tools/call", {"name": "delete_everything", "arguments": {}})
    assert final(refused)["error"]["code"] == NOT_PERMITTED
    reached = await rpc(client, bearer, "down", "tools/call", {"name": "echo", "arguments": {"text": "x"}})
    assert final(reached)["error"]["code"] == UPSTREAM_FAILED


async def test_prompts_and_resources_follow_their_own_rules(gateway: RunningServer, client: httpx.AsyncClient) -> None:
    bearer = await token(gateway, client, "plain")
    prompts = final(await rpc(client, bearer, "plain", "prompts/list"))["result"]["prompts"]
    assert prompts == []  # the role's prompt rule allows nothing
    refused = await rpc(client, bearer, "plain", "prompts/get", {"name": "greeting", "arguments": {"name": "x"}})
    assert final(refused)["error"]["code"] == NOT_PERMITTED
    resources = final(await rpc(client, bearer, "plain", "resources/list"))["result"]["resources"]
    assert [resource["uri"] for resource in resources] == ["test://readme"]
    read = await rpc(client, bearer, "plain", "resources/read", {"uri": "test://readme"})
    assert "test upstream" in final(read)["result"]["contents"][0]["text"]
    secret = await rpc(client, bearer, "plain", "resources/read", {"uri": "test://secret-plans"})
    assert final(secret)["error"]["code"] == NOT_PERMITTED


async def test_a_batch_is_refused_whole_when_any_part_is_denied(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "down")
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_everything", "arguments": {}}},
    ]
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {bearer}", "MCP-Protocol-Version": "2025-03-26"}
    refused = await client.post("/mcp/down", json=batch, headers=headers)
    answers = {answer["id"]: answer["error"] for answer in refused.json()}
    # "down" has no upstream: UPSTREAM_FAILED would mean part of the batch was sent.
    assert {error["code"] for error in answers.values()} == {NOT_PERMITTED}
    assert "delete_everything" in answers[2]["message"]


async def test_a_batch_is_refused_in_revisions_without_batches(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "plain")
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"jsonrpc": "2.0", "id": 2, "method": "ping"}]
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {bearer}", "MCP-Protocol-Version": "2025-11-25"}
    refused = await client.post("/mcp/plain", json=batch, headers=headers)
    assert refused.status_code == 400
    assert "batches" in refused.json()["error"]["message"]


async def test_a_user_without_the_server_in_a_role_gets_403(gateway: RunningServer, client: httpx.AsyncClient) -> None:
    bearer = await token(gateway, client, "plain", user=GUEST)
    refused = await rpc(client, bearer, "plain", "tools/list")
    assert refused.status_code == 403
    assert "echo" not in refused.text


# -- transport rules ----------------------------------------------------------------------------------------------


async def test_a_wrong_origin_is_refused_before_anything_else(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "plain")
    refused = await rpc(client, bearer, "plain", "tools/list", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("method_header", "name_header"),
    [("tools/list", "echo"), ("tools/call", "delete_everything"), ("tools/call", None), (None, "echo")],
)
async def test_modern_requests_whose_headers_disagree_with_the_body_are_refused(
    gateway: RunningServer, client: httpx.AsyncClient, method_header: str | None, name_header: str | None
) -> None:
    bearer = await token(gateway, client, "plain")
    headers = {"MCP-Protocol-Version": "2026-07-28"}
    if method_header is not None:
        headers["Mcp-Method"] = method_header
    if name_header is not None:
        headers["Mcp-Name"] = name_header
    refused = await rpc(
        client, bearer, "plain", "tools/call", {"name": "echo", "arguments": {"text": "x"}}, headers=headers
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == HEADER_MISMATCH


async def test_base64_encoded_mcp_name_is_decoded_before_comparing(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "plain", user=ADMIN)
    headers = {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "=?base64?ZGVsZXRlX2V2ZXJ5dGhpbmc=?=",
    }
    # The header says delete_everything, the body says echo: a router trusting the header would be fooled.
    refused = await rpc(
        client, bearer, "plain", "tools/call", {"name": "echo", "arguments": {"text": "x"}}, headers=headers
    )
    assert refused.json()["error"]["code"] == HEADER_MISMATCH


async def test_a_session_id_is_refused_with_another_users_token(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    alice, admin = await token(gateway, client, "local"), await token(gateway, client, "local", user=ADMIN)
    init = await rpc(
        client,
        alice,
        "local",
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    )
    session = init.headers["mcp-session-id"]
    stolen = await rpc(client, admin, "local", "tools/list", headers={"Mcp-Session-Id": session})
    assert stolen.status_code == 404
    assert stolen.json()["error"]["code"] == SESSION_NOT_FOUND
    forged = await rpc(client, alice, "local", "tools/list", headers={"Mcp-Session-Id": session + "x"})
    assert forged.status_code == 404


# -- faults ------------------------------------------------------------------------------------------------------


async def test_an_upstream_hanging_past_the_timeout_gets_a_clean_error(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "slow")
    hung = await rpc(client, bearer, "slow", "tools/call", {"name": "sleep", "arguments": {"seconds": 5}})
    assert hung.status_code == 200
    error = final(hung)["error"]
    assert error["code"] == UPSTREAM_FAILED
    assert "in time" in error["message"]
    after = await rpc(client, bearer, "slow", "tools/call", {"name": "echo", "arguments": {"text": "still here"}})
    assert final(after)["result"]["content"][0]["text"] == "still here"


async def test_an_upstream_answering_garbage_gets_a_clean_error(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "broken")
    broken = await rpc(client, bearer, "broken", "tools/list")
    assert final(broken)["error"]["code"] == UPSTREAM_FAILED
    assert "not json" not in broken.text


async def test_an_upstream_killed_mid_call_gets_a_clean_error_and_the_next_call_works(
    gateway: RunningServer, client: httpx.AsyncClient, stack: Gateway
) -> None:
    bearer = await token(gateway, client, "plain")
    killed = await rpc(client, bearer, "plain", "tools/call", {"name": "crash", "arguments": {}})
    assert final(killed)["error"]["code"] == UPSTREAM_FAILED
    stack.plain.restart()
    after = await rpc(client, bearer, "plain", "tools/call", {"name": "echo", "arguments": {"text": "back"}})
    assert final(after)["result"]["content"][0]["text"] == "back"


async def test_a_10_mb_message_is_refused_and_the_next_call_works(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    bearer = await token(gateway, client, "plain")
    huge = await rpc(client, bearer, "plain", "tools/call", {"name": "echo", "arguments": {"text": "x" * 10_000_000}})
    assert huge.status_code == 413
    answer = await rpc(client, bearer, "plain", "tools/call", {"name": "big", "arguments": {"size": 10_000_000}})
    assert final(answer)["error"]["code"] == UPSTREAM_FAILED
    after = await rpc(client, bearer, "plain", "tools/call", {"name": "echo", "arguments": {"text": "ok"}})
    assert final(after)["result"]["content"][0]["text"] == "ok"


async def test_a_stdio_upstream_that_crashes_is_restarted(gateway: RunningServer, client: httpx.AsyncClient) -> None:
    bearer = await token(gateway, client, "local")
    init_params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    session = (await rpc(client, bearer, "local", "initialize", init_params)).headers["mcp-session-id"]
    crashed = await rpc(
        client, bearer, "local", "tools/call", {"name": "crash", "arguments": {}}, headers={"Mcp-Session-Id": session}
    )
    assert final(crashed)["error"]["code"] == UPSTREAM_FAILED
    fresh = (await rpc(client, bearer, "local", "initialize", init_params)).headers["mcp-session-id"]
    after = await rpc(
        client,
        bearer,
        "local",
        "tools/call",
        {"name": "echo", "arguments": {"text": "again"}},
        headers={"Mcp-Session-Id": fresh},
    )
    assert final(after)["result"]["content"][0]["text"] == "again"
