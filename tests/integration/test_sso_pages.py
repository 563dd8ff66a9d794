"""The single sign-on pages without an IdP's cooperation: domain capture, home-realm discovery, an IdP that is down,
and answers this browser never asked for. Each refusal is a clear page and an `auth.sign_in` audit event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from chamberlain.audit.events import Action
from chamberlain.identity.passwords import hash_password
from chamberlain.sso.oidc.config import OidcProviderConfig
from chamberlain.store.users import UserRepository
from tests.support.audit_events import recorded
from tests.support.browser import Browser, parse_forms
from tests.support.oauth import Pkce, authorization_url, register
from tests.support.server import RunningServer, free_port, running_server

CAPTURED = "captured.example"
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # An OIDC provider on a loopback port where nothing listens: the IdP is down for the whole module.
    down = f"http://127.0.0.1:{free_port()}"
    sso = {"providers": {"corp": {"kind": "oidc", "issuer": down, "client_id": "chamberlain", "domains": [CAPTURED]}}}
    data_dir: Path = tmp_path_factory.mktemp("chamberlain-sso-pages")
    with running_server(data_dir, sso=sso) as running:
        yield running


@pytest.fixture
async def http(gateway: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30, follow_redirects=False) as client:
        yield client


async def login_page(gateway: RunningServer, http: httpx.AsyncClient, browser: Browser) -> httpx.Response:
    client = await register(http)
    page = await browser.get(authorization_url(client["client_id"], gateway.resource(), Pkce.new()))
    assert page.status_code == 200
    return page


async def test_the_login_page_offers_single_sign_on_and_allows_the_idp_as_a_form_target(
    gateway: RunningServer, http: httpx.AsyncClient
) -> None:
    async with Browser(gateway.base_url) as browser:
        page = await login_page(gateway, http, browser)
    assert [form.action for form in parse_forms(page.text)] == ["/login/sso", "/login"]
    provider = gateway.state.default_tenant.config.sso.providers["corp"]
    assert isinstance(provider, OidcProviderConfig)
    directives = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert provider.issuer in directives["form-action"].split()


async def test_a_local_password_on_a_captured_domain_is_refused_even_when_right(
    gateway: RunningServer, http: httpx.AsyncClient
) -> None:
    async with gateway.engine() as database:
        await UserRepository(database, gateway.settings.tenant).add(f"bob@{CAPTURED}", hash_password(PASSWORD), ())
    async with Browser(gateway.base_url) as browser:
        page = await login_page(gateway, http, browser)
        refused = await browser.submit(page, {"username": f"Bob@{CAPTURED}", "password": PASSWORD}, form_index=1)
        assert refused.status_code == 403
        assert f"Addresses at {CAPTURED} sign in with single sign-on" in refused.text
        assert browser.http.cookies.get("chamberlain_session") is None
    events = await recorded(gateway, refused.headers["x-request-id"], Action.SIGN_IN)
    assert [(event.outcome, event.public["reason"]) for event in events] == [("failure", "domain_captured")]
    assert events[0].public["details"]["provider"] == "corp"
    assert PASSWORD not in str(events[0].public)


async def test_an_idp_that_is_down_gives_a_clear_page_and_signed_in_sessions_keep_working(
    gateway: RunningServer, http: httpx.AsyncClient
) -> None:
    async with Browser(gateway.base_url) as browser:
        page = await login_page(gateway, http, browser)
        signed = await browser.submit(page, {"username": gateway.user, "password": gateway.user_password}, form_index=1)
        assert signed.status_code == 303  # a local account outside the captured domain signs in with its password

        page = await login_page(gateway, http, browser)  # a new authorization: the session carries it to consent
        assert 'name="decision"' in page.text

        async with Browser(gateway.base_url) as other:
            page = await login_page(gateway, http, other)
            down = await other.submit(page, {"email": f"carol@{CAPTURED}"}, form_index=0)
            assert down.status_code == 502
            assert "Identity provider unavailable" in down.text
            assert "Traceback" not in down.text
        events = await recorded(gateway, down.headers["x-request-id"], Action.SIGN_IN)
        assert [(event.outcome, event.public["details"]["method"]) for event in events] == [("failure", "oidc")]

        again = await login_page(gateway, http, browser)
        assert 'name="decision"' in again.text  # the signed-in session never needed the IdP


async def test_an_email_no_provider_captured_is_told_so(gateway: RunningServer, http: httpx.AsyncClient) -> None:
    async with Browser(gateway.base_url) as browser:
        page = await login_page(gateway, http, browser)
        answer = await browser.submit(page, {"email": "dave@elsewhere.example"}, form_index=0)
    assert answer.status_code == 404
    assert "No identity provider signs in addresses of that domain" in answer.text


async def test_a_forged_or_foreign_answer_is_refused(gateway: RunningServer, http: httpx.AsyncClient) -> None:
    async with Browser(gateway.base_url) as browser:
        no_flow = await browser.get("/sso/corp/callback?code=stolen&state=guess")
        assert no_flow.status_code == 400
        assert "not started in this browser" in no_flow.text
        browser.http.cookies.set("chamberlain_sso", "forged")
        forged = await browser.get("/sso/corp/callback?code=stolen&state=guess")
        assert forged.status_code == 400
        repeated = await browser.get("/sso/corp/callback?state=a&state=b")
        assert repeated.status_code == 400
        unknown = await browser.get("/sso/nobody/callback?code=x&state=y")
        assert unknown.status_code == 404
        saml_on_oidc = await browser.http.post("/sso/corp/acs", data={"SAMLResponse": "PD94", "RelayState": "x"})
        assert saml_on_oidc.status_code == 404
    events = await recorded(gateway, no_flow.headers["x-request-id"], Action.SIGN_IN)
    assert [event.public["reason"] for event in events] == ["state_mismatch"]


async def test_a_step_up_without_a_pending_sign_in_is_refused(gateway: RunningServer) -> None:
    async with Browser(gateway.base_url) as browser:
        answer = await browser.http.post("/login/step-up", data={"totp": "123456", "csrf_token": "x"})
    assert answer.status_code == 403
