"""The LLM proxy (issue 9) through the real HTTP stack, against the Anthropic stand-in (anthropic_upstream.py).

What must hold: the request reaches the upstream as sent (headers the API defines, body byte for byte, the query),
with the tenant's API key from the vault and never the client's credential; only tokens for the tenant's LLM resource
(or virtual keys) get in, and those tokens get nowhere else; the roles' model policy holds, also for a routed model;
routes rewrite the model and are recorded; upstream errors keep their status, body and retry-after; a client leaving
cancels the upstream request; a team's requests use the team's key; rate limits refuse before anything goes upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest

from chamberlain.audit.events import Action
from chamberlain.identity.passwords import hash_password
from chamberlain.llm.virtual_keys import KeyDigester, new_virtual_key
from chamberlain.store.llm_keys import VirtualKeyRepository
from chamberlain.store.users import UserRepository
from tests.support.anthropic_upstream import Answer
from tests.support.audit_events import recorded
from tests.support.llm_gateway import (
    TEAM_KEY,
    UPSTREAM_KEY,
    LlmGateway,
    llm_gateway,
    new_request_id,
    store_api_keys,
    usage_of,
)
from tests.support.server import USER_PASSWORD, free_port
from tests.support.tenants import access_token, add_tenant

ROUTES = [
    {"model": "claude-auto", "to": "claude-haiku-4-5", "max_input_tokens": 1000, "tools": False},
    {"model": "claude-auto", "to": "claude-sonnet-4-5"},
]
TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"model": {"type": "string"}}}}]
REQUEST = {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]}
LIMITED_TENANT, DOWN_TENANT, PRICED_TENANT, MISPRICED_TENANT = "limited", "down", "priced", "mispriced"
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    prices = tmp_path_factory.mktemp("prices")
    # Ten times the list prices for Sonnet 4.5 (cache rates by Anthropic's multiples of the input price).
    (prices / "tenfold.yaml").write_text(
        "models:\n  claude-sonnet-4-5:\n    prices:\n      - {input: 30, output: 150}\n"
    )
    (prices / "broken.yaml").write_text("models:\n  claude-sonnet-4-5:\n    prices: [{input: lots}]\n")
    tenants = {
        PRICED_TENANT: {"llm": {"pricing_file": str(prices / "tenfold.yaml")}},
        MISPRICED_TENANT: {"llm": {"pricing_file": str(prices / "broken.yaml")}},
        LIMITED_TENANT: {"rate_limits": {"llm_tokens_per_user": "1000/minute"}},
        # Nothing listens there: the upstream is down.
        DOWN_TENANT: {"llm": {"upstream_url": f"http://127.0.0.1:{free_port()}"}},
    }
    with llm_gateway(
        tmp_path_factory.mktemp("llm-proxy"), llm={"routes": ROUTES, "max_request_bytes": MAX_BYTES}, tenants=tenants
    ) as running:
        yield running


_tokens: dict[tuple[str, str, str], str] = {}


@pytest.fixture(scope="module")
async def prepared(gateway: LlmGateway) -> LlmGateway:
    server = gateway.server
    await store_api_keys(server)
    async with server.engine() as database:
        users = UserRepository(database, server.settings.tenant)
        await users.add("ivy", hash_password(USER_PASSWORD), ("intern",))
        await users.add("pat", hash_password(USER_PASSWORD), ("platform",))
    for tenant in (LIMITED_TENANT, DOWN_TENANT, PRICED_TENANT, MISPRICED_TENANT):
        await add_tenant(server, tenant, users={"tess": ("developer",)})
        await store_api_keys(server, tenant)
    return gateway


async def token(gateway: LlmGateway, user: str = "alice", tenant: str | None = None, resource: str = "/llm") -> str:
    """`user`'s access token for a resource path of `tenant` (the LLM API by default)."""
    tenant = tenant or gateway.server.settings.tenant
    key = (tenant, user, resource)
    if key not in _tokens:
        issuer = gateway.server.state.tenants[tenant].issuer
        _tokens[key] = await access_token(gateway.server, tenant, user, issuer + resource)
    return _tokens[key]


@pytest.fixture
async def http(prepared: LlmGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=prepared.server.base_url, timeout=30) as client:
        yield client


def bearer(value: str, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}", "anthropic-version": "2023-06-01", **extra}


def error_of(response: httpx.Response) -> tuple[int, str]:
    document = response.json()
    assert document["type"] == "error", document
    return response.status_code, document["error"]["type"]


# -- forwarding ---------------------------------------------------------------------------------------------------


async def test_the_request_goes_upstream_as_sent_with_the_vault_key_and_never_the_clients_credential(
    http: httpx.AsyncClient, prepared: LlmGateway
) -> None:
    access = await token(prepared)
    # Odd spacing, escapes, a "model" key nested in a tool schema: the bytes must arrive unchanged.
    body = (
        b'{ "model" : "claude-sonnet-4-5","max_tokens":256,\n '
        b'"messages":[{"role":"user","content":"caf\\u00e9 \xe2\x9c\x93"}],"tools":'
        + orjson.dumps(TOOLS)
        + b', "metadata": {"user_id": "u-1"} }'
    )
    headers = {
        **bearer(access),
        "x-api-key": access,  # Claude Code's apiKeyHelper value is sent as both
        "anthropic-beta": "prompt-caching-2024-07-31,fine-grained-tool-streaming-2025-05-14",
        "content-type": "application/json",
        "cookie": "session=should-stay-here",
    }
    received = len(prepared.upstream.received)
    response = await http.post("/v1/messages?beta=true", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["request-id"].startswith("req_standin")
    seen = prepared.upstream.received[received]
    assert seen.target == "/v1/messages?beta=true"
    assert seen.body == body
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == headers["anthropic-beta"]
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in seen.headers
    assert "cookie" not in seen.headers
    assert all(access not in value for value in seen.headers.values())
    assert access.encode() not in seen.body


async def test_count_tokens_is_relayed(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello"}]}
    response = await http.post("/v1/messages/count_tokens", json=body, headers=bearer(await token(prepared)))
    assert response.status_code == 200, response.text
    assert response.json() == {"input_tokens": 3120}
    assert prepared.upstream.received[-1].target == "/v1/messages/count_tokens"


async def test_a_teams_requests_use_the_teams_key_read_from_the_vault_and_audited(
    http: httpx.AsyncClient, prepared: LlmGateway
) -> None:
    request_id = new_request_id()
    headers = bearer(await token(prepared, "pat"), **{"x-request-id": request_id})
    response = await http.post("/v1/messages", json=REQUEST, headers=headers)
    assert response.status_code == 200, response.text
    assert prepared.upstream.received[-1].headers["x-api-key"] == TEAM_KEY
    # The first use of the team's key read it from the vault, recorded with the user and this request.
    (read,) = await recorded(prepared.server, request_id, Action.CREDENTIAL_READ)
    assert read.outcome == "success"
    assert read.public["target"].endswith("/anthropic/platform")
    assert read.public["details"]["upstream"] == "llm"


# -- who gets in --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no credential"),
        ({"authorization": "Basic YWxpY2U6c2VjcmV0"}, "another scheme"),
        ({"authorization": "Bearer not-a-token"}, "garbage"),
        ({"x-api-key": "sk-ant-api03-someone-elses-anthropic-key"}, "an Anthropic key"),
        ({"x-api-key": "chk_" + "A" * 43}, "an unknown virtual key"),
    ],
)
async def test_requests_without_a_usable_credential_are_refused_in_the_apis_format(
    http: httpx.AsyncClient, prepared: LlmGateway, headers: dict[str, str], reason: str
) -> None:
    received = len(prepared.upstream.received)
    response = await http.post("/v1/messages", json=REQUEST, headers=headers)
    assert error_of(response) == (401, "authentication_error"), reason
    assert 'resource_metadata="' in response.headers["www-authenticate"]
    assert len(prepared.upstream.received) == received


async def test_an_mcp_token_does_not_work_at_the_llm_api(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    mcp_token = await token(prepared, resource="/mcp/demo")
    response = await http.post("/v1/messages", json=REQUEST, headers=bearer(mcp_token))
    assert error_of(response) == (401, "authentication_error")
    assert "not issued for this resource" in response.json()["error"]["message"]


async def test_an_llm_token_does_not_work_at_an_mcp_server(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    llm_token = await token(prepared)
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    mcp_headers = {"authorization": f"Bearer {llm_token}", "accept": "application/json, text/event-stream"}
    response = await http.post("/mcp/demo", json=ping, headers=mcp_headers)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_token_of_another_tenant_does_not_work_here(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    elsewhere = await token(prepared, "tess", LIMITED_TENANT)
    response = await http.post("/v1/messages", json=REQUEST, headers=bearer(elsewhere))
    assert error_of(response) == (401, "authentication_error")
    # ... and at its own tenant's path it does.
    response = await http.post(f"/t/{LIMITED_TENANT}/v1/messages", json=REQUEST, headers=bearer(elsewhere))
    assert response.status_code == 200, response.text


async def test_the_llm_resource_publishes_its_metadata(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    response = await http.get("/.well-known/oauth-protected-resource/llm")
    assert response.status_code == 200
    assert response.json()["resource"] == prepared.resource
    assert response.json()["authorization_servers"] == [prepared.server.base_url]


async def test_a_virtual_key_works_until_it_is_revoked_and_only_in_its_tenant(
    http: httpx.AsyncClient, prepared: LlmGateway
) -> None:
    server = prepared.server
    key = new_virtual_key()
    async with server.engine() as database:
        alice = await UserRepository(database, server.settings.tenant).get_by_username("alice")
        assert alice is not None
        keys = VirtualKeyRepository(database, server.settings.tenant)
        row = await keys.add(alice.id, KeyDigester(server.state.master_key).digest(key), name="ci", expires_at=None)
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "x-request-id": new_request_id()}
    response = await _eventually_ok(http, "/v1/messages", headers)
    record = await usage_of(server, response.request.headers["x-request-id"])
    assert record["user_id"] == alice.id
    assert record["client_id"] == f"virtual-key:{row.id}"
    assert prepared.upstream.received[-1].headers["x-api-key"] == UPSTREAM_KEY  # never the virtual key
    # Another tenant's path does not know it.
    response = await http.post(f"/t/{LIMITED_TENANT}/v1/messages", json=REQUEST, headers=headers)
    assert error_of(response) == (401, "authentication_error")
    async with server.engine() as database:
        assert await VirtualKeyRepository(database, server.settings.tenant).revoke(row.id)
    for _ in range(100):  # the refresher picks the revocation up within a second or two
        response = await http.post("/v1/messages", json=REQUEST, headers=headers)
        if response.status_code == 401:
            break
        await asyncio.sleep(0.1)
    assert error_of(response) == (401, "authentication_error")


async def _eventually_ok(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> httpx.Response:
    """A new virtual key is known to the gateway once its refresher has run (about a second)."""
    for _ in range(100):
        response = await http.post(path, json=REQUEST, headers=headers)
        if response.status_code != 401:
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 200, response.text
    return response


# -- model policy and routing -------------------------------------------------------------------------------------


async def test_a_model_the_roles_do_not_permit_is_refused_and_recorded(
    http: httpx.AsyncClient, prepared: LlmGateway
) -> None:
    request_id = new_request_id()
    received = len(prepared.upstream.received)
    response = await http.post("/v1/messages", json=REQUEST, headers=bearer(await token(prepared, "ivy"), **{
        "x-request-id": request_id}))  # fmt: skip
    assert error_of(response) == (403, "permission_error")
    assert len(prepared.upstream.received) == received
    (event,) = await recorded(prepared.server, request_id, Action.LLM_REQUEST)
    assert event.outcome == "denied"
    assert event.public["details"]["model"] == "claude-sonnet-4-5"


async def test_a_route_rewrites_the_model_and_only_the_model_and_the_rewrite_is_recorded(
    http: httpx.AsyncClient, prepared: LlmGateway
) -> None:
    request_id = new_request_id()
    body = orjson.dumps({**REQUEST, "model": "claude-auto"})
    headers = {**bearer(await token(prepared), **{"x-request-id": request_id}), "content-type": "application/json"}
    response = await http.post("/v1/messages", content=body, headers=headers)
    assert response.status_code == 200, response.text
    seen = prepared.upstream.received[-1]
    assert seen.body == body.replace(b'"claude-auto"', b'"claude-haiku-4-5"')  # short, no tools: the small model
    (event,) = await recorded(prepared.server, request_id, Action.LLM_REQUEST)
    assert event.outcome == "success"
    assert event.public["details"]["requested_model"] == "claude-auto"
    assert event.public["details"]["model"] == "claude-haiku-4-5"
    record = await usage_of(prepared.server, request_id)
    assert (record["model"], record["requested_model"]) == ("claude-haiku-4-5", "claude-auto")
    # With tools, the second rule: the larger model.
    response = await http.post("/v1/messages", json={**REQUEST, "model": "claude-auto", "tools": TOOLS},
                               headers=bearer(await token(prepared)))  # fmt: skip
    assert response.status_code == 200, response.text
    assert prepared.upstream.received[-1].json["model"] == "claude-sonnet-4-5"


async def test_a_route_cannot_lead_around_the_model_policy(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    # The intern may use haiku: a short request for the alias is served; one with tools would be sonnet: refused.
    intern = await token(prepared, "ivy")
    response = await http.post("/v1/messages", json={**REQUEST, "model": "claude-auto"}, headers=bearer(intern))
    assert response.status_code == 200, response.text
    response = await http.post(
        "/v1/messages", json={**REQUEST, "model": "claude-auto", "tools": TOOLS}, headers=bearer(intern)
    )
    assert error_of(response) == (403, "permission_error")


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"not json", 400, "invalid_request_error"),
        (b'{"model":"claude-sonnet-4-5","messages":[]}', 400, "invalid_request_error"),  # no max_tokens
        (b'{"model":"claude-haiku-4-5","max_tokens":5,"model":"claude-opus-4-5","messages":[]}', 400,
         "invalid_request_error"),  # which model? the parsers disagree, so neither
        (b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"' + b"x" * MAX_BYTES
         + b'"}]}', 413, "request_too_large"),
    ],
)  # fmt: skip
async def test_malformed_requests_are_refused_before_anything_goes_upstream(
    http: httpx.AsyncClient, prepared: LlmGateway, body: bytes, status: int, kind: str
) -> None:
    received = len(prepared.upstream.received)
    headers = {**bearer(await token(prepared)), "content-type": "application/json"}
    response = await http.post("/v1/messages", content=body, headers=headers)
    assert error_of(response) == (status, kind)
    assert len(prepared.upstream.received) == received


# -- the upstream's failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (Answer(status=429, fixture="error_rate_limit.json", retry_after="17"), "rate_limit_error"),
        (Answer(status=529, fixture="error_overloaded.json", retry_after="3"), "overloaded_error"),
    ],
)
async def test_upstream_errors_keep_their_status_body_and_retry_after(
    http: httpx.AsyncClient, prepared: LlmGateway, answer: Answer, kind: str
) -> None:
    prepared.upstream.script.append(answer)
    response = await http.post("/v1/messages", json={**REQUEST, "stream": True}, headers=bearer(await token(prepared)))
    assert error_of(response) == (answer.status, kind)
    assert response.content == prepared.upstream.fixture(answer.fixture or "")
    assert response.headers["retry-after"] == answer.retry_after


async def test_an_upstream_error_without_the_apis_body_gets_one(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    prepared.upstream.script.append(Answer(status=500, content=b"<html><body>Internal error</body></html>"))
    response = await http.post("/v1/messages", json=REQUEST, headers=bearer(await token(prepared)))
    assert error_of(response) == (500, "api_error")


async def test_an_unreachable_upstream_is_a_clear_error(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    access = await token(prepared, "tess", DOWN_TENANT)
    response = await http.post(f"/t/{DOWN_TENANT}/v1/messages", json=REQUEST, headers=bearer(access))
    assert error_of(response) == (502, "api_error")
    assert response.json()["error"]["message"] == "the model API is not reachable"


async def test_a_client_leaving_cancels_the_upstream_request(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    prepared.upstream.script.append(Answer(delay=1.5))
    abandoned = prepared.upstream.abandoned
    with pytest.raises(httpx.ReadTimeout):  # httpx closes the connection as it gives up
        await http.post("/v1/messages", json=REQUEST, headers=bearer(await token(prepared)), timeout=0.5)
    # The gateway closed its upstream connection before the answer came: the stand-in saw the request abandoned.
    assert await asyncio.to_thread(prepared.upstream.wait_for_abandoned, abandoned + 1)


# -- limits -------------------------------------------------------------------------------------------------------


async def test_the_token_rate_limit_refuses_before_anything_goes_upstream(
    http: httpx.AsyncClient, prepared: LlmGateway
) -> None:
    access = await token(prepared, "tess", LIMITED_TENANT)
    received = len(prepared.upstream.received)
    response = await http.post(
        f"/t/{LIMITED_TENANT}/v1/messages", json={**REQUEST, "max_tokens": 5000}, headers=bearer(access)
    )
    assert error_of(response) == (429, "rate_limit_error")
    assert int(response.headers["retry-after"]) >= 1
    assert len(prepared.upstream.received) == received


# -- prices -------------------------------------------------------------------------------------------------------


async def test_a_tenants_price_file_prices_its_requests(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    request_id = new_request_id()
    access = await token(prepared, "tess", PRICED_TENANT)
    response = await http.post(
        f"/t/{PRICED_TENANT}/v1/messages", json=REQUEST, headers=bearer(access, **{"x-request-id": request_id})
    )
    assert response.status_code == 200, response.text
    record = await usage_of(prepared.server, request_id)
    assert record["cost_nanousd"] == 2_643_300_000  # ten times message_tool_use.json's $0.26433 at list prices


async def test_an_invalid_price_file_refuses_rather_than_guess(http: httpx.AsyncClient, prepared: LlmGateway) -> None:
    access = await token(prepared, "tess", MISPRICED_TENANT)
    received = len(prepared.upstream.received)
    response = await http.post(f"/t/{MISPRICED_TENANT}/v1/messages", json=REQUEST, headers=bearer(access))
    assert error_of(response) == (500, "api_error")
    assert len(prepared.upstream.received) == received
