"""Users connect their own grant to a source (issue 6): `/connect/{server}` and its callback, end to end through
the real HTTP stack: a browser signs in, is sent to the stand-in of the upstream's authorization server (which
approves at once as `approve_as`), comes back to the callback, and the refresh token lands in the vault as the
user's per-user secret; the `personal` server then reaches its upstream with that user's grant.

What must hold: the flow works and survives a revoked grant (the MCP client is told the connect URL; connecting
again mends it); and every attack tried is refused with nothing stored: a callback with another user's or another
session's state, an expired or replayed state, an attacker's code injected into a victim's callback, a user whose
roles do not reach the server, a server whose credential is not per-user, an upstream error, a response from the
wrong issuer (RFC 9207), an answer without a refresh token, another tenant's state, and a navigation from another
site (which only shows a page).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from pydantic import ValidationError

from chamberlain.audit.events import Action
from chamberlain.crypto.master_key import load_master_key
from chamberlain.gateway.jsonrpc import UPSTREAM_FAILED
from chamberlain.gateway.server_config import RefreshTokenCredential, ServerConfig, per_user_secret_name
from chamberlain.gateway.upstream_credentials import connect_url, reconsent_message
from chamberlain.store.servers import ServerRepository
from chamberlain.store.users import UserRepository
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.settings import CredentialKind
from chamberlain.web import connect as connect_module
from tests.support.audit_events import recorded
from tests.support.browser import Browser
from tests.support.canary import watch
from tests.support.gateway import (
    ADMIN,
    AS_SOURCE,
    GUEST,
    PASSWORDS,
    PUBLIC_CLIENT,
    REFRESH_SCOPE,
    USER_GRANT,
    Gateway,
    gateway_with_upstreams,
    vault_of,
)
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register
from tests.support.server import RunningServer
from tests.support.tenants import add_tenant, served
from tests.support.upstream_authorization_server import RefreshGrant, UpstreamAuthorizationServer

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LIFETIME = 3  # seconds the stand-in's access tokens live: a revoked grant shows after this long
WHOAMI = {"name": "whoami_hex", "arguments": {}}  # what the upstream saw in Authorization, past the leak guard
NOTES = "notes"  # a second connectable server, stored in the database, that the guest role does not reach


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_with_upstreams(tmp_path_factory.mktemp("vault-connect")) as running:
        stand_in = running.authorization_server
        stand_in.expires_in = LIFETIME
        stand_in.redirect_uris[PUBLIC_CLIENT] = {running.server.base_url + "/connect/callback"}
        yield running


@pytest.fixture(scope="module")
def gateway(stack: Gateway) -> RunningServer:
    return stack.server


@pytest.fixture(scope="module")
def stand_in(stack: Gateway) -> UpstreamAuthorizationServer:
    return stack.authorization_server


@pytest.fixture
async def client(gateway: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        yield http


def password(gateway: RunningServer, username: str) -> str:
    return PASSWORDS.get(username, gateway.user_password)


async def signed_in(gateway: RunningServer, username: str) -> Browser:
    """A browser with `username` signed in at the gateway (close it with `aclose`)."""
    browser = Browser(gateway.base_url)
    page = await browser.get("/login")
    response = await browser.submit(page, {"username": username, "password": password(gateway, username)})
    assert response.status_code == 303, response.text[:300]
    return browser


async def begin(browser: Browser, server: str = "personal") -> str:
    """Opens the connect page; returns where it sends the browser (the upstream's authorization endpoint)."""
    response = await browser.get(f"/connect/{server}")
    assert response.status_code == 302, f"{response.status_code}: {response.text[:300]}"
    return response.headers["location"]


async def authorize(browser: Browser, stand_in: UpstreamAuthorizationServer, url: str, as_whom: str | None) -> str:
    """The stand-in approves (or, for None, the person declines); returns the callback URL it sends back to."""
    stand_in.approve_as = as_whom
    response = await browser.http.get(url)
    assert response.status_code == 302, response.text[:300]
    return response.headers["location"]


async def finish(browser: Browser, callback: str, request_id: str | None = None) -> httpx.Response:
    return await browser.http.get(callback, headers={"X-Request-Id": request_id or new_request_id()})


async def connected(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer, username: str, as_whom: str
) -> RefreshGrant:
    """`username` connects `personal` in a fresh browser as the upstream's `as_whom`; returns the grant made."""
    browser = await signed_in(gateway, username)
    try:
        response = await finish(browser, await authorize(browser, stand_in, await begin(browser), as_whom))
    finally:
        await browser.http.aclose()
    assert response.status_code == 200, response.text[:500]
    assert "Connected" in response.text
    grant = stand_in.grants_of(as_whom)[-1]
    watch(grant.current, "a refresh token a user connected")  # never in a log, an event or an answer
    return grant


def new_request_id() -> str:
    return f"connect-test-{uuid.uuid4().hex}"


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def with_params(url: str, **params: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**query_of(url), **params})))


async def user_id(gateway: RunningServer, username: str, tenant: str | None = None) -> str:
    async with gateway.engine() as database:
        user = await UserRepository(database, tenant or gateway.settings.tenant).get_by_username(username)
    assert user is not None
    return user.id


async def secret_of(gateway: RunningServer, username: str) -> SecretRef:
    return SecretRef(
        gateway.settings.tenant, AS_SOURCE, per_user_secret_name(USER_GRANT, await user_id(gateway, username))
    )


async def versions(gateway: RunningServer, secret: SecretRef) -> int:
    async with vault_of(gateway) as vault:
        return len(await vault.backend.versions(secret)) if await vault.record(secret) is not None else 0


def code_exchanges(stand_in: UpstreamAuthorizationServer) -> int:
    return sum(1 for served in stand_in.served if served.grant_type == "authorization_code")


_tokens: dict[str, str] = {}


async def mcp_token(gateway: RunningServer, http: httpx.AsyncClient, username: str) -> str:
    """An access token of `username` for /mcp/personal (sign-in, consent, code grant at the gateway)."""
    if username not in _tokens:
        client_id = (await register(http))["client_id"]
        pkce = Pkce.new()
        async with Browser(gateway.base_url) as browser:
            redirect = await browser.authorize(
                authorization_url(client_id, gateway.resource("personal"), pkce),
                username=username,
                password=password(gateway, username),
            )
        response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
        assert response.status_code == 200, response.text
        _tokens[username] = response.json()["access_token"]
    return _tokens[username]


async def whoami(http: httpx.AsyncClient, bearer: str) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": WHOAMI}
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {bearer}", "X-Request-Id": new_request_id()}
    return await http.post("/mcp/personal", json=body, headers=headers)


def seen(response: httpx.Response) -> str:
    """The access token the upstream's whoami saw."""
    assert response.status_code == 200, response.text
    document = response.json()
    assert "result" in document, document
    return bytes.fromhex(document["result"]["content"][0]["text"]).decode("latin-1").removeprefix("Bearer ")


async def past_expiry() -> None:
    await asyncio.sleep(LIFETIME + 0.3)


# -- configuration ------------------------------------------------------------------------------------------------


BASE: dict[str, Any] = {
    "type": "refresh_token",
    "token_endpoint": "https://as.example.com/token",
    "client_id": "c",
    "vault": "src/grant",
    "per_user": True,
}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"authorization_endpoint": "http://as.example.com/authorize"}, "must use https"),
        ({"authorization_endpoint": "https://as.example.com/authorize#x"}, "fragment"),
        ({"authorization_endpoint": "as.example.com/authorize"}, "absolute https URL"),
        ({"authorization_endpoint": "https://u:p@as.example.com/authorize"}, "user or password"),
        ({"authorization_endpoint": "https://as.example.com/authorize", "per_user": False}, "per_user"),
        ({"issuer": "https://as.example.com"}, "give 'authorization_endpoint'"),
        (
            {"authorization_endpoint": "https://as.example.com/authorize", "issuer": "https://as.example.com/?a=1"},
            "RFC 8414",
        ),
    ],
)
def test_an_unusable_authorization_endpoint_or_issuer_is_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("?", r"\?")):
        RefreshTokenCredential.model_validate({**BASE, **extra})


def test_a_per_user_credential_with_an_authorization_endpoint_is_connectable() -> None:
    credential = RefreshTokenCredential.model_validate(
        {**BASE, "authorization_endpoint": "https://as.example.com/authorize?access_type=offline"}
    )
    assert credential.connectable
    assert not RefreshTokenCredential.model_validate(BASE).connectable
    loopback = {**BASE, "authorization_endpoint": "http://127.0.0.1:8080/authorize", "issuer": "http://127.0.0.1:8080"}
    assert RefreshTokenCredential.model_validate(loopback).connectable
    message = reconsent_message("confluence", "docs", connect_url("https://gw.example.com/t/acme", "docs"))
    assert "open https://gw.example.com/t/acme/connect/docs in a browser" in message
    assert "re-consent" in reconsent_message("confluence", "docs")


# -- the flow -----------------------------------------------------------------------------------------------------


async def test_a_user_connects_uses_loses_and_reconnects_their_own_grant(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer, client: httpx.AsyncClient
) -> None:
    alice = await user_id(gateway, "alice")
    secret = await secret_of(gateway, "alice")
    upstream_alice = "alice@upstream"
    browser = await signed_in(gateway, "alice")
    try:
        location = await begin(browser)
        assert browser.http.cookies.get("chamberlain_connect_personal")  # the flow's browser binding
        callback = await authorize(browser, stand_in, location, upstream_alice)
        request_id = new_request_id()
        page = await finish(browser, callback, request_id)
    finally:
        await browser.http.aclose()
    assert page.status_code == 200, page.text[:500]
    assert "Connected" in page.text
    assert "go back to your MCP client" in page.text

    # The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3) and the exchange (§4.1.3, RFC 7636 §4.5).
    asked = query_of(location)
    assert location.startswith(stand_in.authorization_endpoint + "?")
    assert asked["response_type"] == "code"
    assert asked["client_id"] == PUBLIC_CLIENT
    assert asked["redirect_uri"] == gateway.base_url + "/connect/callback"
    assert asked["scope"] == REFRESH_SCOPE
    assert asked["code_challenge_method"] == "S256"
    assert len(asked["code_challenge"]) == 43
    assert alice not in asked["state"]  # sealed, not readable
    exchange = next(served for served in reversed(stand_in.served) if served.grant_type == "authorization_code")
    assert exchange.status == 200
    assert exchange.form["redirect_uri"] == asked["redirect_uri"]
    assert exchange.form["client_id"] == PUBLIC_CLIENT  # a public client: its id, no secret
    assert 43 <= len(exchange.form["code_verifier"]) <= 128

    # In the vault: the user's own secret, bound to the server, recorded as the user's consent (never the value).
    grant = stand_in.grants_of(upstream_alice)[-1]
    watch(grant.current, "a refresh token a user connected")
    async with vault_of(gateway) as vault:
        record = await vault.record(secret)
        assert record is not None
        assert (record.user_id, record.bindings, record.kind, record.health) == (
            alice,
            ("personal",),
            CredentialKind.REFRESH_TOKEN,
            "ok",
        )
        assert await vault.backend.get(secret) == grant.current.encode()
    (event,) = await recorded(gateway, request_id, Action.CONSENT_GIVEN)
    assert event.public["outcome"] == "success"
    assert event.public["actor"] == {"type": "user", "id": alice}
    assert event.public["target"] == str(secret)
    assert event.public["details"]["upstream"] == "personal"
    assert grant.current not in str(event.public)

    # The personal server now reaches its upstream with alice's own grant.
    bearer = await mcp_token(gateway, client, "alice")
    claims = stand_in.verify(seen(await whoami(client, bearer)))
    assert (claims["sub"], claims["grant"]) == (upstream_alice, grant.id)

    # The upstream grant is revoked: the MCP client is told where to consent again.
    stand_in.revoke(grant)
    await past_expiry()
    response = await whoami(client, bearer)
    assert response.status_code == 200, response.text
    failure = response.json()["error"]
    assert failure["code"] == UPSTREAM_FAILED
    assert "re-consent" in failure["message"]
    assert f"{gateway.base_url}/connect/personal" in failure["message"]
    async with vault_of(gateway) as vault:
        record = await vault.record(secret)
    assert record is not None
    assert record.health == "unhealthy"
    # Later requests are refused by the vault itself, with the same message.
    assert f"{gateway.base_url}/connect/personal" in (await whoami(client, bearer)).json()["error"]["message"]

    # Connecting again stores a new version, which makes the credential healthy, and the upstream is reached.
    renewed = await connected(gateway, stand_in, "alice", upstream_alice)
    assert renewed.id != grant.id
    async with vault_of(gateway) as vault:
        record = await vault.record(secret)
        assert record is not None
        assert record.health == "ok"
        assert len(await vault.backend.versions(secret)) >= 3  # connected, rotated by a refresh, connected again
    claims = stand_in.verify(seen(await whoami(client, bearer)))
    assert (claims["sub"], claims["grant"]) == (upstream_alice, renewed.id)


async def test_the_connect_page_asks_a_signed_out_person_to_sign_in_and_returns_to_it(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    async with Browser(gateway.base_url) as browser:
        page = await browser.get("/connect/personal")
        assert page.status_code == 200
        assert 'name="password"' in page.text
        assert 'name="return_to" value="connect:personal"' in page.text
        # CSP form-action: the sign-in ends at the upstream's authorization endpoint, after redirects.
        assert stand_in.issuer in page.headers["content-security-policy"]
        response = await browser.submit(page, {"username": "alice", "password": gateway.user_password})
        assert response.status_code == 303
        assert response.headers["location"] == "/connect/personal"
        assert (await browser.get(response.headers["location"])).status_code == 302


async def test_a_navigation_from_another_site_shows_a_page_instead_of_starting_a_flow(
    gateway: RunningServer,
) -> None:
    browser = await signed_in(gateway, "alice")
    try:
        page = await browser.http.get("/connect/personal", headers={"Sec-Fetch-Site": "cross-site"})
        assert page.status_code == 200
        assert "opened from another site" in page.text
        assert 'href="/connect/personal"' in page.text
        assert not browser.http.cookies.get("chamberlain_connect_personal")
        # From the gateway's own page (or typed in), the flow starts.
        started = await browser.http.get("/connect/personal", headers={"Sec-Fetch-Site": "same-origin"})
        assert started.status_code == 302
    finally:
        await browser.http.aclose()


# -- attacks and refusals -----------------------------------------------------------------------------------------


async def test_a_callback_with_another_users_state_is_refused_and_stores_nothing(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    """The login-CSRF shape: bob's own grant, sent to alice's browser, must not land in alice's vault."""
    bob_browser = await signed_in(gateway, GUEST)
    alice_browser = await signed_in(gateway, "alice")
    try:
        bobs_callback = await authorize(bob_browser, stand_in, await begin(bob_browser), "bob@upstream")
        alice_versions = await versions(gateway, await secret_of(gateway, "alice"))
        exchanges = code_exchanges(stand_in)
        request_id = new_request_id()
        refused = await finish(alice_browser, bobs_callback, request_id)
        assert refused.status_code == 403
        assert "Start again" in refused.text
        assert code_exchanges(stand_in) == exchanges  # the code was never even redeemed
        assert await versions(gateway, await secret_of(gateway, "alice")) == alice_versions
        (event,) = await recorded(gateway, request_id, Action.CONSENT_GIVEN)
        assert event.public["outcome"] == "denied"
        assert event.public["reason"] == "the state belongs to another user or session"
        # Bob's own flow is untouched by the attempt: in his browser it completes.
        assert (await finish(bob_browser, bobs_callback)).status_code == 200
        async with vault_of(gateway) as vault:
            record = await vault.record(await secret_of(gateway, GUEST))
        assert record is not None
        assert record.user_id == await user_id(gateway, GUEST)
    finally:
        await bob_browser.http.aclose()
        await alice_browser.http.aclose()


async def test_a_callback_in_another_session_of_the_same_user_is_refused(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    first, second = await signed_in(gateway, "alice"), await signed_in(gateway, "alice")
    try:
        callback = await authorize(first, stand_in, await begin(first), "alice@upstream")
        exchanges = code_exchanges(stand_in)
        assert (await finish(second, callback)).status_code == 403
        # Even with the flow cookie copied over: the state names the session, not only the browser.
        second.http.cookies.set("chamberlain_connect_personal", first.http.cookies["chamberlain_connect_personal"])
        assert (await finish(second, callback)).status_code == 403
        assert code_exchanges(stand_in) == exchanges
    finally:
        await first.http.aclose()
        await second.http.aclose()


async def test_an_expired_state_is_refused(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = await signed_in(gateway, "alice")
    try:
        monkeypatch.setattr(connect_module, "FLOW_TTL", 1)  # the gateway runs in this process
        callback = await authorize(browser, stand_in, await begin(browser), "alice@upstream")
        monkeypatch.undo()
        await asyncio.sleep(1.2)
        exchanges = code_exchanges(stand_in)
        refused = await finish(browser, callback)
        assert refused.status_code == 400
        assert "expired" in refused.text
        assert code_exchanges(stand_in) == exchanges
    finally:
        await browser.http.aclose()


async def test_a_replayed_callback_is_refused(gateway: RunningServer, stand_in: UpstreamAuthorizationServer) -> None:
    secret = await secret_of(gateway, "alice")
    browser = await signed_in(gateway, "alice")
    try:
        callback = await authorize(browser, stand_in, await begin(browser), "alice@upstream")
        flow_cookie = browser.http.cookies["chamberlain_connect_personal"]
        assert (await finish(browser, callback)).status_code == 200
        stored, exchanges = await versions(gateway, secret), code_exchanges(stand_in)
        # The first callback cleared the flow cookie...
        assert not browser.http.cookies.get("chamberlain_connect_personal")
        assert (await finish(browser, callback)).status_code == 403
        # ...and with it put back (a replica that never saw the first), the process remembers the finished flow.
        browser.http.cookies.set("chamberlain_connect_personal", flow_cookie)
        again = await finish(browser, callback)
        assert again.status_code == 400
        assert (await versions(gateway, secret), code_exchanges(stand_in)) == (stored, exchanges)
    finally:
        await browser.http.aclose()


async def test_an_attackers_code_injected_into_a_victims_callback_is_refused(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    """RFC 9700 §4.5: the attacker's code, paired with the victim's own valid state, fails PKCE at the upstream."""
    attacker, victim = await signed_in(gateway, GUEST), await signed_in(gateway, "alice")
    try:
        attackers_code = query_of(await authorize(attacker, stand_in, await begin(attacker), "bob@upstream"))["code"]
        victims_callback = await authorize(victim, stand_in, await begin(victim), "alice@upstream")
        stored = await versions(gateway, await secret_of(gateway, "alice"))
        request_id = new_request_id()
        refused = await finish(victim, with_params(victims_callback, code=attackers_code), request_id)
        assert refused.status_code == 502
        assert "Nothing was stored" in refused.text
        assert stand_in.served[-1].grant_type == "authorization_code"
        assert stand_in.served[-1].status == 400  # invalid_grant: the verifier is not the attacker's
        assert await versions(gateway, await secret_of(gateway, "alice")) == stored
        (event,) = await recorded(gateway, request_id, Action.CONSENT_GIVEN)
        assert event.public["outcome"] == "failure"
        assert attackers_code not in str(event.public)
    finally:
        await attacker.http.aclose()
        await victim.http.aclose()


async def test_a_user_whose_roles_do_not_reach_the_server_cannot_connect(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer, stack: Gateway
) -> None:
    credential = {
        "type": "refresh_token",
        "token_endpoint": stand_in.token_endpoint,
        "authorization_endpoint": stand_in.authorization_endpoint,
        "client_id": PUBLIC_CLIENT,
        "vault": f"{AS_SOURCE}/notes-grant",
        "per_user": True,
    }
    async with gateway.engine() as database:
        repository = ServerRepository(database, gateway.settings.tenant, load_master_key(gateway.settings.data_dir))
        if await repository.get(NOTES) is None:
            config = ServerConfig.model_validate({"url": stack.plain.url, "credential": credential})
            await repository.add(NOTES, config)
    await served(gateway, gateway.settings.tenant, (NOTES,))
    guest = await signed_in(gateway, GUEST)  # the guest role reaches demo and personal only
    admin = await signed_in(gateway, ADMIN)
    try:
        refused = await guest.get(f"/connect/{NOTES}")
        assert refused.status_code == 403
        assert "roles do not include" in refused.text
        assert "location" not in refused.headers
        assert (await admin.get(f"/connect/{NOTES}")).status_code == 302  # whose roles reach it may
    finally:
        await guest.http.aclose()
        await admin.http.aclose()


@pytest.mark.parametrize("server", ["refreshed", "keyed", "plain", "no-such-server", "Not_A_Name"])
async def test_a_server_whose_credential_is_not_per_user_has_nothing_to_connect(
    gateway: RunningServer, server: str
) -> None:
    browser = await signed_in(gateway, "alice")
    try:
        page = await browser.get(f"/connect/{server}")
        assert page.status_code == 404
        assert "location" not in page.headers
        assert "Not_A_Name" not in page.text
    finally:
        await browser.http.aclose()


async def test_an_upstream_error_response_shows_a_page_and_stores_nothing(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    secret = await secret_of(gateway, "alice")
    browser = await signed_in(gateway, "alice")
    try:
        callback = await authorize(browser, stand_in, await begin(browser), None)  # the person declines
        assert query_of(callback)["error"] == "access_denied"
        stored, exchanges = await versions(gateway, secret), code_exchanges(stand_in)
        page = await finish(browser, callback)
        assert page.status_code == 403
        assert "you did not grant access" in page.text
        assert "Nothing was stored" in page.text
        assert (await versions(gateway, secret), code_exchanges(stand_in)) == (stored, exchanges)
    finally:
        await browser.http.aclose()


async def test_a_response_naming_another_issuer_is_refused(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    """RFC 9207 §2.4: the personal server's credential names the stand-in's issuer."""
    secret = await secret_of(gateway, "alice")
    browser = await signed_in(gateway, "alice")
    try:
        stand_in.response_issuer = "https://mix-up.example"
        callback = await authorize(browser, stand_in, await begin(browser), "alice@upstream")
        stored, exchanges = await versions(gateway, secret), code_exchanges(stand_in)
        page = await finish(browser, callback)
        assert page.status_code == 400
        assert "RFC 9207" in page.text
        assert (await versions(gateway, secret), code_exchanges(stand_in)) == (stored, exchanges)
    finally:
        stand_in.response_issuer = stand_in.issuer
        await browser.http.aclose()


async def test_an_answer_without_a_refresh_token_asks_for_offline_access(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    secret = await secret_of(gateway, "alice")
    browser = await signed_in(gateway, "alice")
    try:
        stand_in.refresh_tokens_for_codes = False
        callback = await authorize(browser, stand_in, await begin(browser), "alice@upstream")
        stored = await versions(gateway, secret)
        page = await finish(browser, callback)
        assert page.status_code == 502
        assert "offline access" in page.text
        assert await versions(gateway, secret) == stored
    finally:
        stand_in.refresh_tokens_for_codes = True
        await browser.http.aclose()


async def test_a_state_or_callback_that_is_not_this_tenants_is_refused(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    await add_tenant(gateway, "connect-other", users={"alice": ("developer",)})
    browser = await signed_in(gateway, "alice")
    try:
        callback = await authorize(browser, stand_in, await begin(browser), "alice@upstream")
        elsewhere = urlsplit(callback)._replace(path="/t/connect-other/connect/callback")
        assert (await finish(browser, urlunsplit(elsewhere))).status_code == 400
        assert (await finish(browser, with_params(callback, state="garbage"))).status_code == 400
        assert (await browser.get("/connect/callback")).status_code == 400
    finally:
        await browser.http.aclose()


async def test_a_name_holding_another_users_credential_is_not_replaced(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer
) -> None:
    """An administrator filed alice's token under carol's name: carol connecting must not take it over."""
    misfiled = await secret_of(gateway, ADMIN)
    async with vault_of(gateway) as vault:
        await vault.store(
            misfiled,
            b"alices-token-filed-wrongly",
            kind=CredentialKind.REFRESH_TOKEN,
            bindings=("personal",),
            user_id=await user_id(gateway, "alice"),
        )
    browser = await signed_in(gateway, ADMIN)
    try:
        page = await finish(browser, await authorize(browser, stand_in, await begin(browser), "carol@upstream"))
        assert page.status_code == 409
        async with vault_of(gateway) as vault:
            record = await vault.record(misfiled)
            assert record is not None
            assert record.user_id == await user_id(gateway, "alice")
            assert await vault.backend.get(misfiled) == b"alices-token-filed-wrongly"
    finally:
        await browser.http.aclose()
