"""Tenants are realms: each its own issuer under /t/{id}; nothing of one tenant answers for another, and a
principal of one tenant meets 404 for every object of another (existence does not leak)."""

from __future__ import annotations

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.mcp_calls import call_mcp
from tests.support.oauth import REDIRECT_URI, Pkce, authorization_url, register
from tests.support.server import USER, USER_PASSWORD, RunningServer, random_name
from tests.support.tenants import access_token, add_servers, add_tenant


@pytest.fixture
async def tenant(server: RunningServer) -> str:
    tenant_id = random_name("acme")
    await add_tenant(server, tenant_id, users={"mallory": ("developer",), "dora": ("developer",)})
    return tenant_id


async def test_a_tenant_is_its_own_issuer(server: RunningServer, http: httpx.AsyncClient, tenant: str) -> None:
    issuer = f"{server.base_url}/t/{tenant}"
    # RFC 8414 §3.1: the well-known segment goes before the issuer's path; OIDC discovery appends it.
    for path in (
        f"/.well-known/oauth-authorization-server/t/{tenant}",
        f"/t/{tenant}/.well-known/openid-configuration",
    ):
        metadata = (await http.get(path)).json()
        assert metadata["issuer"] == issuer
        assert metadata["authorization_endpoint"] == f"{issuer}/authorize"
        assert metadata["token_endpoint"] == f"{issuer}/token"
    protected = (await http.get(f"/.well-known/oauth-protected-resource/t/{tenant}/mcp/demo")).json()
    assert protected["resource"] == f"{issuer}/mcp/demo"
    assert protected["authorization_servers"] == [issuer]
    challenge = await call_mcp(httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}"), None)
    assert challenge.status_code == 401
    assert f"/.well-known/oauth-protected-resource/t/{tenant}/mcp/demo" in challenge.headers["www-authenticate"]


async def test_unknown_tenants_and_the_default_tenant_under_t_are_not_found(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    for path in ("/t/nobody-here/.well-known/openid-configuration", f"/t/{server.settings.tenant}/authorize"):
        assert (await http.get(path)).status_code == 404
    assert (await http.get("/.well-known/oauth-authorization-server/t/nobody-here")).status_code == 404
    assert (await http.post("/t/nobody-here/mcp/demo", json={})).status_code == 404


async def test_tokens_work_in_their_tenant_and_are_404_in_any_other(
    server: RunningServer, http: httpx.AsyncClient, tenant: str
) -> None:
    own = await access_token(server, tenant, "mallory", f"{server.base_url}/t/{tenant}/mcp/demo")
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}", timeout=30) as tenant_http:
        assert (await call_mcp(tenant_http, own)).status_code == 200
        default_token = await access_token(server, server.settings.tenant, USER, server.resource())
        # The default tenant's principal asking for the other tenant's server: as if it did not exist.
        refused = await call_mcp(tenant_http, default_token)
        assert refused.status_code == 404
        assert "www-authenticate" not in refused.headers
    assert (await call_mcp(http, own)).status_code == 404
    assert (await call_mcp(http, default_token)).status_code == 200


async def test_a_server_of_another_tenant_is_not_found_whatever_the_token(
    server: RunningServer, http: httpx.AsyncClient, tenant: str
) -> None:
    secret_project = random_name("secret")
    await add_servers(server, tenant, (secret_project,))
    default_token = await access_token(server, server.settings.tenant, USER, server.resource())
    for token in (None, default_token):
        assert (await call_mcp(http, token, server_name=secret_project)).status_code == 404
    assert (await http.get(f"/.well-known/oauth-protected-resource/mcp/{secret_project}")).status_code == 404


async def test_users_sign_in_only_to_their_own_tenant(
    server: RunningServer, http: httpx.AsyncClient, tenant: str
) -> None:
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}", timeout=30) as tenant_http:
        client_id = (await register(tenant_http))["client_id"]
    url = f"/t/{tenant}" + authorization_url(client_id, f"{server.base_url}/t/{tenant}/mcp/demo", Pkce.new())
    async with Browser(server.base_url) as browser:
        page = await browser.get(url)
        refused = await browser.submit(page, {"username": USER, "password": USER_PASSWORD})
        assert refused.status_code == 401  # alice belongs to the default tenant only


async def test_a_session_in_one_tenant_is_no_session_in_another(
    server: RunningServer, http: httpx.AsyncClient, tenant: str
) -> None:
    default_client = (await register(http))["client_id"]
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}", timeout=30) as tenant_http:
        tenant_client = (await register(tenant_http))["client_id"]
    async with Browser(server.base_url) as browser:
        signed_in = await browser.authorize(
            authorization_url(default_client, server.resource(), Pkce.new()), username=USER, password=USER_PASSWORD
        )
        assert signed_in.headers["location"].startswith(REDIRECT_URI)
        # The same browser, with the default tenant's session cookie, asks the other tenant: a sign-in form.
        url = f"/t/{tenant}" + authorization_url(tenant_client, f"{server.base_url}/t/{tenant}/mcp/demo", Pkce.new())
        page = await browser.follow_to_client(await browser.get(url))
        assert page.status_code == 200
        assert f'action="/t/{tenant}/login"' in page.text


async def test_a_client_registered_in_one_tenant_is_unknown_to_another(
    server: RunningServer, http: httpx.AsyncClient, tenant: str
) -> None:
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}", timeout=30) as tenant_http:
        tenant_client = (await register(tenant_http))["client_id"]
    page = await http.get(authorization_url(tenant_client, server.resource(), Pkce.new()))
    assert page.status_code == 400
    assert "not registered here" in page.text
