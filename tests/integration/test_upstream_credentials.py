"""The credential the gateway presents upstream (issue 3): never the client's token, but a static header, a token the
gateway obtains for itself (RFC 6749 §4.4) or one exchanged for the user (RFC 8693), cached until shortly before it
expires. Token requests go over real HTTP to a stand-in of the upstream's own authorization server, which checks
client authentication and verifies Chamberlain's subject tokens against its published keys."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import KeySet
from pydantic import SecretStr, TypeAdapter, ValidationError

from chamberlain.crypto.master_key import MasterKey, load_master_key
from chamberlain.crypto.signing_keys import KeyRing, generate_signing_key, load_signing_key
from chamberlain.gateway.server_config import (
    ClientCredentialsCredential,
    HeaderCredential,
    NoCredential,
    TokenExchangeCredential,
    UpstreamCredentialConfig,
)
from chamberlain.gateway.upstream import UpstreamError
from chamberlain.gateway.upstream_credentials import (
    UNAVAILABLE,
    SubjectTokenMinter,
    UpstreamCredentials,
    credentials_for,
)
from chamberlain.oauth.access_tokens import AccessTokenClaims, AccessTokenVerifier, InvalidAccessToken
from chamberlain.oauth.revocation_list import RevocationList
from chamberlain.state import load_key_ring
from tests.support.server import RunningServer, free_port
from tests.support.upstream_authorization_server import (
    TOKEN_EXCHANGE_GRANT,
    CannedAnswer,
    UpstreamAuthorizationServer,
    upstream_authorization_server,
)

ISSUER = "https://chamberlain.test"
CLIENT_ID = "chamberlain-gateway"
CLIENT_SECRET = "s3cret-never-shown"
UPSTREAM_AUDIENCE = "https://tools.upstream.test/mcp"
SCOPE = "tools:read tools:call"


class FakeClock:
    """Monotonic seconds the test moves forward by hand, so expiry is tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_ring() -> KeyRing:
    generated = generate_signing_key("ES256", master := MasterKey(os.urandom(32)))
    return KeyRing(
        [
            load_signing_key(
                kid=generated.kid,
                alg=generated.alg,
                public_jwk=generated.public_jwk,
                encrypted_private_key=generated.encrypted_private_key,
                master_key=master,
                created_at=time.time(),
                retired_at=None,
                expires_at=None,
            )
        ]
    )


def principal(subject: str = "alice", client_id: str = "claude-code", tenant: str = "default") -> AccessTokenClaims:
    now = int(time.time())
    return AccessTokenClaims(
        subject=subject,
        client_id=client_id,
        audience=(f"{ISSUER}/mcp/tools",),
        scopes=frozenset({"mcp:tools"}),
        expires_at=now + 600,
        issued_at=now,
        jti=f"jti-{subject}-{client_id}",
        grant_id=None,
        tenant=tenant,
        auth_time=now,
        roles=("developer",),
        raw={},
    )


def bearer(headers: list[tuple[bytes, bytes]]) -> str:
    assert len(headers) == 1
    name, value = headers[0]
    assert name == b"authorization"
    assert value.startswith(b"Bearer ")
    return value[len(b"Bearer ") :].decode()


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return key_ring()


@pytest.fixture(scope="module")
def minter(ring: KeyRing) -> SubjectTokenMinter:
    return SubjectTokenMinter(ISSUER, lambda: ring)


@pytest.fixture
def upstream_as(ring: KeyRing) -> Iterator[UpstreamAuthorizationServer]:
    with upstream_authorization_server(
        clients={CLIENT_ID: CLIENT_SECRET}, subject_issuer=ISSUER, subject_jwks=ring.jwks()
    ) as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def client_credentials(upstream_as: UpstreamAuthorizationServer) -> ClientCredentialsCredential:
    return ClientCredentialsCredential(
        token_endpoint=upstream_as.token_endpoint,
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        scope=SCOPE,
        resource=UPSTREAM_AUDIENCE,
    )


def token_exchange(upstream_as: UpstreamAuthorizationServer) -> TokenExchangeCredential:
    return TokenExchangeCredential(
        token_endpoint=upstream_as.token_endpoint,
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        audience=UPSTREAM_AUDIENCE,
        scope=SCOPE,
    )


@pytest.fixture
async def cc_credentials(
    upstream_as: UpstreamAuthorizationServer, minter: SubjectTokenMinter, clock: FakeClock
) -> AsyncIterator[UpstreamCredentials]:
    credentials = credentials_for(client_credentials(upstream_as), subject_tokens=minter, clock=clock)
    yield credentials
    await credentials.aclose()


@pytest.fixture
async def exchange_credentials(
    upstream_as: UpstreamAuthorizationServer, minter: SubjectTokenMinter, clock: FakeClock
) -> AsyncIterator[UpstreamCredentials]:
    credentials = credentials_for(token_exchange(upstream_as), subject_tokens=minter, clock=clock)
    yield credentials
    await credentials.aclose()


# --- static credentials ---


async def test_no_credential_sends_nothing(minter: SubjectTokenMinter) -> None:
    assert await credentials_for(NoCredential(), subject_tokens=minter).headers(principal()) == []


@pytest.mark.parametrize(
    ("header", "value", "expected"),
    [
        ("X-Api-Key", "k-123", (b"x-api-key", b"k-123")),
        ("Authorization", "Bearer fixed.token", (b"authorization", b"Bearer fixed.token")),
    ],
)
async def test_header_credential_sends_the_configured_header(
    minter: SubjectTokenMinter, header: str, value: str, expected: tuple[bytes, bytes]
) -> None:
    credentials = credentials_for(HeaderCredential(header=header, value=SecretStr(value)), subject_tokens=minter)
    assert await credentials.headers(principal("alice")) == [expected]
    assert await credentials.headers(principal("bob")) == [expected]


@pytest.mark.parametrize("value", ["", "key\r\nX-Injected: 1", "key\n", "clé"])
def test_header_value_that_is_not_a_field_value_is_refused_on_load(value: str) -> None:
    with pytest.raises(ValidationError, match="printable ASCII") as refused:
        HeaderCredential(header="X-Api-Key", value=SecretStr(value))
    assert "key\r\n" not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://as.example.com/token",
        "http://10.0.0.5/token",
        "ftp://127.0.0.1/token",
        "/token",
        "https://as.example.com/token#frag",
    ],
)
def test_token_endpoint_must_be_https_unless_loopback(url: str) -> None:
    config = {"type": "client_credentials", "token_endpoint": url, "client_id": "c", "client_secret": "s"}
    with pytest.raises(ValidationError, match="token endpoint"):
        TypeAdapter(UpstreamCredentialConfig).validate_python(config)


@pytest.mark.parametrize(
    "url",
    ["https://as.example.com/oauth/token", "http://127.0.0.1:9000/token", "http://[::1]/token", "http://localhost/t"],
)
def test_token_endpoint_accepts_https_and_loopback_http(url: str) -> None:
    config = {"type": "token_exchange", "token_endpoint": url, "client_id": "c", "client_secret": "s"}
    assert TokenExchangeCredential.model_validate(config).token_endpoint == url


# --- client credentials (RFC 6749 §4.4) ---


async def test_client_credentials_obtains_a_token_for_the_upstream(
    upstream_as: UpstreamAuthorizationServer, cc_credentials: UpstreamCredentials
) -> None:
    token = bearer(await cc_credentials.headers(principal()))
    claims = upstream_as.verify(token)
    assert claims["aud"] == UPSTREAM_AUDIENCE
    assert claims["sub"] == CLIENT_ID
    assert claims["scope"] == SCOPE
    (served,) = upstream_as.served
    assert served.client_id == CLIENT_ID
    assert served.form == {"grant_type": "client_credentials", "scope": SCOPE, "resource": UPSTREAM_AUDIENCE}


async def test_client_credentials_token_is_shared_by_all_users_and_fetched_once(
    upstream_as: UpstreamAuthorizationServer, cc_credentials: UpstreamCredentials
) -> None:
    tokens = {bearer(await cc_credentials.headers(principal(f"user-{i}"))) for i in range(10)}
    assert len(tokens) == 1
    assert upstream_as.count("client_credentials") == 1


async def test_concurrent_callers_share_one_fetch(
    upstream_as: UpstreamAuthorizationServer, cc_credentials: UpstreamCredentials
) -> None:
    results = await asyncio.gather(*(cc_credentials.headers(principal(f"user-{i}")) for i in range(25)))
    assert len({bearer(headers) for headers in results}) == 1
    assert upstream_as.count("client_credentials") == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lifetime=st.integers(min_value=1, max_value=100_000))
def test_token_is_renewed_before_it_expires_and_not_long_before(
    upstream_as: UpstreamAuthorizationServer, minter: SubjectTokenMinter, lifetime: int
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        upstream_as.expires_in = lifetime
        credentials = credentials_for(client_credentials(upstream_as), subject_tokens=minter, clock=clock)
        fetched = upstream_as.count("client_credentials")
        try:
            first = bearer(await credentials.headers(principal()))
            clock.now += lifetime * 0.85  # well inside the lifetime: the cached token is reused
            assert bearer(await credentials.headers(principal())) == first
            assert upstream_as.count("client_credentials") == fetched + 1
            clock.now += lifetime * 0.15  # the token's expiry: it must have been replaced
            assert bearer(await credentials.headers(principal())) != first
            assert upstream_as.count("client_credentials") == fetched + 2
        finally:
            await credentials.aclose()

    asyncio.run(scenario())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    client_id=st.text(min_size=1, max_size=40),
    secret=st.text(min_size=1, max_size=40),
)
def test_client_secret_basic_survives_any_id_and_secret(
    upstream_as: UpstreamAuthorizationServer, minter: SubjectTokenMinter, client_id: str, secret: str
) -> None:
    """RFC 6749 §2.3.1: ':' '%' '+' spaces and non-ASCII in the id or secret are form-urlencoded, not mangled."""
    upstream_as.clients[client_id] = secret
    config = ClientCredentialsCredential(
        token_endpoint=upstream_as.token_endpoint, client_id=client_id, client_secret=SecretStr(secret)
    )

    async def scenario() -> None:
        credentials = credentials_for(config, subject_tokens=minter)
        try:
            assert upstream_as.verify(bearer(await credentials.headers(principal())))["sub"] == client_id
        finally:
            await credentials.aclose()

    asyncio.run(scenario())


async def test_a_failed_fetch_is_not_cached(
    upstream_as: UpstreamAuthorizationServer, cc_credentials: UpstreamCredentials
) -> None:
    upstream_as.answer_with = CannedAnswer(503, b'{"error": "temporarily_unavailable"}')
    failures = await asyncio.gather(*(cc_credentials.headers(principal()) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(failure, UpstreamError) for failure in failures)
    assert len(upstream_as.served) == 1  # the concurrent callers shared the failed fetch
    upstream_as.answer_with = None
    assert upstream_as.verify(bearer(await cc_credentials.headers(principal())))["aud"] == UPSTREAM_AUDIENCE


async def test_during_early_renewal_a_failed_fetch_keeps_the_unexpired_token(
    upstream_as: UpstreamAuthorizationServer, cc_credentials: UpstreamCredentials, clock: FakeClock
) -> None:
    """A token endpoint down for a moment costs nothing while the old token lives, and fails closed once it expired."""
    upstream_as.expires_in = 3600
    first = bearer(await cc_credentials.headers(principal()))
    upstream_as.answer_with = CannedAnswer(503, b'{"error": "temporarily_unavailable"}')
    clock.now += 3600 - 30  # inside the renewal window, before expiry
    assert bearer(await cc_credentials.headers(principal())) == first
    clock.now += 30  # expired: never sent again
    with pytest.raises(UpstreamError):
        await cc_credentials.headers(principal())
    assert upstream_as.count("client_credentials", succeeded=False) == 2
    upstream_as.answer_with = None
    assert bearer(await cc_credentials.headers(principal())) != first


async def test_a_caller_giving_up_does_not_cancel_the_fetch_for_others(
    upstream_as: UpstreamAuthorizationServer, cc_credentials: UpstreamCredentials
) -> None:
    impatient = asyncio.create_task(cc_credentials.headers(principal("impatient")))
    patient = asyncio.create_task(cc_credentials.headers(principal("patient")))
    await asyncio.sleep(0)  # both are now waiting on the same fetch
    impatient.cancel()
    assert upstream_as.verify(bearer(await patient))["sub"] == CLIENT_ID
    assert impatient.cancelled()
    assert upstream_as.count("client_credentials") == 1


# --- token exchange (RFC 8693) ---


async def test_exchanged_token_has_the_upstreams_audience_and_the_users_subject(
    upstream_as: UpstreamAuthorizationServer, exchange_credentials: UpstreamCredentials
) -> None:
    """Issue 3 acceptance: the upstream sees a token with its own audience and the user's subject."""
    claims = upstream_as.verify(bearer(await exchange_credentials.headers(principal("alice"))))
    assert claims["aud"] == UPSTREAM_AUDIENCE
    assert claims["sub"] == "alice"
    assert claims["act"] == {"sub": CLIENT_ID}  # RFC 8693 §4.1: the gateway acts for alice
    (served,) = upstream_as.served
    assert served.client_id == CLIENT_ID
    assert served.form["grant_type"] == TOKEN_EXCHANGE_GRANT
    assert served.form["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert served.form["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert served.form["audience"] == UPSTREAM_AUDIENCE
    assert served.form["scope"] == SCOPE
    assert "client_secret" not in served.form  # client_secret_basic, never in the body


async def test_subject_token_is_short_lived_and_bound_to_the_token_endpoint(
    upstream_as: UpstreamAuthorizationServer, exchange_credentials: UpstreamCredentials, ring: KeyRing
) -> None:
    await exchange_credentials.headers(principal("alice", client_id="claude-code", tenant="acme"))
    subject_token = upstream_as.served[0].form["subject_token"]
    decoded = jwt.decode(subject_token, KeySet.import_key_set(ring.jwks()), algorithms=ring.algorithms)  # type: ignore[arg-type]
    assert decoded.header["typ"] == "JWT"
    claims = decoded.claims
    assert claims["iss"] == ISSUER
    assert claims["aud"] == upstream_as.token_endpoint
    assert claims["sub"] == "alice"
    assert claims["client_id"] == "claude-code"
    assert claims["tenant"] == "acme"
    assert 60 <= claims["exp"] - claims["iat"] <= 120
    assert claims["jti"]


async def test_subject_token_is_not_an_access_token_for_chamberlain(
    upstream_as: UpstreamAuthorizationServer, exchange_credentials: UpstreamCredentials, ring: KeyRing
) -> None:
    """Signed with the same key as access tokens, it must still be refused by Chamberlain's resources (RFC 9068 §4)."""
    await exchange_credentials.headers(principal("alice"))
    subject_token = upstream_as.served[0].form["subject_token"]
    with pytest.raises(InvalidAccessToken, match="not an access token"):
        AccessTokenVerifier(ISSUER, lambda: ring, RevocationList()).verify(subject_token, audience=None)


async def test_each_user_gets_their_own_token_exchanged_once(
    upstream_as: UpstreamAuthorizationServer, exchange_credentials: UpstreamCredentials
) -> None:
    users = ["alice", "bob", "carol"]
    for _ in range(4):
        tokens = {user: bearer(await exchange_credentials.headers(principal(user))) for user in users}
        assert {upstream_as.verify(token)["sub"] for token in tokens.values()} == set(users)
        assert len(set(tokens.values())) == len(users)
    assert upstream_as.count(TOKEN_EXCHANGE_GRANT) == len(users)


async def test_exchanges_are_single_flight_per_user(
    upstream_as: UpstreamAuthorizationServer, exchange_credentials: UpstreamCredentials
) -> None:
    calls = [principal(user) for user in ("alice", "bob") for _ in range(10)]
    results = await asyncio.gather(*(exchange_credentials.headers(call) for call in calls))
    assert {upstream_as.verify(bearer(headers))["sub"] for headers in results} == {"alice", "bob"}
    assert upstream_as.count(TOKEN_EXCHANGE_GRANT) == 2


async def test_exchange_cache_separates_tenants_and_clients(
    upstream_as: UpstreamAuthorizationServer, exchange_credentials: UpstreamCredentials
) -> None:
    """The subject token names tenant and client: a token exchanged for one is never reused for another."""
    for who in (principal("alice"), principal("alice", tenant="other"), principal("alice", client_id="cursor")):
        await exchange_credentials.headers(who)
    assert upstream_as.count(TOKEN_EXCHANGE_GRANT) == 3


async def test_exchanged_token_is_renewed_before_it_expires(
    upstream_as: UpstreamAuthorizationServer, exchange_credentials: UpstreamCredentials, clock: FakeClock
) -> None:
    upstream_as.expires_in = 3600
    first = bearer(await exchange_credentials.headers(principal("alice")))
    clock.now += 3600 - 61  # renewal starts 60 s before expiry (10 % of the lifetime for short-lived tokens)
    assert bearer(await exchange_credentials.headers(principal("alice"))) == first
    clock.now += 2
    renewed = bearer(await exchange_credentials.headers(principal("alice")))
    assert renewed != first
    assert upstream_as.verify(renewed)["sub"] == "alice"
    assert upstream_as.count(TOKEN_EXCHANGE_GRANT) == 2


async def test_exchange_cache_is_bounded_least_recently_used_first(
    upstream_as: UpstreamAuthorizationServer, minter: SubjectTokenMinter
) -> None:
    credentials = credentials_for(token_exchange(upstream_as), subject_tokens=minter, cache_size=2)
    try:
        for user in ("alice", "bob", "alice", "carol"):  # carol evicts bob, the least recently used
            await credentials.headers(principal(user))
        assert upstream_as.count(TOKEN_EXCHANGE_GRANT) == 3
        await credentials.headers(principal("alice"))
        assert upstream_as.count(TOKEN_EXCHANGE_GRANT) == 3
        await credentials.headers(principal("bob"))
        assert upstream_as.count(TOKEN_EXCHANGE_GRANT) == 4
    finally:
        await credentials.aclose()


async def test_subject_token_verifies_against_the_gateways_published_jwks(
    server: RunningServer, minter: SubjectTokenMinter
) -> None:
    """End to end with a real gateway's keys: the upstream's server fetches /jwks.json and accepts the subject token."""
    async with server.engine() as engine:
        gateway_ring = await load_key_ring(engine, load_master_key(server.settings.data_dir, environ={}))
    gateway_minter = SubjectTokenMinter(server.base_url, lambda: gateway_ring)
    with upstream_authorization_server(
        clients={CLIENT_ID: CLIENT_SECRET}, subject_issuer=server.base_url, subject_jwks=f"{server.base_url}/jwks.json"
    ) as upstream_as:
        accepted = credentials_for(token_exchange(upstream_as), subject_tokens=gateway_minter)
        foreign = credentials_for(token_exchange(upstream_as), subject_tokens=minter)  # signed by a stranger's key
        try:
            assert upstream_as.verify(bearer(await accepted.headers(principal("alice"))))["sub"] == "alice"
            with pytest.raises(UpstreamError):
                await foreign.headers(principal("alice"))
        finally:
            await accepted.aclose()
            await foreign.aclose()
        assert [r.status for r in upstream_as.served] == [200, 400]


# --- failures: always one safe UpstreamError, never the secret or the server's answer ---


def assert_safe_failure(refused: pytest.ExceptionInfo[UpstreamError], caplog: pytest.LogCaptureFixture) -> None:
    assert refused.value.kind == "unavailable"
    assert refused.value.reason == UNAVAILABLE
    assert str(refused.value) == UNAVAILABLE
    assert CLIENT_SECRET not in caplog.text
    assert "leaked" not in caplog.text  # the servers below hide this marker in their answers


@pytest.mark.parametrize("kind", ["client_credentials", "token_exchange"])
async def test_wrong_client_secret_is_a_safe_upstream_error(
    upstream_as: UpstreamAuthorizationServer, minter: SubjectTokenMinter, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    upstream_as.clients[CLIENT_ID] = "the-real-secret"
    config = client_credentials(upstream_as) if kind == "client_credentials" else token_exchange(upstream_as)
    credentials = credentials_for(config, subject_tokens=minter)
    caplog.set_level(logging.WARNING)
    try:
        with pytest.raises(UpstreamError) as refused:
            await credentials.headers(principal())
    finally:
        await credentials.aclose()
    assert_safe_failure(refused, caplog)
    assert "HTTP 401, error invalid_client" in caplog.text
    assert upstream_as.served[0].status == 401


async def test_authorization_server_down_is_a_safe_upstream_error(
    minter: SubjectTokenMinter, caplog: pytest.LogCaptureFixture
) -> None:
    config = ClientCredentialsCredential(
        token_endpoint=f"http://127.0.0.1:{free_port()}/token?key=leaked",
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
    )
    credentials = credentials_for(config, subject_tokens=minter)
    caplog.set_level(logging.WARNING)
    try:
        with pytest.raises(UpstreamError) as refused:
            await credentials.headers(principal())
    finally:
        await credentials.aclose()
    assert_safe_failure(refused, caplog)
    assert "ConnectError" in caplog.text


def test_a_token_endpoint_with_a_user_and_password_in_it_is_refused() -> None:
    """Credentials belong in client_secret (kept encrypted, sent only in the Authorization header), not in a URL
    that is stored, listed and logged in the clear."""
    with pytest.raises(ValidationError, match="must not carry a user or password"):
        ClientCredentialsCredential(
            token_endpoint="https://user:leaked@as.example.com/token",
            client_id=CLIENT_ID,
            client_secret=SecretStr(CLIENT_SECRET),
        )


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


GOOD_ANSWER = {"access_token": "leaked-token", "token_type": "Bearer", "expires_in": 300}
BROKEN_ANSWERS = {
    "not json": CannedAnswer(200, b"<html>leaked</html>", "text/html"),
    "json array": CannedAnswer(200, _json(["leaked"])),
    "no access_token": CannedAnswer(200, _json({"token_type": "Bearer", "expires_in": 300, "x": "leaked"})),
    "not a bearer token": CannedAnswer(200, _json({**GOOD_ANSWER, "token_type": "DPoP"})),
    "token_type N_A": CannedAnswer(200, _json({**GOOD_ANSWER, "token_type": "N_A"})),
    "header injection": CannedAnswer(200, _json({**GOOD_ANSWER, "access_token": "leaked\r\nX-Evil: 1"})),
    "negative expires_in": CannedAnswer(200, _json({**GOOD_ANSWER, "expires_in": -5})),
    "string expires_in": CannedAnswer(200, _json({**GOOD_ANSWER, "expires_in": "soon"})),
    "error echoing the secret": CannedAnswer(
        400, _json({"error": "invalid_request", "error_description": f"leaked {CLIENT_SECRET}"})
    ),
    "hostile error code": CannedAnswer(400, _json({"error": f"leaked {CLIENT_SECRET}"})),
    "server error": CannedAnswer(500, b"leaked stack trace", "text/plain"),
    "redirect": CannedAnswer(302, b"", headers={"location": "http://127.0.0.1:1/leaked"}),
    "oversized": CannedAnswer(200, _json({**GOOD_ANSWER, "padding": "leaked" * 20_000})),
}


@pytest.mark.parametrize("answer", BROKEN_ANSWERS.values(), ids=BROKEN_ANSWERS.keys())
async def test_broken_answer_is_a_safe_upstream_error(
    upstream_as: UpstreamAuthorizationServer,
    cc_credentials: UpstreamCredentials,
    caplog: pytest.LogCaptureFixture,
    answer: CannedAnswer,
) -> None:
    upstream_as.answer_with = answer
    caplog.set_level(logging.WARNING)
    with pytest.raises(UpstreamError) as refused:
        await cc_credentials.headers(principal())
    assert_safe_failure(refused, caplog)
    assert len(upstream_as.served) == 1  # the redirect was not followed


EXCHANGE_ANSWERS = {
    "no issued_token_type": {**GOOD_ANSWER},
    "refresh token issued": {**GOOD_ANSWER, "issued_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
    "N_A token": {
        **GOOD_ANSWER,
        "issued_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "token_type": "N_A",
    },
}


@pytest.mark.parametrize("answer", EXCHANGE_ANSWERS.values(), ids=EXCHANGE_ANSWERS.keys())
async def test_exchange_answer_that_is_not_an_access_token_is_refused(
    upstream_as: UpstreamAuthorizationServer,
    exchange_credentials: UpstreamCredentials,
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
) -> None:
    """RFC 8693 §2.2.1: only an issued access token (or a JWT usable as one) may be sent as a Bearer token."""
    upstream_as.answer_with = CannedAnswer(200, _json(answer))
    caplog.set_level(logging.WARNING)
    with pytest.raises(UpstreamError) as refused:
        await exchange_credentials.headers(principal())
    assert_safe_failure(refused, caplog)
