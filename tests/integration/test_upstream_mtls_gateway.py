"""The whole gateway in front of an upstream MCP server that demands a client certificate: /mcp/{server} works with
the certificate from the vault, and an upstream whose key is not pinned is an upstream failure (JSON-RPC -32002).

Needs the registry to hand each HTTP upstream its VaultAccess (gateway/upstreams.py, tenancy/tenant.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from chamberlain.gateway.jsonrpc import UPSTREAM_FAILED
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.settings import CredentialKind
from tests.integration.test_upstream_mtls import SOURCE, Pki, pki  # noqa: F401 - the upstream fixture
from tests.support.browser import Browser
from tests.support.gateway import vault_of
from tests.support.mcp_calls import call_mcp
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register
from tests.support.server import RunningServer, running_server

ROLES = {"enterprise_roles": {"developer": {"mcp_servers": ["demo", "secure", "mispinned"]}}}


@dataclass
class Deployment:
    server: RunningServer
    pki: Pki


@pytest.fixture(scope="module")
def deployment(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:  # noqa: F811
    certificate = {"certificate": f"{SOURCE}/gateway-crt", "private_key": f"{SOURCE}/gateway-key"}
    common = {"url": pki.url, "ca": str(pki.ca_file), "client_certificate": certificate}
    servers = {
        "secure": {**common, "pinned_spki": [pki.upstream.spki_sha256.hex()]},
        "mispinned": {**common, "pinned_spki": [pki.authority.spki_sha256.hex()]},  # the CA's key, not the server's
    }
    with running_server(tmp_path_factory.mktemp("mtls-gateway"), servers=servers, roles=ROLES) as server:
        yield Deployment(server, pki)


@pytest.fixture
async def http(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    tenant = deployment.server.settings.tenant
    async with vault_of(deployment.server) as vault:
        for name, value in (
            ("gateway-crt", deployment.pki.gateway.certificate_pem),
            ("gateway-key", deployment.pki.gateway.key_pem),
        ):
            await vault.store(
                SecretRef(tenant, SOURCE, name), value, kind=CredentialKind.API_KEY, bindings=("secure", "mispinned")
            )
    async with httpx.AsyncClient(base_url=deployment.server.base_url, timeout=30) as client:
        yield client


async def token_for(server: RunningServer, http: httpx.AsyncClient, server_name: str) -> str:
    client_id, pkce = (await register(http))["client_id"], Pkce.new()
    url = authorization_url(client_id, server.resource(server_name), pkce)
    async with Browser(server.base_url) as browser:
        redirect = await browser.authorize(url, username=server.user, password=server.user_password)
    response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_the_gateway_reaches_an_mtls_upstream_with_the_vault_certificate(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    token = await token_for(deployment.server, http, "secure")
    response = await call_mcp(http, token, server_name="secure")
    assert response.status_code == 200, response.text
    assert {"echo", "add"} <= {tool["name"] for tool in response.json()["result"]["tools"]}


async def test_an_upstream_whose_key_is_not_pinned_is_an_upstream_failure(
    deployment: Deployment, http: httpx.AsyncClient
) -> None:
    token = await token_for(deployment.server, http, "mispinned")
    response = await call_mcp(http, token, server_name="mispinned")
    assert response.json()["error"]["code"] == UPSTREAM_FAILED
    assert "not reachable" in response.json()["error"]["message"]
