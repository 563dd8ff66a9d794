"""Issue 8: the external lookup gate on the LLM proxy. With `dlp.llm_gate`, what a tenant sends to the model API
(an external service) is held to the levels external lookups may receive; `redact` actions apply to it and `block`
actions refuse it, in the Anthropic API's error format, before anything leaves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from chamberlain.audit.events import Action
from tests.support.audit_events import recorded
from tests.support.llm_gateway import LlmGateway, llm_gateway, new_request_id, store_api_keys
from tests.support.tenants import access_token

RULES = [{"pattern": "customer_data", "classification": "confidential", "retention_days": 30}]
DLP = {"llm_gate": True, "detectors": {"email_address": {"action": "redact"}, "us_ssn": {"action": "block"}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    with llm_gateway(tmp_path_factory.mktemp("llm-gate"), dlp=DLP, audit={"classification_rules": RULES}) as running:
        yield running


@pytest.fixture(scope="module")
async def bearer(gateway: LlmGateway) -> str:
    await store_api_keys(gateway.server)
    server = gateway.server
    return await access_token(server, server.settings.tenant, "alice", gateway.resource)


@pytest.fixture
async def http(gateway: LlmGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.server.base_url, timeout=30) as client:
        yield client


def request(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


async def send(http: httpx.AsyncClient, bearer: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {bearer}", "anthropic-version": "2023-06-01", "x-request-id": new_request_id()}
    return await http.post("/v1/messages", json=body, headers=headers)


async def test_confidential_content_is_refused_before_it_reaches_the_model_api(
    gateway: LlmGateway, http: httpx.AsyncClient, bearer: str
) -> None:
    received = len(gateway.upstream.received)
    body = request("Summarise this", system="You are given customer_data exports from the CRM.")
    response = await send(http, bearer, body)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "permission_error"
    assert "the model API is external" in error["message"]
    assert "confidential" in error["message"]
    assert len(gateway.upstream.received) == received
    [event] = await recorded(gateway.server, response.request.headers["x-request-id"], Action.EXTERNAL_LOOKUP_BLOCKED)
    assert event.public["details"]["level"] == "confidential"


async def test_a_blocked_detector_refuses_and_a_redacting_one_rewrites_what_is_sent(
    gateway: LlmGateway, http: httpx.AsyncClient, bearer: str
) -> None:
    received = len(gateway.upstream.received)
    blocked = await send(http, bearer, request("my SSN is 536-22-8741, file my taxes"))
    assert blocked.status_code == 403
    assert "us_ssn" in blocked.json()["error"]["message"]
    assert "536-22-8741" not in blocked.text
    assert len(gateway.upstream.received) == received

    redacted = await send(http, bearer, request("write to jane.doe@example.com about the offsite"))
    assert redacted.status_code == 200, redacted.text
    sent = orjson.loads(gateway.upstream.received[-1].body)
    assert sent["messages"][0]["content"] == "write to [REDACTED:email_address] about the offsite"


async def test_public_content_goes_through_byte_for_byte(
    gateway: LlmGateway, http: httpx.AsyncClient, bearer: str
) -> None:
    body = request("What is the capital of France?")
    response = await send(http, bearer, body)
    assert response.status_code == 200, response.text
    assert orjson.loads(gateway.upstream.received[-1].body) == body
