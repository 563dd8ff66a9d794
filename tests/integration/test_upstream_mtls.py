"""Upstream MCP servers over mutual TLS (gateway/http_upstream.py): the gateway's client certificate comes from the
vault, the upstream's certificate chains to the configured CA and, when pinned, carries a pinned key."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from chamberlain.gateway.http_upstream import HttpUpstream
from chamberlain.gateway.server_config import ServerConfig
from chamberlain.gateway.upstream import UpstreamError, UpstreamRequest
from chamberlain.gateway.upstream_credentials import NoCredentials, VaultAccess
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.service import Vault
from chamberlain.vault.settings import CredentialKind
from tests.support.certificates import Authority, Leaf
from tests.support.gateway import vault_of
from tests.support.server import RunningServer, free_port, running_server
from tests.support.tls import serving_config
from tests.support.upstream_server import build_server

SOURCE = "pki"
TOOLS_LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
HEADERS = [(b"content-type", b"application/json"), (b"accept", b"application/json, text/event-stream")]


@dataclass
class Pki:
    authority: Authority  # signs the upstream's certificate and the gateway's client certificate
    upstream: Leaf
    gateway: Leaf
    ca_file: Path
    url: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    """A real MCP server (the official SDK) on https loopback that requires a client certificate of its CA."""
    directory = tmp_path_factory.mktemp("upstream-pki")
    authority = Authority.new("Upstream PKI")
    upstream, gateway = authority.issue("127.0.0.1", server=True), authority.issue("chamberlain-gateway")
    certificate, key = upstream.write(directory, "upstream")
    ca_file, _ = authority.write(directory, "ca")
    app = build_server().streamable_http_app(stateless_http=True, json_response=True, host="127.0.0.1")
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ssl_certfile=certificate,
        ssl_keyfile=key,
        ssl_ca_certs=str(ca_file),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    with serving_config(config):
        yield Pki(authority, upstream, gateway, ca_file, f"https://127.0.0.1:{port}/mcp")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("upstream-mtls")) as server:
        yield server


@pytest.fixture
async def vault(gateway: RunningServer) -> AsyncIterator[Vault]:
    async with vault_of(gateway) as opened:
        yield opened


def principal() -> AccessTokenClaims:
    now = int(time.time())
    return AccessTokenClaims(
        subject="alice",
        client_id="claude-code",
        audience=("https://gateway.test/mcp/secure",),
        scopes=frozenset({"mcp:tools"}),
        expires_at=now + 600,
        issued_at=now,
        jti="jti-upstream-mtls",
        grant_id=None,
        tenant="default",
        auth_time=now,
        roles=("developer",),
        raw={},
    )


async def store_client_certificate(vault: Vault, tenant: str, name: str, leaf: Leaf, upstream: str) -> None:
    for secret, value in ((f"{name}-crt", leaf.certificate_pem), (f"{name}-key", leaf.key_pem)):
        await vault.store(SecretRef(tenant, SOURCE, secret), value, kind=CredentialKind.API_KEY, bindings=(upstream,))


async def tools_of(upstream: HttpUpstream) -> list[str]:
    response = await upstream.send(UpstreamRequest("POST", list(HEADERS), TOOLS_LIST, principal()))
    assert response.status == 200
    assert response.body is not None
    return [tool["name"] for tool in json.loads(response.body)["result"]["tools"]]


def secure_upstream(
    pki: Pki, vault: Vault, tenant: str, name: str, certificate: str, **options: object
) -> HttpUpstream:
    config = ServerConfig.model_validate(
        {
            "url": pki.url,
            "ca": str(pki.ca_file),
            "client_certificate": {
                "certificate": f"{SOURCE}/{certificate}-crt",
                "private_key": f"{SOURCE}/{certificate}-key",
            },
            **options,
        }
    )
    return HttpUpstream(name, config, NoCredentials(), VaultAccess(vault, tenant, name))


async def test_the_gateway_presents_its_vault_certificate_to_the_upstream(
    pki: Pki, vault: Vault, gateway: RunningServer
) -> None:
    tenant = gateway.settings.tenant
    await store_client_certificate(vault, tenant, "gateway", pki.gateway, "secure")
    upstream = secure_upstream(pki, vault, tenant, "secure", "gateway", pinned_spki=[pki.upstream.spki_sha256.hex()])
    try:
        assert {"echo", "add"} <= set(await tools_of(upstream))
        assert {"echo", "add"} <= set(await tools_of(upstream))  # the pooled connection, or a new one, alike
    finally:
        await upstream.aclose()


async def test_a_wrong_client_certificate_fails(pki: Pki, vault: Vault, gateway: RunningServer) -> None:
    tenant = gateway.settings.tenant
    stranger = Authority.new("Not the upstream's PKI").issue("chamberlain-gateway")
    await store_client_certificate(vault, tenant, "stranger", stranger, "stranger-upstream")
    upstream = secure_upstream(pki, vault, tenant, "stranger-upstream", "stranger")
    try:
        with pytest.raises(UpstreamError) as failure:
            await tools_of(upstream)
    finally:
        await upstream.aclose()
    assert failure.value.kind in ("unavailable", "protocol")


async def test_an_upstream_whose_key_is_not_pinned_is_refused(
    pki: Pki, vault: Vault, gateway: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = gateway.settings.tenant
    await store_client_certificate(vault, tenant, "pinned", pki.gateway, "pinned-upstream")
    other_key = pki.authority.issue("127.0.0.1", server=True).spki_sha256.hex()
    upstream = secure_upstream(pki, vault, tenant, "pinned-upstream", "pinned", pinned_spki=[other_key])
    try:
        with pytest.raises(UpstreamError) as failure, caplog.at_level("WARNING", "chamberlain.gateway.http_upstream"):
            await tools_of(upstream)
    finally:
        await upstream.aclose()
    assert failure.value.kind == "unavailable"
    assert "upstream pinned-upstream: its TLS certificate's key is not pinned" in caplog.text


async def test_an_upstream_outside_the_configured_ca_is_refused(
    pki: Pki, vault: Vault, gateway: RunningServer, tmp_path: Path
) -> None:
    tenant = gateway.settings.tenant
    await store_client_certificate(vault, tenant, "elsewhere", pki.gateway, "elsewhere-upstream")
    other_ca, _ = Authority.new("Another CA").write(tmp_path, "other")
    upstream = secure_upstream(pki, vault, tenant, "elsewhere-upstream", "elsewhere", ca=str(other_ca))
    try:
        with pytest.raises(UpstreamError):
            await tools_of(upstream)
    finally:
        await upstream.aclose()


async def test_a_certificate_missing_from_the_vault_or_not_bound_is_a_credential_error(
    pki: Pki, vault: Vault, gateway: RunningServer
) -> None:
    tenant = gateway.settings.tenant
    missing = secure_upstream(pki, vault, tenant, "nothing-stored", "never-stored")
    await store_client_certificate(vault, tenant, "bound-elsewhere", pki.gateway, "some-other-server")
    unbound = secure_upstream(pki, vault, tenant, "not-bound", "bound-elsewhere")
    for upstream in (missing, unbound):
        try:
            with pytest.raises(UpstreamError) as failure:
                await tools_of(upstream)
        finally:
            await upstream.aclose()
        assert failure.value.kind == "credential"


def test_mtls_options_need_an_https_url_and_valid_pins() -> None:
    with pytest.raises(ValueError, match="https"):
        ServerConfig.model_validate({"url": "http://127.0.0.1:1/mcp", "pinned_spki": ["00" * 32]})
    with pytest.raises(ValueError, match="SHA-256"):
        ServerConfig.model_validate({"url": "https://127.0.0.1:1/mcp", "pinned_spki": ["not-a-digest"]})
    with pytest.raises(ValueError, match="vault reference"):
        ServerConfig.model_validate(
            {"url": "https://127.0.0.1:1/mcp", "client_certificate": {"certificate": "x", "private_key": "a/b"}}
        )
