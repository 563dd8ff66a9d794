"""The official Python MCP SDK client against Chamberlain, headless: `OAuthClientProvider` discovers the
authorization server from the 401 challenge, registers, gets a code through the real sign-in and consent forms,
and the SDK `Client` lists and calls the demo tools, in the legacy (initialize) and the 2026-07-28 protocol modes.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from mcp_types import TextContent
from sqlalchemy import text

from tests.support.mcp_sdk import (
    SDK_REDIRECT_URI,
    HeadlessAuthorizer,
    InMemoryTokenStorage,
    jwt_claims,
    sdk_client,
)
from tests.support.server import RunningServer

pytestmark = pytest.mark.interop

MODES = ["legacy", "2026-07-28"]
WELL_KNOWN_PRM = "/.well-known/oauth-protected-resource/mcp/demo"
WELL_KNOWN_AS = "/.well-known/oauth-authorization-server"


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_discovers_registers_authorizes_and_calls_tools(server: RunningServer, mode: str) -> None:
    storage = InMemoryTokenStorage()
    authorizer = HeadlessAuthorizer(server)

    async with sdk_client(server, storage, authorizer, mode=mode) as connection:
        expected_version = "2025-11-25" if mode == "legacy" else "2026-07-28"
        assert connection.client.protocol_version == expected_version
        tools = await connection.client.list_tools()
        assert {tool.name for tool in tools.tools} >= {"echo", "add"}
        result = await connection.client.call_tool("add", {"a": 2, "b": 3})
        assert not result.is_error, result
        assert result.structured_content == {"result": 5} or [
            block.text for block in result.content if isinstance(block, TextContent)
        ] == ["5"]
        exchanges = connection.transport.exchanges

    # Discovery went 401 challenge -> protected resource metadata -> authorization server metadata -> /register
    # -> /token, and only then the MCP request with a bearer token succeeded.
    paths = [(exchange.method, exchange.path, exchange.status) for exchange in exchanges]
    first = exchanges[0]
    assert (first.method, first.path, first.status) == ("POST", "/mcp/demo", 401), paths
    assert first.www_authenticate is not None
    assert f'resource_metadata="{server.base_url}{WELL_KNOWN_PRM}"' in first.www_authenticate
    assert paths[1:5] == [
        ("GET", WELL_KNOWN_PRM, 200),
        ("GET", WELL_KNOWN_AS, 200),
        ("POST", "/register", 201),
        ("POST", "/token", 200),
    ], paths
    # 202 Accepted answers the legacy handshake's notifications/initialized (streamable HTTP transport).
    assert all(status in (200, 202) for method, path, status in paths[5:] if path == "/mcp/demo"), repr(paths)

    # The client registered with our /register: the SDK stored the client_id we issued, bound to our issuer.
    assert storage.client_info is not None
    assert storage.client_info.client_id
    assert storage.client_info.issuer == server.base_url
    assert [str(uri) for uri in storage.client_info.redirect_uris or []] == [SDK_REDIRECT_URI]
    async with server.engine() as engine, engine.connect() as db:
        registered = (await db.execute(text("SELECT client_id FROM clients"))).scalars().all()
    assert storage.client_info.client_id in registered

    # One authorization, at our endpoint, for this resource (RFC 8707), with PKCE S256.
    assert len(authorizer.authorization_urls) == 1
    authorization_url = urlsplit(authorizer.authorization_urls[0])
    assert f"{authorization_url.scheme}://{authorization_url.netloc}{authorization_url.path}" == (
        f"{server.base_url}/authorize"
    )
    query = {key: values[0] for key, values in parse_qs(authorization_url.query).items()}
    assert query["resource"] == server.resource("demo")
    assert query["code_challenge_method"] == "S256"
    assert query["client_id"] == storage.client_info.client_id
    assert "mcp:tools" in query["scope"].split()  # from the challenge's scope / the PRM's scopes_supported

    # The access token is audience-bound to exactly this MCP server.
    assert storage.tokens is not None
    claims = jwt_claims(storage.tokens.access_token)
    assert claims["aud"] == server.resource("demo")
    assert claims["iss"] == server.base_url
    assert "mcp:tools" in claims["scope"].split()

    # A second client with the same storage reuses the stored token: no new authorization, no 401.
    access_token = storage.tokens.access_token
    async with sdk_client(server, storage, authorizer, mode=mode) as connection:
        tools = await connection.client.list_tools()
        assert {tool.name for tool in tools.tools} >= {"echo", "add"}
        exchanges = connection.transport.exchanges
    assert len(authorizer.authorization_urls) == 1
    assert [exchange.path for exchange in exchanges if exchange.path != "/mcp/demo"] == []
    assert all(exchange.status in (200, 202) for exchange in exchanges), exchanges
    assert storage.tokens.access_token == access_token


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_refreshes_an_expired_access_token(server: RunningServer, mode: str) -> None:
    storage = InMemoryTokenStorage()
    authorizer = HeadlessAuthorizer(server)
    async with sdk_client(server, storage, authorizer, mode=mode) as connection:
        await connection.client.list_tools()
        provider = connection.provider
    assert storage.tokens is not None
    assert storage.tokens.refresh_token
    first = storage.tokens

    # The SDK decides to refresh from `OAuthContext.token_expiry_time` before each request; pretend it has passed.
    provider.context.token_expiry_time = time.time() - 1
    async with sdk_client(server, storage, authorizer, mode=mode, provider=provider) as connection:
        tools = await connection.client.list_tools()
        assert {tool.name for tool in tools.tools} >= {"echo", "add"}
        exchanges = connection.transport.exchanges

    assert len(authorizer.authorization_urls) == 1, "refresh must not start a new authorization"
    assert (exchanges[0].method, exchanges[0].path, exchanges[0].status) == ("POST", "/token", 200), exchanges
    assert all(exchange.status in (200, 202) for exchange in exchanges), exchanges
    assert storage.tokens.access_token != first.access_token
    assert storage.tokens.refresh_token != first.refresh_token  # OAuth 2.1 §4.3.1: public clients' tokens rotate
    assert jwt_claims(storage.tokens.access_token)["aud"] == server.resource("demo")
