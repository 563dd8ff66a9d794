"""Attacks on the protected resource (/mcp/{server}) with tokens that must not be accepted: tokens for another
resource, in the query string, expired, unsigned, algorithm-confused, signed by strangers, of the wrong type or
from the wrong issuer. Hostile tokens are built by hand; the positive controls sign with the server's real key."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, import_key

from chamberlain.crypto.master_key import load_master_key
from chamberlain.crypto.signing_keys import KeyRing
from chamberlain.gateway.server_config import ServerConfig
from chamberlain.oauth.access_tokens import TOKEN_TYPE, AccessTokenIssuer
from chamberlain.state import load_key_ring
from chamberlain.store.servers import ServerRepository
from tests.support.mcp_calls import MCP_HEADERS, TOOLS_LIST, call_mcp
from tests.support.oauth import register, tokens_for
from tests.support.server import RunningServer, random_name


@pytest.fixture
async def ring(server: RunningServer) -> KeyRing:
    """The server's real signing keys, loaded the way the server loads them."""
    async with server.engine() as engine:
        return await load_key_ring(engine, load_master_key(server.settings.data_dir, environ={}))


async def access_token(server: RunningServer, http: httpx.AsyncClient) -> str:
    client = await register(http)
    return str((await tokens_for(server, http, client["client_id"]))["access_token"])


def assert_invalid_token(response: httpx.Response, server: RunningServer, server_name: str = "demo") -> str:
    """RFC 6750 §3.1 invalid_token, with the RFC 9728 §5.1 pointer to the resource's metadata; returns the reason."""
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    metadata = f"{server.base_url}/.well-known/oauth-protected-resource/mcp/{server_name}"
    assert f'resource_metadata="{metadata}"' in challenge
    assert response.json()["error"] == "invalid_token"
    return str(response.json()["error_description"])


def claims_for(server: RunningServer, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": server.base_url,
        "sub": "attacker",
        "aud": server.resource(),
        "client_id": "attacker-client",
        "scope": "mcp:tools",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "tenant": server.settings.tenant,
        "roles": ["developer"],  # the default developer role reaches the demo server
    }
    claims.update(changes)
    return claims


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


# -- the positive control: a token the server's own key signed, with all the right claims -------------------------


async def test_hand_signed_token_with_the_real_key_is_accepted(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    """Proves the hostile tokens below fail for what they change, not for how they were built."""
    response = await call_mcp(http, ring.sign(claims_for(server), typ=TOKEN_TYPE))
    assert response.status_code == 200, response.text


async def test_missing_or_non_bearer_credentials_are_challenged(server: RunningServer, http: httpx.AsyncClient) -> None:
    response = await call_mcp(http, None)
    assert response.status_code == 401
    # RFC 6750 §3.1: no error code when the request carried no credentials at all.
    assert "error=" not in response.headers["www-authenticate"]
    for authorization in ("Basic YWxpY2U6cGFzc3dvcmQ=", "Bearer", "Bearer    x", "Token abc", "bearerabc"):
        response = await http.post(
            "/mcp/demo", json=TOOLS_LIST, headers={**MCP_HEADERS, "Authorization": authorization}
        )
        assert response.status_code == 401, authorization
        assert response.headers["www-authenticate"].startswith("Bearer ")


# -- audience: a token is good only for the resource it was issued for -------------------------------------------


async def test_token_for_one_resource_is_refused_at_another(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    name = random_name("other")
    async with server.engine() as engine:
        repository = ServerRepository(engine, server.settings.tenant, server.state.master_key)
        await repository.add(name, ServerConfig(url="http://127.0.0.1:9/", scopes=("mcp:tools",)))
    # The server picks up new servers from the store on its next refresh (every second); wait for it, boundedly.
    deadline = time.monotonic() + 10
    while (await http.get(f"/.well-known/oauth-protected-resource/mcp/{name}")).status_code != 200:
        assert time.monotonic() < deadline, "the new server never appeared"
        await asyncio.sleep(0.1)

    token = await access_token(server, http)
    assert (await call_mcp(http, token)).status_code == 200
    reason = assert_invalid_token(await call_mcp(http, token, server_name=name), server, name)
    assert "not issued for this resource" in reason

    # Audiences that merely look like it are refused too (the comparison is exact, RFC 8707 §2).
    for audience in (server.resource() + "/", server.resource().upper(), f"{server.base_url}/mcp/{name}/../demo"):
        forged = ring.sign(claims_for(server, aud=audience), typ=TOKEN_TYPE)
        assert_invalid_token(await call_mcp(http, forged), server)
    # A token whose audience lists only other resources is refused.
    elsewhere = ring.sign(claims_for(server, aud=[server.resource(name), "https://evil.example"]), typ=TOKEN_TYPE)
    assert_invalid_token(await call_mcp(http, elsewhere), server)


async def test_token_for_an_unknown_server_gets_not_found(server: RunningServer, http: httpx.AsyncClient) -> None:
    token = await access_token(server, http)
    response = await call_mcp(http, token, server_name="no-such-server")
    assert response.status_code == 404


# -- where the token travels --------------------------------------------------------------------------------------


async def test_token_in_the_query_string_is_refused_even_when_valid(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    token = await access_token(server, http)
    assert (await call_mcp(http, token)).status_code == 200  # the same token is fine in the header
    for headers_token in (None, token):
        response = await call_mcp(http, headers_token, query=f"?access_token={token}")
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert "result" not in response.json()
    # Also on GET (the SSE stream) and with the parameter repeated.
    response = await http.get(f"/mcp/demo?access_token={token}&access_token={token}", headers=MCP_HEADERS)
    assert response.status_code == 401


async def test_cross_origin_browser_request_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    """MCP transport: a foreign Origin (DNS rebinding, a web page) is refused even with a valid token."""
    token = await access_token(server, http)
    response = await http.post(
        "/mcp/demo",
        json=TOOLS_LIST,
        headers={**MCP_HEADERS, "Authorization": f"Bearer {token}", "Origin": "https://evil.example"},
    )
    assert response.status_code == 403


# -- tokens the server did not issue, or no longer stands behind --------------------------------------------------


async def test_expired_token_is_refused(server: RunningServer, http: httpx.AsyncClient, ring: KeyRing) -> None:
    issuer = AccessTokenIssuer(server.base_url, lambda: ring, -1)
    expired = issuer.issue(
        subject="alice",
        client_id="some-client",
        audience=server.resource(),
        scopes=frozenset({"mcp:tools"}),
        tenant=server.settings.tenant,
        grant_id=None,
        auth_time=None,
    ).token
    assert "expired" in assert_invalid_token(await call_mcp(http, expired), server)
    now = int(time.time())
    long_ago = ring.sign(claims_for(server, iat=now - 7200, exp=now - 3600), typ=TOKEN_TYPE)
    assert "expired" in assert_invalid_token(await call_mcp(http, long_ago), server)


async def test_token_issued_in_the_future_is_refused(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    now = int(time.time())
    token = ring.sign(claims_for(server, iat=now + 3600, exp=now + 7200), typ=TOKEN_TYPE)
    assert "future" in assert_invalid_token(await call_mcp(http, token), server)


async def test_alg_none_token_is_refused(server: RunningServer, http: httpx.AsyncClient, ring: KeyRing) -> None:
    payload = segment(claims_for(server))
    for header in (
        {"alg": "none", "typ": TOKEN_TYPE},
        {"alg": "none", "typ": TOKEN_TYPE, "kid": ring.active.kid},
        {"alg": "NONE", "typ": TOKEN_TYPE, "kid": ring.active.kid},
    ):
        for signature in ("", b64(b"\0" * 64)):
            assert_invalid_token(await call_mcp(http, f"{segment(header)}.{payload}.{signature}"), server)


async def test_hs256_token_keyed_with_the_public_key_is_refused(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    """Algorithm confusion: HMAC with the server's own public key (as published, or as PEM/DER) as the secret."""
    published = (await http.get("/jwks.json")).json()["keys"]
    jwk = next(key for key in published if key["kid"] == ring.active.kid)
    public = import_key(jwk)
    assert isinstance(public, ECKey | OKPKey)
    secrets = [
        json.dumps(jwk).encode(),
        json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode(),
        public.as_pem(private=False),
        public.as_der(private=False),
    ]
    for secret in secrets:
        for kid in (ring.active.kid, None):
            header = {"alg": "HS256", "typ": TOKEN_TYPE, **({"kid": kid} if kid else {})}
            assert_invalid_token(await call_mcp(http, hmac_token(header, claims_for(server), secret)), server)


async def test_token_signed_by_an_unknown_key_is_refused(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    attacker = ECKey.generate_key("P-256")
    for kid in ("attacker-key", ring.active.kid):
        header = {"alg": "ES256", "typ": TOKEN_TYPE, "kid": kid}
        token = jwt.encode(header, claims_for(server), attacker, algorithms=["ES256"])
        assert_invalid_token(await call_mcp(http, token), server)
    # The attacker's key carried in the token itself (jwk header) or pointed at (jku) is never used.
    extras: list[dict[str, Any]] = [{"jwk": attacker.as_dict(private=False)}, {"jku": "https://evil.example/jwks.json"}]
    for extra in extras:
        header = {"alg": "ES256", "typ": TOKEN_TYPE, "kid": "attacker-key", **extra}
        token = jwt.encode(header, claims_for(server), attacker, algorithms=["ES256"])
        assert_invalid_token(await call_mcp(http, token), server)
    # An Ed25519 token naming the server's ES256 kid.
    ed = OKPKey.generate_key("Ed25519")
    header = {"alg": "Ed25519", "typ": TOKEN_TYPE, "kid": ring.active.kid}
    token = jwt.encode(header, claims_for(server), ed, algorithms=["Ed25519"])
    assert_invalid_token(await call_mcp(http, token), server)


async def test_validly_signed_token_of_the_wrong_type_is_refused(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    """RFC 9068 §4: an ID token or any other JWT from the same key must not pass as an access token."""
    for typ in ("JWT", "jwt", "id_token+jwt", "logout+jwt"):
        token = ring.sign(claims_for(server), typ=typ)
        assert "typ" in assert_invalid_token(await call_mcp(http, token), server)
    key = ring.active
    untyped = jwt.encode(
        {"alg": key.alg, "kid": key.kid}, claims_for(server), key.key, algorithms=[key.alg], default_type=None
    )
    assert "typ" in assert_invalid_token(await call_mcp(http, untyped), server)


async def test_validly_signed_token_from_another_issuer_is_refused(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    for issuer in ("https://evil.example", server.base_url + "/", server.base_url.replace("127.0.0.1", "localhost")):
        token = ring.sign(claims_for(server, iss=issuer), typ=TOKEN_TYPE)
        assert "issued by someone else" in assert_invalid_token(await call_mcp(http, token), server)
    missing = claims_for(server)
    del missing["iss"]
    assert_invalid_token(await call_mcp(http, ring.sign(missing, typ=TOKEN_TYPE)), server)


async def test_validly_signed_token_without_required_claims_is_refused(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    for claim in ("sub", "aud", "client_id", "jti", "exp", "iat"):
        claims = claims_for(server)
        del claims[claim]
        assert_invalid_token(await call_mcp(http, ring.sign(claims, typ=TOKEN_TYPE)), server)


async def test_garbage_tokens_are_refused(server: RunningServer, http: httpx.AsyncClient, ring: KeyRing) -> None:
    good = ring.sign(claims_for(server), typ=TOKEN_TYPE)
    header, payload, signature = good.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    for token in (
        "not-a-jwt",
        "a.b.c",
        f"{header}.{payload}",
        f"{header}.{payload}.{flipped}",
        f"{header}.{segment(claims_for(server, scope='mcp:tools admin'))}.{signature}",  # payload swapped
        f"{good}.{signature}",
        "x" * 9000,
    ):
        assert_invalid_token(await call_mcp(http, token), server)


async def test_token_without_the_required_scope_is_forbidden(
    server: RunningServer, http: httpx.AsyncClient, ring: KeyRing
) -> None:
    token = ring.sign(claims_for(server, scope="mcp:resources"), typ=TOKEN_TYPE)
    response = await call_mcp(http, token)
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert "mcp:tools" in challenge
