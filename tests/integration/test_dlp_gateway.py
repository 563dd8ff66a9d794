"""Issue 8, acceptance 1 and 2, through the real HTTP stack: a gateway in front of an SDK-built knowledge base and
an external web search. Results are kept within each caller's clearance item by item; confidential content fetched
from an internal tool cannot be passed to an external one (the upstream records what it got: nothing)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chamberlain.audit.events import Action
from chamberlain.identity.passwords import hash_password
from chamberlain.store.users import UserRepository
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.settings import CredentialKind
from tests.integration.test_budgets_alerts import receiving, verify
from tests.support.audit_events import recorded
from tests.support.canary import watch
from tests.support.dlp_upstream import ITEMS, REPORT
from tests.support.gateway import vault_of
from tests.support.server import USER_PASSWORD, RunningServer, running_server
from tests.support.tenants import access_token, add_tenant
from tests.support.upstreams import HttpUpstreamProcess

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
ROLES: dict[str, Any] = {
    "enterprise_roles": {
        "developer": {
            "mcp_servers": ["knowledge", "websearch", "streamer"],
            "data_classification_access": ["public", "internal"],
        },
        "senior_developer": {
            "mcp_servers": ["knowledge", "websearch"],
            "data_classification_access": ["public", "internal", "confidential"],
        },
        "security_officer": {"mcp_servers": "*", "data_classification_access": "*"},
    }
}
PEOPLE = {"dev": "developer", "senior": "senior_developer", "officer": "security_officer"}
# The audit issue's example rules (audit levels decide how much of each event is kept: summary drops details).
RULES = [
    {
        "pattern": "customer_data|financial_records",
        "classification": "confidential",
        "retention_days": 2555,
        "audit_level": "detailed",
    },
    {"pattern": "public_documentation", "classification": "public", "external_lookup": True, "retention_days": 365},
    {
        "pattern": "trade_secrets|m&a_documents",
        "classification": "restricted",
        "retention_days": 3650,
        "audit_level": "forensic",
    },
]
URIS = [uri for uri, _, _ in ITEMS]
ALERT_KEY = os.urandom(32)  # public, internal, confidential, restricted


@dataclass
class Stack:
    gateway: RunningServer
    record: Path  # what the external upstream received, one JSON line per call


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("dlp")
    record = directory / "received.jsonl"
    record.touch()
    upstream = HttpUpstreamProcess("--record", str(record), module="tests.support.dlp_upstream")
    upstream.start()
    splitting = HttpUpstreamProcess("--split-stream", module="tests.support.dlp_upstream")
    splitting.start()
    servers = {
        "knowledge": {"url": upstream.url, "external_tools": ["web_search"]},
        "websearch": {"url": upstream.url, "external": True},
        "streamer": {"url": splitting.url},
    }
    try:
        # Private networks allowed: the alert test's webhook receiver listens on loopback.
        settings = {"audit": {"classification_rules": RULES}, "registration": {"allow_private_networks": True}}
        with running_server(directory / "data", servers=servers, roles=ROLES, **settings) as gateway:
            asyncio.run(_add_people(gateway))
            yield Stack(gateway, record)
    finally:
        upstream.kill()
        splitting.kill()


async def _add_people(gateway: RunningServer) -> None:
    async with gateway.engine() as database:
        users = UserRepository(database, gateway.settings.tenant)
        for name, role in PEOPLE.items():
            await users.add(name, hash_password(USER_PASSWORD), (role,))


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway.base_url, timeout=30) as client:
        yield client


_tokens: dict[tuple[str, str], str] = {}


async def token(stack: Stack, user: str, server: str) -> str:
    if (user, server) not in _tokens:
        gateway = stack.gateway
        _tokens[user, server] = await access_token(gateway, gateway.settings.tenant, user, gateway.resource(server))
    return _tokens[user, server]


async def call(http: httpx.AsyncClient, bearer: str, server: str, tool: str, **arguments: Any) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    return await http.post(f"/mcp/{server}", json=body, headers={**MCP_HEADERS, "Authorization": f"Bearer {bearer}"})


def received(stack: Stack) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stack.record.read_text().splitlines()]


# -- acceptance 1: clearance, item by item ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "visible"),
    [("dev", URIS[:2]), ("senior", URIS[:3]), ("officer", URIS)],
)
async def test_a_search_result_keeps_the_items_within_the_callers_clearance(
    stack: Stack, http: httpx.AsyncClient, user: str, visible: list[str]
) -> None:
    response = await call(http, await token(stack, user, "knowledge"), "knowledge", "search", query="plans")
    assert response.status_code == 200
    result = response.json()["result"]
    items = [item for item in result["content"] if item["type"] == "resource"]
    assert [item["resource"]["uri"] for item in items] == visible
    assert [row["uri"] for row in result["structuredContent"]["results"]] == visible
    withheld = len(URIS) - len(visible)
    notes = [item["text"] for item in result["content"] if item["type"] == "text"]
    if withheld:
        assert notes == [f"Chamberlain withheld part of this result: {withheld} classified above your clearance."]
        assert result["_meta"]["io.chamberlain/dlp"] == {"withheld": withheld, "blocked": 0}
        # What was withheld appears nowhere in the answer, not even in the structured copy.
        assert "Initech" not in response.text
        request_id = response.headers["x-request-id"]
        [event] = await recorded(stack.gateway, request_id, Action.DLP_WITHHELD)
        assert event.public["outcome"] == "denied"
        assert event.public["details"]["withheld"] == withheld
        assert event.public["classification"] == "restricted"
    else:
        assert notes == []


async def test_a_restricted_item_reaches_no_one_without_restricted_clearance(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    for user in ("dev", "senior"):
        response = await call(http, await token(stack, user, "knowledge"), "knowledge", "search", query="falcon")
        assert "kb://board/acquisition" not in response.text
        assert "Project Falcon" not in response.text


# -- acceptance 2: exfiltration ------------------------------------------------------------------------------------


async def test_confidential_content_fetched_internally_cannot_be_sent_to_an_external_tool(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    senior = await token(stack, "senior", "knowledge")
    fetched = await call(http, senior, "knowledge", "read_report", name="q3")
    assert fetched.json()["result"]["content"][0]["text"] == REPORT  # within the senior developer's clearance
    before = received(stack)
    # The model pastes a sentence of it (without the words the rules know) into the external search.
    pasted = "Globex spent 1.2 million with us this year and plans to double its order volume"
    for server, bearer in (("websearch", await token(stack, "senior", "websearch")), ("knowledge", senior)):
        refused = await call(http, bearer, server, "web_search", query=f"market size: {pasted}")
        error = refused.json()["error"]
        assert error["code"] == -32001
        assert "'web_search' is external" in error["message"]
        assert "confidential data" in error["message"]
        assert "fingerprint" in error["message"]
        assert pasted not in error["message"]
        [event] = await recorded(stack.gateway, refused.headers["x-request-id"], Action.EXTERNAL_LOOKUP_BLOCKED)
        assert event.public["details"]["sources"] == ["fingerprint"]
    assert received(stack) == before  # nothing reached the external upstream


async def test_arguments_the_rules_or_detectors_classify_confidential_never_reach_an_external_tool(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    bearer = await token(stack, "dev", "websearch")
    before = received(stack)
    refused = await call(http, bearer, "websearch", "web_search", query="customer_data for Acme")
    assert refused.json()["error"]["code"] == -32001, refused.text
    assert "confidential data was found in the arguments (rule)" in refused.json()["error"]["message"]
    assert received(stack) == before
    # A card number is redacted (its default action): what is left may go out, and only that does.
    answer = await call(http, bearer, "websearch", "web_search", query="who issued card 4111 1111 1111 1111")
    assert "result" in answer.json(), answer.text
    assert received(stack)[len(before) :] == [{"query": "who issued card [REDACTED:credit_card]"}]


async def test_public_arguments_reach_the_external_tool(stack: Stack, http: httpx.AsyncClient) -> None:
    bearer = await token(stack, "dev", "websearch")
    answer = await call(http, bearer, "websearch", "web_search", query="public_documentation on HTTP caching")
    assert answer.json()["result"]["content"][0]["text"].startswith("3 results")
    assert received(stack)[-1] == {"query": "public_documentation on HTTP caching"}


async def test_a_value_split_across_stream_chunks_and_data_lines_is_redacted(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    response = await call(http, await token(stack, "dev", "streamer"), "streamer", "anything")
    assert response.headers["content-type"].startswith("text/event-stream")
    [data] = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
    result = json.loads(data)["result"]
    assert result["content"][0]["text"] == "card on file: [REDACTED:credit_card], thanks"
    assert "1111" not in response.text


# -- acceptance 5: a detector that fails closes the door, and the gateway stays up ---------------------------------


async def test_a_custom_pattern_that_backtracks_catastrophically_fails_closed(
    stack: Stack, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    patterns = tmp_path / "pii_patterns.json"
    patterns.write_text(json.dumps([{"name": "order_code", "regex": "(a|aa)+$", "classification": "internal"}]))
    tenant = "hostile"
    roles = {
        "enterprise_roles": {
            "developer": {"mcp_servers": ["demo"], "data_classification_access": ["public", "internal"]}
        }
    }
    config = {"roles": roles, "dlp": {"patterns_file": str(patterns), "detector_timeout_ms": 20}}
    await add_tenant(stack.gateway, tenant, users={"eve": ("developer",)}, config=config)
    base = f"{stack.gateway.base_url}/t/{tenant}"
    bearer = await access_token(stack.gateway, tenant, "eve", f"{base}/mcp/demo")
    hostile = "a" * 40 + "!"
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": hostile}},
    }
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {bearer}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        answer = await client.post("/mcp/demo", json=body, headers=headers)
        result = answer.json()["result"]
        assert hostile not in answer.text  # treated as restricted: above the developer's clearance
        assert result["_meta"]["io.chamberlain/dlp"]["withheld"] == 1
        [event] = await recorded(stack.gateway, answer.headers["x-request-id"], Action.DLP_WITHHELD, tenant)
        assert event.public["details"]["failed_detectors"] == ["order_code"]
        body["params"]["arguments"]["text"] = "hello"  # the gateway is still up and serves the next call
        answer = await client.post("/mcp/demo", json=body, headers=headers)
        assert answer.json()["result"]["content"][0]["text"] == "hello"


# -- alerts ------------------------------------------------------------------------------------------------------


async def test_an_alert_action_sends_a_signed_webhook_naming_the_compliance_contact(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    tenant, email = "alerted", "jane.roe@corp.example"
    secret = "whsec_" + base64.b64encode(ALERT_KEY).decode()
    watch(secret)
    async with receiving((500, {}), (200, {})) as receiver:
        alerts = {"webhook": receiver.url, "webhook_secret": "alerts/dlp", "compliance_contact": "dpo@corp.example"}
        roles = {"enterprise_roles": {"developer": {"mcp_servers": ["demo"], "data_classification_access": "*"}}}
        config = {"roles": roles, "dlp": {"detectors": {"email_address": {"action": "alert"}}, "alerts": alerts}}
        await add_tenant(stack.gateway, tenant, users={"ann": ("developer",)}, config=config)
        async with vault_of(stack.gateway) as vault:
            ref = SecretRef(tenant, "alerts", "dlp")
            await vault.store(ref, secret.encode(), kind=CredentialKind.API_KEY, bindings=["dlp-alerts"])
        base = f"{stack.gateway.base_url}/t/{tenant}"
        bearer = await access_token(stack.gateway, tenant, "ann", f"{base}/mcp/demo")
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
        body["params"]["arguments"] = {"text": f"write to {email}"}
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {bearer}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            answer = await client.post("/mcp/demo", json=body, headers=headers)
        assert answer.json()["result"]["content"][0]["text"] == f"write to {email}"  # alert: passed on
        deadline = asyncio.get_running_loop().time() + 15  # the sender runs on the gateway's own loop
        while len(receiver.deliveries) < 3 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    attempts: dict[str, list[Any]] = {}
    for delivery in receiver.deliveries:
        attempts.setdefault(delivery.headers["webhook-id"], []).append(delivery)
    # One alert for the arguments, one for the answer echoing them; the first attempt met the 500 and was retried.
    assert sorted(len(tries) for tries in attempts.values()) == [1, 2]
    sent = []
    for tries in attempts.values():
        verify(tries[-1], ALERT_KEY)
        sent.append(json.loads(tries[-1].body))
    assert sorted(alert["data"]["direction"] for alert in sent) == ["request", "response"]
    for alert in sent:
        assert alert["type"] == "dlp.detection"
        assert alert["data"]["compliance_contact"] == "dpo@corp.example"
        assert set(alert["data"]["counts"]) == {"email_address"}  # the answer carries it twice (structured too)
    assert email.encode() not in b"".join(delivery.body for delivery in receiver.deliveries)
