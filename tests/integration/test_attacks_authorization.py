"""Attacks on the authorization endpoint and the browser pages, each tried through the real HTTP stack and refused:
PKCE omissions, redirect-URI tampering and open redirects, consent reuse across clients (confused deputy), CSRF on
the login and consent forms, password guessing, and a CIMD client_id that points into the private network."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpcore
import httpx
import pytest

from chamberlain.identity.passwords import hash_password
from chamberlain.store.clients import ClientRepository
from chamberlain.store.users import UserRepository
from tests.support.browser import Browser, parse_forms
from tests.support.network import FakeResolver
from tests.support.oauth import (
    REDIRECT_URI,
    Pkce,
    authorization_url,
    exchange_code,
    redirect_params,
    register,
)
from tests.support.server import RunningServer, random_name, running_server

OTHER_REDIRECT_URI = "http://127.0.0.1:53682/other-callback"


def assert_error_page(response: httpx.Response) -> str:
    """RFC 6749 §4.1.2.1 / RFC 9700 §4.11: an untrusted client or redirect URI gets a page, never a redirect."""
    assert response.status_code == 400, f"{response.status_code} {response.headers.get('location')}"
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "code=" not in response.text
    return response.text


def assert_error_redirect(response: httpx.Response, error: str, state: str | None = None) -> dict[str, str]:
    """An error sent back to the (trusted) redirect URI: the exact code, state and iss echoed, and no code."""
    params = redirect_params(response)
    assert response.headers["location"].startswith(REDIRECT_URI + "?")
    assert params["error"] == error, params
    assert "code" not in params
    if state is not None:
        assert params["state"] == state
    return params


def has_consent_form(response: httpx.Response) -> bool:
    return response.status_code == 200 and 'name="decision"' in response.text


def has_login_form(response: httpx.Response) -> bool:
    return response.status_code == 200 and 'action="/login"' in response.text


async def signed_in_browser(server: RunningServer) -> Browser:
    """A browser with a session, signed in outside any authorization (GET /login)."""
    browser = Browser(server.base_url)
    page = await browser.get("/login")
    assert has_login_form(page)
    done = await browser.submit(page, {"username": server.user, "password": server.user_password})
    assert done.status_code == 303, done.text
    return browser


def form_fields(page: httpx.Response) -> dict[str, str]:
    forms = parse_forms(page.text)
    assert forms, page.text[:300]
    return forms[0].fields


# -- PKCE at the authorization endpoint ---------------------------------------------------------------------------


async def test_authorization_without_code_challenge_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    response = await http.get(authorization_url(client["client_id"], server.resource(), None, state="s1"))
    params = assert_error_redirect(response, "invalid_request", "s1")
    assert params["iss"] == server.base_url
    assert "code_challenge" in params["error_description"]


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("plain", id="plain"),
        pytest.param(None, id="method-omitted-means-plain"),
        pytest.param("s256", id="lowercase"),
        pytest.param("S512", id="unknown"),
    ],
)
async def test_code_challenge_method_other_than_s256_is_refused(
    server: RunningServer, http: httpx.AsyncClient, method: str | None
) -> None:
    client = await register(http)
    pkce = Pkce.new()
    url = authorization_url(
        client["client_id"],
        server.resource(),
        None,
        state="s2",
        code_challenge=pkce.verifier[:43],  # a "plain" challenge is the verifier itself
        **({"code_challenge_method": method} if method is not None else {}),
    )
    assert_error_redirect(await http.get(url), "invalid_request", "s2")


async def test_malformed_code_challenge_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    for challenge in ("short", "x" * 44, "+" * 43, "a" * 42 + "="):
        url = authorization_url(
            client["client_id"], server.resource(), None, code_challenge=challenge, code_challenge_method="S256"
        )
        assert_error_redirect(await http.get(url), "invalid_request")


# -- redirect URIs and open redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        pytest.param("http://127.0.0.1:53682/callback/", id="trailing-slash"),
        pytest.param("http://127.0.0.1:53682/other", id="other-path"),
        pytest.param("http://127.0.0.1:53682/Callback", id="path-case"),
        pytest.param("http://127.0.0.1:53682/callback/../callback", id="dot-segments"),
        pytest.param("http://127.0.0.1:53682/callback?next=https://evil.example", id="added-query"),
        pytest.param("http://127.0.0.1:53682/callback#x", id="fragment"),
        pytest.param("https://evil.example/callback", id="other-host"),
        pytest.param("http://localhost:53682/callback", id="other-loopback-name"),
        pytest.param("http://127.0.0.2:53682/callback", id="other-loopback-address"),
        pytest.param("http://example.com/cb", id="non-loopback-http"),
        pytest.param("https://127.0.0.1:53682/callback", id="other-scheme"),
        pytest.param("http://127.0.0.1:53682@evil.example/callback", id="userinfo"),
        pytest.param("http://127.0.0.1:53682.evil.example/callback", id="host-suffix"),
        pytest.param("javascript:alert(1)//", id="javascript"),
        pytest.param("", id="empty"),
    ],
)
async def test_unregistered_redirect_uri_gets_an_error_page_and_no_redirect(
    server: RunningServer, http: httpx.AsyncClient, redirect_uri: str
) -> None:
    client = await register(http)
    url = authorization_url(client["client_id"], server.resource(), Pkce.new(), redirect_uri=redirect_uri)
    assert_error_page(await http.get(url))
    # The same with a broken request on top (which would otherwise be reported by redirect): still a page.
    url = authorization_url(client["client_id"], server.resource(), None, redirect_uri=redirect_uri, response_type="x")
    assert_error_page(await http.get(url))


async def test_http_redirect_uri_to_a_remote_host_cannot_even_be_registered(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/register", json={"redirect_uris": ["http://example.com/cb"], "token_endpoint_auth_method": "none"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


@pytest.mark.parametrize(
    "client_id",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("no-such-client", id="unknown"),
        pytest.param("00000000-0000-4000-8000-000000000000", id="unknown-uuid"),
        pytest.param("../../admin", id="path-like"),
        pytest.param("http://127.0.0.1:1/client.json", id="http-url"),
    ],
)
async def test_unknown_client_cannot_use_the_server_as_an_open_redirector(
    server: RunningServer, http: httpx.AsyncClient, client_id: str | None
) -> None:
    query = {
        "response_type": "code",
        "redirect_uri": "https://evil.example/steal",
        "state": "x",
        "resource": server.resource(),
        "scope": "mcp:tools",
        "code_challenge": Pkce.new().challenge,
        "code_challenge_method": "S256",
    }
    if client_id is not None:
        query["client_id"] = client_id
    page = assert_error_page(await http.get("/authorize?" + urlencode(query)))
    assert "evil.example" not in page


async def test_revoked_client_gets_an_error_page(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    async with server.engine() as engine:
        assert await ClientRepository(engine, server.settings.tenant).revoke(client["client_id"])
    assert_error_page(await http.get(authorization_url(client["client_id"], server.resource(), Pkce.new())))


async def test_omitted_redirect_uri_with_several_registered_gets_an_error_page(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client = await register(http, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    url = authorization_url(client["client_id"], server.resource(), Pkce.new(), redirect_uri=None)  # type: ignore[arg-type]
    assert_error_page(await http.get(url))


async def test_duplicated_redirect_uri_never_redirects_to_the_attacker(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """RFC 6749 §3.1: a repeated parameter is an error; whichever copy is read, the attacker's is never used."""
    client = await register(http)
    base = authorization_url(client["client_id"], server.resource(), Pkce.new())
    evil = urlencode({"redirect_uri": "https://evil.example/steal"})
    for url in (f"{base}&{evil}", base.replace("/authorize?", f"/authorize?{evil}&")):
        response = await http.get(url)
        assert "evil.example" not in response.headers.get("location", "")
        assert response.status_code in (302, 400)
        if response.status_code == 302:
            assert_error_redirect(response, "invalid_request")


async def test_loopback_redirect_uri_with_another_port_is_accepted(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Positive control (RFC 8252 §7.3): native apps bind an ephemeral port, so only the port may differ."""
    client = await register(http)
    pkce = Pkce.new()
    ephemeral = "http://127.0.0.1:40123/callback"
    url = authorization_url(client["client_id"], server.resource(), pkce, redirect_uri=ephemeral)
    async with Browser(server.base_url) as browser:
        redirect = await browser.authorize(url, username=server.user, password=server.user_password)
    assert redirect.headers["location"].startswith(ephemeral + "?")
    code = redirect_params(redirect)["code"]
    # The token request must then name that same redirect URI (OAuth 2.1 §4.1.3).
    wrong = await exchange_code(http, client["client_id"], code, pkce.verifier)  # sends the registered URI
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    response = await exchange_code(http, client["client_id"], code, pkce.verifier, redirect_uri=ephemeral)
    assert response.status_code == 200, response.text


# -- resource indicators ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param("unknown", id="not-a-url"),
        pytest.param("https://evil.example/mcp/demo", id="foreign"),
        pytest.param("/mcp/no-such-server", id="unknown-server"),
        pytest.param("/mcp/demo/", id="trailing-slash"),
        pytest.param("", id="empty"),
        pytest.param(None, id="missing"),
    ],
)
async def test_authorization_for_an_unknown_resource_is_refused(
    server: RunningServer, http: httpx.AsyncClient, resource: str | None
) -> None:
    client = await register(http)
    if resource is not None and resource.startswith("/"):
        resource = server.base_url + resource
    url = authorization_url(client["client_id"], "placeholder", Pkce.new(), state="s3")
    query = {key: value[0] for key, value in parse_qs(urlsplit(url).query).items()}
    if resource is None:
        del query["resource"]
    else:
        query["resource"] = resource
    assert_error_redirect(await http.get("/authorize?" + urlencode(query)), "invalid_target", "s3")


async def test_unknown_scope_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http, scope="mcp:tools")
    for scope in ("admin", "mcp:tools admin", "mcp:resources", 'mcp:tools "x"'):
        url = authorization_url(client["client_id"], server.resource(), Pkce.new(), scope=scope)
        assert_error_redirect(await http.get(url), "invalid_scope")


# -- consent: no code without the person's approval of exactly this request ---------------------------------------


async def test_consent_for_one_client_does_not_cover_another(server: RunningServer, http: httpx.AsyncClient) -> None:
    """Confused deputy: a browser that approved client A must be asked again before client B gets a code."""
    client_a = await register(http, client_name="Client A")
    client_b = await register(http, client_name="Client B")
    browser = await signed_in_browser(server)
    async with browser:
        url_a = authorization_url(client_a["client_id"], server.resource(), Pkce.new())
        first = await browser.authorize(url_a, username=server.user, password=server.user_password)
        assert "code" in redirect_params(first)
        # Control: A is not asked twice for the same request.
        again = await browser.get(authorization_url(client_a["client_id"], server.resource(), Pkce.new()))
        assert "code" in redirect_params(again)

        page = await browser.get(authorization_url(client_b["client_id"], server.resource(), Pkce.new()))
        assert has_consent_form(page)
        assert "location" not in page.headers
        assert "Client B" in page.text
        # B's user denies: B gets access_denied and still no code.
        denied = await browser.submit(page, {"decision": "deny"})
        assert_error_redirect(denied, "access_denied")


async def test_consent_page_cannot_be_framed_or_scripted_by_client_metadata(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """Clickjacking and stored XSS: the consent page refuses framing and escapes the client's self-chosen name."""
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    client = await register(http, client_name=hostile)
    async with await signed_in_browser(server) as browser:
        page = await consent_page(browser, server, client["client_id"])
    assert hostile not in page.text
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    assert page.headers["cache-control"] == "no-store"


async def test_login_page_escapes_what_it_echoes(server: RunningServer) -> None:
    hostile = '"><script>alert(1)</script>'
    async with Browser(server.base_url) as browser:
        page = await browser.submit(await browser.get("/login"), {"username": hostile, "password": "wrong"})
    assert page.status_code == 401
    assert hostile not in page.text
    assert "<script>" not in page.text


async def test_prompt_none_without_consent_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    async with await signed_in_browser(server) as browser:
        url = authorization_url(client["client_id"], server.resource(), Pkce.new(), prompt="none")
        assert_error_redirect(await browser.get(url), "consent_required")
    unauthenticated = await http.get(url)
    assert_error_redirect(unauthenticated, "login_required")


async def test_prompt_login_demands_a_fresh_sign_in_once(server: RunningServer, http: httpx.AsyncClient) -> None:
    """prompt=login: an existing session is not reused silently; after the fresh sign-in the flow goes on (and does
    not loop back to the sign-in form)."""
    client = await register(http)
    async with await signed_in_browser(server) as browser:
        url = authorization_url(client["client_id"], server.resource(), Pkce.new(), prompt="login consent")
        page = await browser.get(url)
        assert has_login_form(page)
        signed_in = await browser.submit(page, {"username": server.user, "password": server.user_password})
        assert signed_in.status_code == 303
        consent = await browser.follow_to_client(signed_in)
        assert has_consent_form(consent)  # prompt=consent survives; prompt=login was satisfied
        granted = await browser.submit(consent, {"decision": "allow"})
        assert "code" in redirect_params(granted)


async def test_changed_scope_or_redirect_uri_asks_for_consent_again(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client = await register(http, redirect_uris=[REDIRECT_URI, OTHER_REDIRECT_URI])
    async with await signed_in_browser(server) as browser:
        url = authorization_url(client["client_id"], server.resource(), Pkce.new())
        granted = await browser.authorize(url, username=server.user, password=server.user_password)
        assert "code" in redirect_params(granted)

        wider = authorization_url(client["client_id"], server.resource(), Pkce.new(), scope="mcp:tools mcp:resources")
        page = await browser.get(wider)
        assert has_consent_form(page)
        assert "mcp:resources" in page.text

        elsewhere = authorization_url(
            client["client_id"], server.resource(), Pkce.new(), redirect_uri=OTHER_REDIRECT_URI
        )
        assert has_consent_form(await browser.get(elsewhere))

        other_port = authorization_url(
            client["client_id"], server.resource(), Pkce.new(), redirect_uri="http://127.0.0.1:40999/callback"
        )
        assert has_consent_form(await browser.get(other_port))

        # prompt=consent asks even for the request already approved.
        assert has_consent_form(await browser.get(url + "&prompt=consent"))


# -- CSRF on the consent and login forms --------------------------------------------------------------------------


async def consent_page(browser: Browser, server: RunningServer, client_id: str) -> httpx.Response:
    page = await browser.get(authorization_url(client_id, server.resource(), Pkce.new()))
    assert has_consent_form(page)
    return page


def assert_forbidden_without_code(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert "location" not in response.headers
    assert "code=" not in response.text


def tampered(token: str) -> str:
    # The first character always carries significant bits (the last one of base64 may not), and must change.
    return ("1" if token[0] != "1" else "2") + token[1:]


async def test_consent_form_without_a_valid_csrf_token_is_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    client_a, client_b = await register(http), await register(http)
    async with await signed_in_browser(server) as browser:
        page_a = await consent_page(browser, server, client_a["client_id"])
        page_b = await consent_page(browser, server, client_b["client_id"])
        fields_a, fields_b = form_fields(page_a), form_fields(page_b)
        attempts: list[dict[str, str]] = [
            {"request": fields_a["request"], "decision": "allow"},  # no token
            {"request": fields_a["request"], "decision": "allow", "csrf_token": ""},
            {"request": fields_a["request"], "decision": "allow", "csrf_token": "0" * 64},
            {"request": fields_a["request"], "decision": "allow", "csrf_token": tampered(fields_a["csrf_token"])},
            # B's token on A's request: tokens are bound to the exact request they were shown with.
            {"request": fields_a["request"], "decision": "allow", "csrf_token": fields_b["csrf_token"]},
            # A's token with a request tampered to ask for more.
            {"request": fields_a["request"] + "&x=1", "decision": "allow", "csrf_token": fields_a["csrf_token"]},
        ]
        for data in attempts:
            assert_forbidden_without_code(await browser.http.post("/authorize", data=data))

        # The same valid token from another browser (no csrf cookie, no session): a cross-site forgery.
        async with Browser(server.base_url) as attacker:
            forged = await attacker.http.post("/authorize", data={**fields_a, "decision": "allow"})
            assert_forbidden_without_code(forged)

        # Nothing was recorded by the refused submissions: A is still asked.
        assert has_consent_form(
            await browser.get(authorization_url(client_a["client_id"], server.resource(), Pkce.new()))
        )
        # Control: the genuine submission works.
        allowed = await browser.submit(page_a, {"decision": "allow"})
        assert "code" in redirect_params(allowed)


async def test_login_form_without_a_valid_csrf_token_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    client = await register(http)
    url = authorization_url(client["client_id"], server.resource(), Pkce.new())
    other_url = authorization_url(client["client_id"], server.resource(), Pkce.new())
    credentials = {"username": server.user, "password": server.user_password}
    async with Browser(server.base_url) as browser:
        page = await browser.get(url)
        assert has_login_form(page)
        fields = form_fields(page)
        for changes in (
            {"csrf_token": "0" * 64},
            {"csrf_token": ""},
            # The token is bound to the authorization request the form continues.
            {"return_to": urlsplit(other_url).query},
        ):
            response = await browser.http.post("/login", data={**fields, **credentials, **changes})
            assert_forbidden_without_code(response)
            assert "session" not in "".join(response.headers.get_list("set-cookie"))
        without_token = {name: value for name, value in fields.items() if name != "csrf_token"}
        assert_forbidden_without_code(await browser.http.post("/login", data={**without_token, **credentials}))
        # Login CSRF: the victim's browser never loaded the form, so it has no csrf cookie.
        async with Browser(server.base_url) as victim:
            assert_forbidden_without_code(await victim.http.post("/login", data={**fields, **credentials}))
        # Still signed out: the authorization shows the sign-in form again.
        assert has_login_form(await browser.get(url))


async def test_repeated_wrong_passwords_lock_the_account(server: RunningServer) -> None:
    username, password = random_name("lockout"), secrets.token_urlsafe(16)
    async with server.engine() as engine:
        await UserRepository(engine, server.settings.tenant).add(username, hash_password(password), ("developer",))
    attempts = server.settings.login.max_failed_attempts
    async with Browser(server.base_url) as browser:
        page = await browser.get("/login")
        for attempt in range(attempts):
            page = await browser.submit(page, {"username": username, "password": f"guess-{attempt}"})
            assert page.status_code == 401
            assert "Incorrect" in page.text
        locked = await browser.submit(page, {"username": username, "password": password})
        assert locked.status_code == 401
        assert "locked" in locked.text
        assert "location" not in locked.headers
        assert not [cookie for cookie in browser.http.cookies if cookie.endswith("session")]
    # Another browser (the account is locked, not the browser) is refused too.
    async with Browser(server.base_url) as other:
        refused = await other.submit(await other.get("/login"), {"username": username, "password": password})
        assert refused.status_code == 401
        assert "locked" in refused.text


# -- CIMD: a client_id URL that resolves into the private network is refused before any connection ---------------


RESOLVER = FakeResolver(  # the resolver seam: no DNS, and it remembers what it was asked
    {
        "client.example": ["169.254.169.254"],
        "internal.example": ["10.0.0.7"],
        "loopback.example": ["127.0.0.1"],
        "mixed.example": ["93.184.216.34", "10.0.0.7"],
        "public.example": ["93.184.216.34"],
    }
)


@pytest.fixture(scope="module")
def cimd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("chamberlain-cimd"), resolver=RESOLVER) as running:
        yield running


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every TCP connection the SSRF guard hands to httpcore's real backend; none may be attempted."""
    attempted: list[tuple[Any, ...]] = []

    async def refuse(self: httpcore.AnyIOBackend, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        attempted.append((host, port))
        raise httpcore.ConnectError("the test forbids outbound connections")

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", refuse)
    return attempted


def test_cimd_guard_observes_connections(cimd_server: RunningServer, connections: list[tuple[Any, ...]]) -> None:
    """Control for the test below: a name resolving to a public address does reach the connection step, where the
    `connections` fixture records it and refuses it (so no socket is opened; no test connects beyond loopback)."""
    assert httpcore.AnyIOBackend.connect_tcp.__name__ == "refuse"
    RESOLVER.asked.clear()
    url = authorization_url("https://public.example/metadata.json", cimd_server.resource(), Pkce.new())
    with httpx.Client(base_url=cimd_server.base_url, timeout=30, follow_redirects=False) as http:
        assert_error_page(http.get(url))
    assert RESOLVER.asked == [("public.example", 443)]
    assert connections == [("93.184.216.34", 443)]


@pytest.mark.parametrize(
    ("client_id", "host", "address_kind"),
    [
        ("https://client.example/metadata.json", "client.example", "link-local"),
        ("https://internal.example/metadata.json", "internal.example", "private"),
        ("https://loopback.example/metadata.json", "loopback.example", "loopback"),
        ("https://mixed.example/metadata.json", "mixed.example", "private"),
        ("https://169.254.169.254/latest/meta-data.json", None, "link-local"),
    ],
)
def test_cimd_client_id_resolving_to_a_private_address_is_refused_before_connecting(
    cimd_server: RunningServer,
    connections: list[tuple[Any, ...]],
    caplog: pytest.LogCaptureFixture,
    client_id: str,
    host: str | None,
    address_kind: str,
) -> None:
    caplog.set_level(logging.INFO, logger="chamberlain.oauth.cimd")
    assert httpcore.AnyIOBackend.connect_tcp.__name__ == "refuse"
    RESOLVER.asked.clear()
    url = authorization_url(client_id, cimd_server.resource(), Pkce.new())
    with httpx.Client(base_url=cimd_server.base_url, timeout=30, follow_redirects=False) as http:
        response = http.get(url)
    page = assert_error_page(response)

    if host is not None:
        assert RESOLVER.asked == [(host, 443)]  # resolution happened, through the seam
    else:
        assert RESOLVER.asked == []  # a literal address needs none, and is vetted all the same
    assert connections == []  # and no connection was attempted to anything
    # The log records why (the blocked address class); the page does not echo internal addresses (no DNS oracle).
    assert any(f"is a {address_kind} address" in record.getMessage() for record in caplog.records), caplog.text
    for address in ("169.254.169.254", "10.0.0.7", "127.0.0.1"):
        if host is not None:
            assert address not in page
