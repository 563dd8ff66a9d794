"""The authorization code flow end to end through the real HTTP stack: register, sign in, consent, tokens, MCP."""

from __future__ import annotations

import httpx

from tests.support.browser import Browser
from tests.support.mcp_calls import call_mcp
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, refresh, register
from tests.support.server import RunningServer


async def test_code_flow_issues_audience_bound_tokens_that_reach_the_mcp_server(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client = await register(http)
    pkce = Pkce.new()
    url = authorization_url(client["client_id"], server.resource(), pkce, state="xyz")
    async with Browser(server.base_url) as browser:
        redirect = await browser.authorize(url, username=server.user, password=server.user_password)
    params = redirect_params(redirect)
    assert params["state"] == "xyz"
    assert params["iss"] == server.base_url

    token_response = await exchange_code(http, client["client_id"], params["code"], pkce.verifier)
    assert token_response.status_code == 200, token_response.text
    assert token_response.headers["cache-control"] == "no-store"
    tokens = token_response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"] == "mcp:tools"

    call = await call_mcp(http, tokens["access_token"])
    assert call.status_code == 200, call.text
    assert {tool["name"] for tool in call.json()["result"]["tools"]} >= {"echo", "add"}

    refreshed = await refresh(http, client["client_id"], tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]
