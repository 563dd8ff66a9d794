"""RFC 8705 over a real mTLS gateway: client authentication with a certificate (§2), certificate-bound access tokens
(§3) refused at the resource without their certificate, introspection's cnf, and unbound tokens as before."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chamberlain.transport.tls import certificate_thumbprint
from tests.support.browser import Browser
from tests.support.certificates import Authority, Leaf
from tests.support.mcp_calls import call_mcp
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, refresh, register
from tests.support.server import RunningServer
from tests.support.tls import client_context, https_client, running_tls_server

ALICE_DN = "CN=alice-laptop,O=Chamberlain Tests"


@dataclass
class Deployment:
    server: RunningServer
    authority: Authority
    alice: Leaf  # the registered client's certificate
    mallory: Leaf  # another certificate of the same CA
    self_signed: Leaf  # trusted by the TLS layer through the bundle, for self_signed_tls_client_auth

    def client(self, certificate: Leaf | None) -> httpx.AsyncClient:
        return https_client(self.server, self.authority, certificate)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("mtls")
    authority = Authority.new()
    alice, mallory = authority.issue("alice-laptop"), authority.issue("mallory-laptop")
    self_signed = authority.issue("robot", self_signed=True)
    certificate, key = authority.issue("127.0.0.1", server=True).write(directory / "tls", "server")
    # The TLS layer verifies every client certificate against the bundle (Python's ssl has no "accept any
    # certificate" mode), so a self-signed client certificate is listed there.
    bundle = directory / "tls" / "clients.pem"
    bundle.write_bytes(authority.certificate_pem + self_signed.certificate_pem)
    tls = {"certificate": str(certificate), "private_key": str(key), "client_ca": str(bundle)}
    with running_tls_server(directory / "data", {**tls, "client_certificates": "optional"}) as server:
        yield Deployment(server, authority, alice, mallory, self_signed)


@pytest.fixture
async def anonymous(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    async with deployment.client(None) as http:
        yield http


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    document: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return document


async def authorized_tokens(deployment: Deployment, client_id: str, certificate: Leaf | None) -> httpx.Response:
    """The test user signs in and consents in a browser without a certificate; the client redeems the code over
    a connection with `certificate`."""
    server, pkce = deployment.server, Pkce.new()
    async with Browser(server.base_url) as browser:
        await browser.http.aclose()
        browser.http = httpx.AsyncClient(
            base_url=server.base_url, verify=client_context(deployment.authority), follow_redirects=False, timeout=30
        )
        redirect = await browser.authorize(
            authorization_url(client_id, server.resource(), pkce), username=server.user, password=server.user_password
        )
    code = redirect_params(redirect)["code"]
    async with deployment.client(certificate) as http:
        return await exchange_code(http, client_id, code, pkce.verifier)


async def machine_client(deployment: Deployment, http: httpx.AsyncClient, **metadata: Any) -> dict[str, str]:
    """Registers a client_credentials client with `metadata`; returns its token request for the demo server."""
    client = await register(http, grant_types=["client_credentials"], redirect_uris=[], **metadata)
    return {
        "grant_type": "client_credentials",
        "client_id": client["client_id"],
        "resource": deployment.server.resource(),
    }


async def test_metadata_offers_the_mtls_methods_and_bound_tokens(anonymous: httpx.AsyncClient) -> None:
    metadata = (await anonymous.get("/.well-known/oauth-authorization-server")).json()
    assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(metadata["token_endpoint_auth_methods_supported"])
    assert metadata["tls_client_certificate_bound_access_tokens"] is True
    assert metadata["issuer"].startswith("https://127.0.0.1:")


async def test_a_tls_client_auth_client_gets_a_bound_token_usable_only_with_its_certificate(
    deployment: Deployment, anonymous: httpx.AsyncClient
) -> None:
    client = await register(
        anonymous, token_endpoint_auth_method="tls_client_auth", tls_client_auth_subject_dn=ALICE_DN
    )
    assert client["tls_client_auth_subject_dn"] == ALICE_DN
    issued = await authorized_tokens(deployment, client["client_id"], deployment.alice)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    thumbprint = certificate_thumbprint(deployment.alice.der)
    assert claims_of(token)["cnf"] == {"x5t#S256": thumbprint}

    async with deployment.client(deployment.alice) as alice:
        assert (await call_mcp(alice, token)).status_code == 200
        # RFC 8705 §3.2 through RFC 7662: the resource may learn the binding by introspection.
        described = await alice.post("/introspect", data={"client_id": client["client_id"], "token": token})
        assert described.json()["cnf"] == {"x5t#S256": thumbprint}
    for presented in (None, deployment.mallory):
        async with deployment.client(presented) as http:
            refused = await call_mcp(http, token)
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    # The refresh token works only for the client's certificate too (the client authenticates with it).
    async with deployment.client(deployment.mallory) as mallory:
        stolen = await refresh(mallory, client["client_id"], issued.json()["refresh_token"])
    assert stolen.status_code == 401
    assert stolen.json()["error"] == "invalid_client"
    async with deployment.client(deployment.alice) as alice:
        refreshed = await refresh(alice, client["client_id"], issued.json()["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert claims_of(refreshed.json()["access_token"])["cnf"] == {"x5t#S256": thumbprint}


async def test_a_tls_client_auth_client_without_its_certificate_is_refused_at_the_token_endpoint(
    deployment: Deployment, anonymous: httpx.AsyncClient
) -> None:
    form = await machine_client(
        deployment, anonymous, token_endpoint_auth_method="tls_client_auth", tls_client_auth_subject_dn=ALICE_DN
    )
    for presented in (None, deployment.mallory):
        async with deployment.client(presented) as http:
            response = await http.post("/token", data=form)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_client"
    async with deployment.client(deployment.alice) as alice:
        # A secret is no substitute for the certificate (RFC 6749 §2.3: one method, the registered one).
        with_secret = await alice.post("/token", data={**form, "client_secret": "any"})
        assert with_secret.status_code in (400, 401)
        issued = await alice.post("/token", data=form)
    assert issued.status_code == 200, issued.text
    assert claims_of(issued.json()["access_token"])["cnf"]["x5t#S256"] == certificate_thumbprint(deployment.alice.der)


async def test_a_self_signed_client_is_recognised_by_the_certificate_in_its_jwks(
    deployment: Deployment, anonymous: httpx.AsyncClient
) -> None:
    x5c = base64.b64encode(deployment.self_signed.der).decode()
    public = deployment.self_signed.certificate.public_key().public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(public.x.to_bytes(32, "big")),
        "y": _b64url(public.y.to_bytes(32, "big")),
        "x5c": [x5c],
    }
    form = await machine_client(
        deployment, anonymous, token_endpoint_auth_method="self_signed_tls_client_auth", jwks={"keys": [jwk]}
    )
    async with deployment.client(deployment.alice) as alice:  # a valid certificate, but not the registered one
        refused = await alice.post("/token", data=form)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    async with deployment.client(deployment.self_signed) as robot:
        issued = await robot.post("/token", data=form)
    assert issued.status_code == 200, issued.text
    expected = certificate_thumbprint(deployment.self_signed.der)
    assert claims_of(issued.json()["access_token"])["cnf"] == {"x5t#S256": expected}


async def test_unbound_tokens_work_as_before_with_or_without_a_certificate(
    deployment: Deployment, anonymous: httpx.AsyncClient
) -> None:
    client = await register(anonymous)  # a public client that did not ask for bound tokens
    issued = await authorized_tokens(deployment, client["client_id"], None)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert "cnf" not in claims_of(token)
    assert (await call_mcp(anonymous, token)).status_code == 200
    async with deployment.client(deployment.mallory) as http:
        assert (await call_mcp(http, token)).status_code == 200


async def test_a_public_client_asking_for_bound_tokens_must_present_a_certificate(
    deployment: Deployment, anonymous: httpx.AsyncClient
) -> None:
    client = await register(anonymous, tls_client_certificate_bound_access_tokens=True)
    without = await authorized_tokens(deployment, client["client_id"], None)
    assert without.status_code == 400
    assert without.json()["error"] == "invalid_request"
    issued = await authorized_tokens(deployment, client["client_id"], deployment.mallory)
    assert issued.status_code == 200, issued.text
    assert claims_of(issued.json()["access_token"])["cnf"] == {
        "x5t#S256": certificate_thumbprint(deployment.mallory.der)
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_the_admin_api_and_the_llm_gateway_check_the_binding_too(deployment: Deployment) -> None:
    tenant = deployment.server.state.default_tenant
    thumbprint = certificate_thumbprint(deployment.alice.der)

    def bound_token(audience: str) -> str:
        return tenant.token_issuer.issue(
            subject="nobody-in-particular",
            client_id="bound-client",
            audience=audience,
            scopes=frozenset(),
            tenant=tenant.id,
            grant_id=None,
            auth_time=None,
            certificate_thumbprint=thumbprint,
        ).token

    admin, llm = bound_token(tenant.admin_resource), bound_token(tenant.llm_resource.resource)
    message = {"model": "claude-sonnet-4-5", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    for presented in (None, deployment.mallory):
        async with deployment.client(presented) as http:
            refused = await http.get("/admin/api/me", headers={"Authorization": f"Bearer {admin}"})
            assert refused.status_code == 401
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]
            refused = await http.post("/v1/messages", json=message, headers={"Authorization": f"Bearer {llm}"})
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "authentication_error"
    async with deployment.client(deployment.alice) as alice:
        # Past the token check: the subject is no user of this tenant (403), and no LLM upstream is configured.
        admitted = await alice.get("/admin/api/me", headers={"Authorization": f"Bearer {admin}"})
        assert admitted.status_code == 403
        answered = await alice.post("/v1/messages", json=message, headers={"Authorization": f"Bearer {llm}"})
        assert answered.status_code != 401, answered.text
