"""Attacks on the token, revocation and introspection endpoints, each tried through the real HTTP stack and refused:
code replay, PKCE failures and downgrade, refresh-token reuse and widening, client authentication, revocation."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from chamberlain.crypto.tokens import digest, new_secret
from chamberlain.store.grants import AuthorizationCode, GrantRepository
from chamberlain.store.users import UserRepository
from tests.support.mcp_calls import call_mcp
from tests.support.oauth import (
    REDIRECT_URI,
    Pkce,
    authorized_code,
    exchange_code,
    refresh,
    register,
    tokens_for,
)
from tests.support.server import RunningServer

REVOCATION_WAIT = 3.0  # seconds: revocation is synchronous in-process; the bound only guards against a slow CI


async def plant_code(
    server: RunningServer, client_id: str, *, code_challenge: str | None, auth_time: float, expires_at: float
) -> str:
    """Writes an authorization code for the test user straight into the store (for codes /authorize would never
    issue) and returns it; everything but the PKCE challenge and the times is what /authorize would record."""
    code = new_secret()
    async with server.engine() as engine:
        user = await UserRepository(engine, server.settings.tenant).get_by_username(server.user)
        assert user is not None
        await GrantRepository(engine, server.settings.tenant).add_code(
            digest(code),
            AuthorizationCode(
                client_id=client_id,
                user_id=user.id,
                redirect_uri=REDIRECT_URI,
                redirect_uri_given=True,
                scope="mcp:tools",
                resource=server.resource(),
                code_challenge=code_challenge,
                auth_time=auth_time,
                expires_at=expires_at,
            ),
        )
    return code


async def assert_accepted(http: httpx.AsyncClient, access_token: str) -> None:
    response = await call_mcp(http, access_token)
    assert response.status_code == 200, response.text


async def assert_verified_without_roles(http: httpx.AsyncClient, access_token: str) -> None:
    """A client-credentials token carries no roles, so the gateway's policy refuses it (403); policy runs only after
    the token was verified (a token that fails verification gets 401 and a challenge)."""
    response = await call_mcp(http, access_token)
    assert response.status_code == 403, response.text
    assert "roles" in response.json()["error_description"]


async def assert_refused_soon(http: httpx.AsyncClient, access_token: str) -> None:
    """A revoked access token is refused at the resource; polled within a bound, never timed."""
    deadline = time.monotonic() + REVOCATION_WAIT
    response = await call_mcp(http, access_token)
    while response.status_code != 401 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        response = await call_mcp(http, access_token)
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert "revoked" in response.json()["error_description"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_oauth_error(response: httpx.Response, error: str, status_code: int = 400) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: the exact code, no token of any kind, and not cacheable."""
    assert response.status_code == status_code, response.text
    body = dict(response.json())
    assert body["error"] == error, body
    assert not {"access_token", "refresh_token", "id_token"} & body.keys()
    assert response.headers["cache-control"] == "no-store"
    return body


# -- authorization codes ------------------------------------------------------------------------------------------


async def test_code_replay_is_refused_and_revokes_what_the_code_issued(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client = await register(http)
    pkce = Pkce.new()
    code = await authorized_code(server, client["client_id"], pkce)
    first = await exchange_code(http, client["client_id"], code, pkce.verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    await assert_accepted(http, tokens["access_token"])

    # The attacker (or a confused client) presents the same code again, with the right verifier.
    replay = await exchange_code(http, client["client_id"], code, pkce.verifier)
    assert_oauth_error(replay, "invalid_grant")

    # RFC 6749 §4.1.2 / OAuth 2.1 §4.1.3: tokens issued from the replayed code are revoked.
    await assert_refused_soon(http, tokens["access_token"])
    assert_oauth_error(await refresh(http, client["client_id"], tokens["refresh_token"]), "invalid_grant")
    # And a third attempt is still refused.
    assert_oauth_error(await exchange_code(http, client["client_id"], code, pkce.verifier), "invalid_grant")


async def test_concurrent_redemptions_of_one_code_issue_at_most_one_token(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Single use is enforced by the database, so a race of redemptions cannot mint two token families."""
    client = await register(http)
    pkce = Pkce.new()
    code = await authorized_code(server, client["client_id"], pkce)
    responses = await asyncio.gather(*(exchange_code(http, client["client_id"], code, pkce.verifier) for _ in range(8)))
    winners = [response for response in responses if response.status_code == 200]
    assert len(winners) == 1, [response.text for response in responses]
    for response in responses:
        if response.status_code != 200:
            assert_oauth_error(response, "invalid_grant")
    # The losers were replays: the winner's tokens are revoked as well.
    await assert_refused_soon(http, winners[0].json()["access_token"])


async def test_concurrent_refreshes_with_one_token_rotate_at_most_once(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client = await register(http)
    tokens = await tokens_for(server, http, client["client_id"])
    responses = await asyncio.gather(*(refresh(http, client["client_id"], tokens["refresh_token"]) for _ in range(8)))
    winners = [response for response in responses if response.status_code == 200]
    assert len(winners) == 1, [response.text for response in responses]
    for response in responses:
        if response.status_code != 200:
            assert_oauth_error(response, "invalid_grant")
    # Reuse was detected, so the family, the winner's successor included, is revoked.
    assert_oauth_error(await refresh(http, client["client_id"], winners[0].json()["refresh_token"]), "invalid_grant")
    await assert_refused_soon(http, winners[0].json()["access_token"])


async def test_unknown_code_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    response = await exchange_code(http, client["client_id"], new_secret(), Pkce.new().verifier)
    assert_oauth_error(response, "invalid_grant")


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param(Pkce.new().verifier, id="wrong-verifier"),
        pytest.param(None, id="missing-verifier"),
        pytest.param("", id="empty-verifier"),
        pytest.param("short", id="too-short-verifier"),
        pytest.param("x" * 129, id="too-long-verifier"),
        pytest.param("verifier with spaces and not unreserved characters ~~~~~~~~", id="bad-characters"),
    ],
)
async def test_failed_pkce_is_refused_without_burning_the_code(
    server: RunningServer, http: httpx.AsyncClient, verifier: str | None
) -> None:
    client = await register(http)
    pkce = Pkce.new()
    code = await authorized_code(server, client["client_id"], pkce)
    assert_oauth_error(await exchange_code(http, client["client_id"], code, verifier), "invalid_grant")
    # The challenge itself is not a verifier either (a "plain" downgrade at the token endpoint).
    assert_oauth_error(await exchange_code(http, client["client_id"], code, pkce.challenge), "invalid_grant")

    # The refused attempt changed nothing (store/grants.py validates before writing): the legitimate client, which
    # holds the verifier, still redeems its code. Guessing a 256-bit verifier is hopeless, so no lockout is needed.
    response = await exchange_code(http, client["client_id"], code, pkce.verifier)
    assert response.status_code == 200, response.text
    await assert_accepted(http, response.json()["access_token"])


@pytest.mark.parametrize("verifier", [Pkce.new().verifier, None], ids=["verifier-sent", "no-verifier"])
async def test_code_issued_without_a_challenge_is_refused(
    server: RunningServer, http: httpx.AsyncClient, verifier: str | None
) -> None:
    """PKCE downgrade (RFC 9700 §4.8.2): /authorize refuses challenge-less requests, so such a code is planted in
    the store directly; the token endpoint must refuse it whether or not a verifier comes with it."""
    client = await register(http)
    code = await plant_code(
        server, client["client_id"], code_challenge=None, auth_time=time.time(), expires_at=time.time() + 60
    )
    assert_oauth_error(await exchange_code(http, client["client_id"], code, verifier), "invalid_grant")


async def test_expired_code_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    pkce = Pkce.new()
    code = await plant_code(
        server,
        client["client_id"],
        code_challenge=pkce.challenge,
        auth_time=time.time() - 120,
        expires_at=time.time() - 1,
    )
    body = assert_oauth_error(await exchange_code(http, client["client_id"], code, pkce.verifier), "invalid_grant")
    assert "expired" in body["error_description"]


async def test_code_stolen_by_another_client_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    victim, attacker = await register(http), await register(http)
    pkce = Pkce.new()
    code = await authorized_code(server, victim["client_id"], pkce)
    body = assert_oauth_error(await exchange_code(http, attacker["client_id"], code, pkce.verifier), "invalid_grant")
    assert "another client" in body["error_description"]
    # The victim's code is intact.
    assert (await exchange_code(http, victim["client_id"], code, pkce.verifier)).status_code == 200


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:53682/callback/",
        "http://127.0.0.1:53682/other",
        "https://evil.example/callback",
        "",
    ],
)
async def test_code_exchange_with_another_redirect_uri_is_refused(
    server: RunningServer, http: httpx.AsyncClient, redirect_uri: str
) -> None:
    client = await register(http)
    pkce = Pkce.new()
    code = await authorized_code(server, client["client_id"], pkce)
    response = await exchange_code(http, client["client_id"], code, pkce.verifier, redirect_uri=redirect_uri)
    assert_oauth_error(response, "invalid_grant")


async def test_code_exchange_for_another_resource_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    pkce = Pkce.new()
    code = await authorized_code(server, client["client_id"], pkce)
    response = await exchange_code(
        http, client["client_id"], code, pkce.verifier, resource=server.resource("someone-else")
    )
    assert_oauth_error(response, "invalid_target")


# -- refresh tokens -----------------------------------------------------------------------------------------------


async def test_refresh_token_reuse_revokes_the_whole_family(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    tokens = await tokens_for(server, http, client["client_id"])
    rotated = await refresh(http, client["client_id"], tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    successor = rotated.json()
    assert successor["refresh_token"] != tokens["refresh_token"]
    await assert_accepted(http, successor["access_token"])

    # The old (rotated) refresh token comes back: someone else holds it (RFC 9700 §4.14.2).
    assert_oauth_error(await refresh(http, client["client_id"], tokens["refresh_token"]), "invalid_grant")

    # The whole family is gone: the successor refresh token and every access token issued in the family.
    assert_oauth_error(await refresh(http, client["client_id"], successor["refresh_token"]), "invalid_grant")
    await assert_refused_soon(http, tokens["access_token"])
    await assert_refused_soon(http, successor["access_token"])


@pytest.mark.parametrize("scope", ["mcp:tools mcp:resources", "mcp:resources", "mcp:tools admin"])
async def test_scope_widening_on_refresh_is_refused_without_burning_the_token(
    server: RunningServer, http: httpx.AsyncClient, scope: str
) -> None:
    client = await register(http)
    tokens = await tokens_for(server, http, client["client_id"])
    assert tokens["scope"] == "mcp:tools"
    widened = await refresh(http, client["client_id"], tokens["refresh_token"], scope=scope)
    assert_oauth_error(widened, "invalid_scope")

    # The refused request did not rotate (or revoke) anything: the same refresh token still works, once.
    response = await refresh(http, client["client_id"], tokens["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "mcp:tools"
    await assert_accepted(http, response.json()["access_token"])
    await assert_accepted(http, tokens["access_token"])


async def test_refresh_for_another_resource_is_refused_without_burning_the_token(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client = await register(http)
    tokens = await tokens_for(server, http, client["client_id"])
    response = await refresh(http, client["client_id"], tokens["refresh_token"], resource=server.resource("other"))
    assert_oauth_error(response, "invalid_target")
    assert (await refresh(http, client["client_id"], tokens["refresh_token"])).status_code == 200


async def test_refresh_token_stolen_by_another_client_is_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    victim, attacker = await register(http), await register(http)
    tokens = await tokens_for(server, http, victim["client_id"])
    assert_oauth_error(await refresh(http, attacker["client_id"], tokens["refresh_token"]), "invalid_grant")
    # The victim's token was neither rotated nor revoked by the attempt.
    assert (await refresh(http, victim["client_id"], tokens["refresh_token"])).status_code == 200


async def test_unknown_refresh_token_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    assert_oauth_error(await refresh(http, client["client_id"], new_secret()), "invalid_grant")


# -- client authentication ----------------------------------------------------------------------------------------


async def confidential_client(http: httpx.AsyncClient, method: str = "client_secret_basic") -> tuple[str, str]:
    client = await register(
        http,
        token_endpoint_auth_method=method,
        grant_types=["client_credentials"],
        redirect_uris=[],
    )
    return client["client_id"], client["client_secret"]


def client_credentials_form(server: RunningServer, **extra: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "resource": server.resource(), "scope": "mcp:tools", **extra}


async def test_client_secret_basic_with_a_wrong_secret_is_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client_id, secret = await confidential_client(http)
    # Control: the right secret works, and the token passes the MCP server's token check.
    issued = await http.post("/token", data=client_credentials_form(server), auth=(client_id, secret))
    assert issued.status_code == 200, issued.text
    await assert_verified_without_roles(http, issued.json()["access_token"])

    for wrong in (secret[:-1], secret + "x", "", secret.upper()):
        response = await http.post("/token", data=client_credentials_form(server), auth=(client_id, wrong))
        assert_oauth_error(response, "invalid_client", 401)
        # RFC 6749 §5.2: a failed Basic authentication answers with a challenge.
        assert response.headers["www-authenticate"].startswith("Basic ")
    unknown = await http.post("/token", data=client_credentials_form(server), auth=("no-such-client", secret))
    assert_oauth_error(unknown, "invalid_client", 401)
    assert unknown.headers["www-authenticate"].startswith("Basic ")


async def test_client_authentication_with_an_unregistered_method_is_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    basic_id, basic_secret = await confidential_client(http)
    post_id, post_secret = await confidential_client(http, "client_secret_post")
    # client_secret_post for a client registered for client_secret_basic, even with the right secret.
    as_post = await http.post(
        "/token", data=client_credentials_form(server, client_id=basic_id, client_secret=basic_secret)
    )
    assert_oauth_error(as_post, "invalid_client", 401)
    # And the other way round.
    as_basic = await http.post("/token", data=client_credentials_form(server), auth=(post_id, post_secret))
    assert_oauth_error(as_basic, "invalid_client", 401)
    # No authentication at all (as if public) for a confidential client.
    as_public = await http.post("/token", data=client_credentials_form(server, client_id=basic_id))
    assert_oauth_error(as_public, "invalid_client", 401)
    # Control: each with its own method.
    ok = await http.post("/token", data=client_credentials_form(server, client_id=post_id, client_secret=post_secret))
    assert ok.status_code == 200, ok.text


async def test_two_client_authentication_methods_at_once_are_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client_id, secret = await confidential_client(http)
    response = await http.post(
        "/token",
        data=client_credentials_form(server, client_id=client_id, client_secret=secret),
        auth=(client_id, secret),
    )
    assert_oauth_error(response, "invalid_request")


async def test_basic_credentials_for_one_client_and_client_id_of_another_are_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client_id, secret = await confidential_client(http)
    other_id, _ = await confidential_client(http)
    response = await http.post(
        "/token", data=client_credentials_form(server, client_id=other_id), auth=(client_id, secret)
    )
    assert_oauth_error(response, "invalid_request")


async def test_client_credentials_by_a_public_client_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    public = await register(http)
    response = await http.post("/token", data=client_credentials_form(server, client_id=public["client_id"]))
    assert_oauth_error(response, "unauthorized_client")
    # Nor can a public client register for that grant in the first place (RFC 6749 §4.4).
    refused = await http.post(
        "/register",
        json={"redirect_uris": [], "token_endpoint_auth_method": "none", "grant_types": ["client_credentials"]},
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_client_metadata"


async def test_grant_the_client_did_not_register_for_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client_id, secret = await confidential_client(http)
    response = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": new_secret()},
        auth=(client_id, secret),
    )
    assert_oauth_error(response, "unauthorized_client")
    for grant_type in ("password", "implicit", "urn:ietf:params:oauth:grant-type:device_code", ""):
        response = await http.post("/token", data={"grant_type": grant_type}, auth=(client_id, secret))
        assert_oauth_error(response, "unsupported_grant_type")


async def test_client_credentials_for_an_unknown_resource_is_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client_id, secret = await confidential_client(http)
    for resource in ("", server.resource("nope"), server.resource() + "/", "https://evil.example/mcp/demo"):
        response = await http.post(
            "/token", data=client_credentials_form(server, resource=resource), auth=(client_id, secret)
        )
        assert_oauth_error(response, "invalid_target")


async def test_forged_or_replayed_client_assertions_are_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    """private_key_jwt (RFC 7523 §3): an assertion must be signed by the registered key, name this server, be
    short-lived, and be used once."""
    key = ECKey.generate_key("P-256")
    public = {**key.as_dict(private=False), "kid": "client-key"}
    client = await register(
        http,
        token_endpoint_auth_method="private_key_jwt",
        grant_types=["client_credentials"],
        redirect_uris=[],
        jwks={"keys": [public]},
    )
    client_id = client["client_id"]

    def assertion(signer: Any = key, *, header: dict[str, Any] | None = None, **changes: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": f"{server.base_url}/token",
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
            **changes,
        }
        return jwt.encode(header or {"alg": "ES256", "kid": "client-key"}, claims, signer, algorithms=["ES256"])

    async def present(token: str) -> httpx.Response:
        form = client_credentials_form(
            server,
            client_id=client_id,
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion=token,
        )
        return await http.post("/token", data=form)

    genuine = assertion()
    assert (await present(genuine)).status_code == 200  # control
    assert_oauth_error(await present(genuine), "invalid_client", 401)  # replayed jti

    stranger = ECKey.generate_key("P-256")
    now = int(time.time())
    segments = json.dumps({"alg": "HS256", "typ": "JWT", "kid": "client-key"}).encode()
    claims = {"iss": client_id, "sub": client_id, "aud": server.base_url, "exp": now + 60, "jti": "x"}
    signing_input = f"{b64(segments)}.{b64(json.dumps(claims).encode())}"
    hs256 = f"{signing_input}.{b64(hmac.new(json.dumps(public).encode(), signing_input.encode(), 'sha256').digest())}"
    unsigned = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims).encode())}."
    for forged in (
        assertion(stranger),  # another key, same kid
        assertion(stranger, header={"alg": "ES256", "kid": "stranger"}),
        hs256,  # algorithm confusion with the registered public key
        unsigned,
        assertion(aud="https://evil.example/token"),
        assertion(aud=f"{server.base_url}/revoke"),
        assertion(iss="someone-else"),
        assertion(exp=now - 1),
        assertion(exp=now + 3600),  # lives longer than any assertion should
        assertion(jti=None),
    ):
        assert_oauth_error(await present(forged), "invalid_client", 401)


# -- revocation (RFC 7009) and introspection (RFC 7662) ----------------------------------------------------------


async def test_revoked_refresh_token_stops_its_access_tokens_and_refreshes(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client = await register(http)
    tokens = await tokens_for(server, http, client["client_id"])
    await assert_accepted(http, tokens["access_token"])
    revoked = await http.post(
        "/revoke",
        data={"client_id": client["client_id"], "token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
    )
    assert revoked.status_code == 200, revoked.text
    await assert_refused_soon(http, tokens["access_token"])
    assert_oauth_error(await refresh(http, client["client_id"], tokens["refresh_token"]), "invalid_grant")


async def test_revoked_access_token_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    tokens = await tokens_for(server, http, client["client_id"])
    revoked = await http.post("/revoke", data={"client_id": client["client_id"], "token": tokens["access_token"]})
    assert revoked.status_code == 200, revoked.text
    await assert_refused_soon(http, tokens["access_token"])


async def test_another_client_cannot_revoke_a_token(server: RunningServer, http: httpx.AsyncClient) -> None:
    """RFC 7009 §2.1: the server checks the token was issued to the client asking; others get 200 and no effect."""
    victim, attacker = await register(http), await register(http)
    tokens = await tokens_for(server, http, victim["client_id"])
    for token in (tokens["refresh_token"], tokens["access_token"]):
        response = await http.post("/revoke", data={"client_id": attacker["client_id"], "token": token})
        assert response.status_code == 200, response.text
    await asyncio.sleep(1.5)  # two refresh cycles of the server: any revocation would have arrived by now
    await assert_accepted(http, tokens["access_token"])
    assert (await refresh(http, victim["client_id"], tokens["refresh_token"])).status_code == 200


async def test_introspection_refuses_public_clients_and_hides_other_clients_tokens(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    public = await register(http)
    tokens = await tokens_for(server, http, public["client_id"])
    response = await http.post("/introspect", data={"client_id": public["client_id"], "token": tokens["access_token"]})
    assert_oauth_error(response, "invalid_client", 401)
    # A confidential client asking about a token issued to someone else learns only that it is not active for it.
    client_id, secret = await confidential_client(http)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        response = await http.post("/introspect", data={"token": token}, auth=(client_id, secret))
        assert response.status_code == 200, response.text
        assert response.json() == {"active": False}
