"""Signing in through real identity providers started here on loopback, end to end through the gateway's pages:
a directory (Debian's slapd, nested groups), an OpenID Provider (the certified `oidc-provider`), a SAML IdP
(pysaml2). The person lands with the role their groups map to, and the official MCP SDK client gets a working token.
MFA is Chamberlain's own: a role that enforces it refuses a sign-in the IdP did not prove, or asks for the local
factor."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from mcp_types import TextContent
from sqlalchemy import select

from chamberlain.audit.events import Action
from chamberlain.crypto.master_key import load_master_key
from chamberlain.identity.totp import encrypt_seed, new_totp_seed
from chamberlain.store.group_mappings import GroupMappingRepository
from chamberlain.store.schema import federated_identities
from chamberlain.store.servers import SSO_BINDING
from chamberlain.store.users import UserRepository
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.settings import CredentialKind
from tests.support.audit_events import recorded
from tests.support.browser import Browser, SignIn, parse_forms
from tests.support.gateway import vault_of
from tests.support.mcp_sdk import HeadlessAuthorizer, InMemoryTokenStorage, jwt_claims, sdk_client
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, refresh, register
from tests.support.oidc_idp import DEFAULT_ACCOUNTS, MFA_ACR, OidcIdp, running_oidc_idp, sign_in_through
from tests.support.saml_idp import REFEDS_MFA, SamlIdp, form_fields, running_saml_idp
from tests.support.server import RunningServer, free_port, running_server
from tests.support.slapd import PEOPLE, Slapd, group_dn, running_slapd

pytestmark = pytest.mark.interop

DIRECTORY_DOMAIN = "example.org"  # slapd's people sign in as uid@example.org
ROLES = {
    "enterprise_roles": {
        "admin": {"mcp_servers": "*", "data_classification_access": "*", "administrative_functions": True},
        "developer": {"mcp_servers": ["demo"], "data_classification_access": ["public", "internal"], "mfa": "off"},
        "auditor": {"mcp_servers": [], "mfa": "enforced"},
    }
}


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as running:
        yield running


ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {**DEFAULT_ACCOUNTS["alice"], "groups": ["engineering"]},  # proves MFA (amr pwd+otp)
    "bob": {"email": "bob@example.com", "groups": ["auditors"], "amr": ["pwd"]},  # no MFA, no local factor
    "carol": {"email": "carol@example.com", "groups": ["auditors"], "amr": ["pwd"]},  # no MFA; a local TOTP
    "dave": {"email": "dave@example.com", "groups": ["platform-team"], "amr": ["pwd", "otp"]},
}
OIDC_DOMAIN = "example.com"
SAML_DOMAIN = "saml.example"
SAML_USERS: dict[str, dict[str, Any]] = {
    "erin": {
        "email": "erin@saml.example",
        "displayName": "Erin",
        "groups": ["engineering"],
        "authn_context": REFEDS_MFA,
    },
}


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def idp(port: int) -> Iterator[OidcIdp]:
    with running_oidc_idp(redirect_uris=[f"http://127.0.0.1:{port}/sso/corp/callback"], accounts=ACCOUNTS) as running:
        yield running


@pytest.fixture(scope="module")
def saml_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SamlIdp]:
    with running_saml_idp(tmp_path_factory.mktemp("saml-idp"), users=SAML_USERS) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, port: int, directory: Slapd, idp: OidcIdp, saml_idp: SamlIdp
) -> Iterator[RunningServer]:
    providers: dict[str, Any] = {
        "corp-ldap": {**directory.provider_config(), "domains": [DIRECTORY_DOMAIN]},
        "corp": {**idp.provider_config(client_secret="sso/corp", mfa_values=[MFA_ACR]), "domains": [OIDC_DOMAIN]},
        "corp-saml": saml_idp.provider_config(domains=[SAML_DOMAIN]),
    }
    data_dir: Path = tmp_path_factory.mktemp("chamberlain-sso")
    with running_server(data_dir, port=port, roles=ROLES, sso={"providers": providers}) as running:
        asyncio.run(_prepare(running, directory, idp))
        saml_idp.trust(httpx.get(f"{running.base_url}/sso/corp-saml/metadata", timeout=30).text)
        yield running


async def _prepare(gateway: RunningServer, directory: Slapd, idp: OidcIdp) -> None:
    tenant = gateway.settings.tenant
    async with vault_of(gateway) as vault:
        for name, value in (("ldap", directory.bind_password), ("corp", idp.client_secret)):
            await vault.store(
                SecretRef(tenant, "sso", name), value.encode(), kind=CredentialKind.PASSWORD, bindings=(SSO_BINDING,)
            )
    async with gateway.engine() as database:
        mappings = GroupMappingRepository(database, tenant)
        # slapd's alice is in `platform`, which is in `engineering`: only the nested membership maps to a role.
        await mappings.set_roles(group_dn("engineering"), ("developer",))
        await mappings.set_roles(group_dn("auditors"), ("auditor",))
        # The OpenID Provider's groups claim.
        await mappings.set_roles("engineering", ("developer",))
        await mappings.set_roles("auditors", ("auditor",))
        await mappings.set_roles("platform-team", ("developer",))


def single_sign_on(idp: OidcIdp, username: str) -> SignIn:
    """Home-realm discovery with the account's email, then the IdP's own pages, then our callback."""

    async def sign_in(browser: Browser, page: httpx.Response) -> httpx.Response:
        redirect = await browser.submit(page, {"email": ACCOUNTS[username]["email"]}, form_index=0)
        assert redirect.status_code == 302, redirect.text[:300]
        assert redirect.headers["location"].startswith(idp.issuer)
        return await browser.get(await sign_in_through(idp, redirect.headers["location"], username))

    return sign_in


def password_sign_in(username: str, password: str) -> SignIn:
    async def sign_in(browser: Browser, page: httpx.Response) -> httpx.Response:
        return await submit_password(browser, page, username, password)

    return sign_in


async def submit_password(browser: Browser, page: httpx.Response, username: str, password: str) -> httpx.Response:
    """The sign-in page's password form: its last (single sign-on's comes first)."""
    forms = parse_forms(page.text)
    assert forms[-1].action == "/login"
    return await browser.submit(page, {"username": username, "password": password}, form_index=len(forms) - 1)


async def test_a_directory_user_signs_in_with_a_nested_group_role_and_the_sdk_calls_a_tool(
    gateway: RunningServer, directory: Slapd
) -> None:
    username = f"alice@{DIRECTORY_DOMAIN}"
    storage = InMemoryTokenStorage()
    authorizer = HeadlessAuthorizer(gateway, sign_in=password_sign_in(username, PEOPLE["alice"]))
    async with sdk_client(gateway, storage, authorizer, mode="2026-07-28") as connection:
        result = await connection.client.call_tool("echo", {"text": "from the directory"})
        assert not result.is_error, result
        assert any(isinstance(block, TextContent) and "from the directory" in block.text for block in result.content)
    assert storage.tokens is not None
    claims = jwt_claims(storage.tokens.access_token)
    async with gateway.engine() as database:
        user = await UserRepository(database, gateway.settings.tenant).get_by_username(username)
        assert user is not None
        assert user.roles == ("developer",)
        assert user.password_hash is None
        assert claims["sub"] == user.id
        async with database.connect() as connection:
            links = (await connection.execute(select(federated_identities.c.provider))).scalars().all()
        assert "corp-ldap" in links


async def test_a_wrong_directory_password_is_refused_like_a_local_one(gateway: RunningServer) -> None:
    async with Browser(gateway.base_url) as browser:
        page = await browser.get("/login")
        refused = await submit_password(browser, page, f"alice@{DIRECTORY_DOMAIN}", "not hers")
    assert refused.status_code == 401
    assert "Incorrect user name, password or code." in refused.text
    events = await recorded(gateway, refused.headers["x-request-id"], Action.SIGN_IN)
    assert [(event.public["reason"], event.public["details"]["method"]) for event in events] == [
        ("ldap_invalid_credentials", "ldap")
    ]


async def test_a_role_enforcing_mfa_refuses_a_directory_sign_in_without_a_second_factor(
    gateway: RunningServer, directory: Slapd
) -> None:
    async with Browser(gateway.base_url) as browser:
        page = await browser.get("/login")
        refused = await submit_password(browser, page, f"bob@{DIRECTORY_DOMAIN}", PEOPLE["bob"])
        assert refused.status_code == 403
        assert "requires multi-factor sign-in" in refused.text
        assert browser.http.cookies.get("chamberlain_session") is None
    events = await recorded(gateway, refused.headers["x-request-id"], Action.SIGN_IN)
    assert [event.public["reason"] for event in events] == ["mfa_required"]


async def test_a_directory_that_is_down_still_admits_whom_it_vouched_for_recently(
    gateway: RunningServer, directory: Slapd
) -> None:
    username, password = f"alice@{DIRECTORY_DOMAIN}", PEOPLE["alice"]
    async with Browser(gateway.base_url) as browser:
        page = await browser.get("/login")
        assert (await submit_password(browser, page, username, password)).status_code == 303
    directory.stop()
    try:
        async with Browser(gateway.base_url) as browser:
            page = await browser.get("/login")
            cached = await submit_password(browser, page, username, password)
            assert cached.status_code == 303
            page = await browser.get("/login")
            wrong = await submit_password(browser, page, username, "guess")
            assert wrong.status_code in (401, 502)
            page = await browser.get("/login")
            unknown = await submit_password(browser, page, f"carol@{DIRECTORY_DOMAIN}", "c4r")
            assert unknown.status_code == 502
            assert "Traceback" not in unknown.text
    finally:
        directory.start()
    events = await recorded(gateway, cached.headers["x-request-id"], Action.SIGN_IN)
    assert [event.public["details"]["method"] for event in events] == ["ldap-cache"]


# -- OpenID Connect --------------------------------------------------------------------------------------------------


async def test_an_oidc_user_lands_with_the_mapped_role_and_the_sdk_calls_a_tool(
    gateway: RunningServer, idp: OidcIdp
) -> None:
    storage = InMemoryTokenStorage()
    authorizer = HeadlessAuthorizer(gateway, sign_in=single_sign_on(idp, "alice"))
    async with sdk_client(gateway, storage, authorizer, mode="legacy") as connection:
        result = await connection.client.call_tool("add", {"a": 20, "b": 22})
        assert not result.is_error, result
    assert storage.tokens is not None
    async with gateway.engine() as database:
        user = await UserRepository(database, gateway.settings.tenant).get_by_username("alice@example.com")
    assert user is not None
    assert user.roles == ("developer",)
    assert user.password_hash is None
    assert jwt_claims(storage.tokens.access_token)["sub"] == user.id


async def test_a_single_sign_on_begun_at_the_console_returns_there(gateway: RunningServer, idp: OidcIdp) -> None:
    # The console sends a signed-out admin to /login?return_to=<console page>; the IdP round trip keeps it.
    async with Browser(gateway.base_url) as browser:
        page = await browser.get("/login?return_to=/console/audit")
        landed = await single_sign_on(idp, "alice")(browser, page)
        assert landed.status_code == 303, landed.text[:300]
        assert landed.headers["location"] == "/console/audit"


async def test_an_mfa_enforcing_role_refuses_an_oidc_sign_in_the_idp_did_not_prove(
    gateway: RunningServer, idp: OidcIdp
) -> None:
    async with Browser(gateway.base_url) as browser:
        page = await browser.get("/login")
        refused = await single_sign_on(idp, "bob")(browser, page)
        assert refused.status_code == 403
        assert "requires multi-factor sign-in" in refused.text
        assert browser.http.cookies.get("chamberlain_session") is None
    events = await recorded(gateway, refused.headers["x-request-id"], Action.SIGN_IN)
    assert [(event.public["reason"], event.public["details"]["provider"]) for event in events] == [
        ("mfa_required", "corp")
    ]


async def test_a_local_factor_steps_up_an_oidc_sign_in_without_mfa(gateway: RunningServer, idp: OidcIdp) -> None:
    async with Browser(gateway.base_url) as browser:  # the first sign-in creates carol's account, then is refused
        assert (await single_sign_on(idp, "carol")(browser, await browser.get("/login"))).status_code == 403
    seed = new_totp_seed()
    async with gateway.engine() as database:
        users = UserRepository(database, gateway.settings.tenant)
        carol = await users.get_by_username("carol@example.com")
        assert carol is not None
        assert carol.roles == ("auditor",)
        master_key = load_master_key(gateway.settings.data_dir, environ={})
        await users.set_totp_secret(carol.id, encrypt_seed(seed, carol.id, master_key))
    async with Browser(gateway.base_url) as browser:
        step_up = await single_sign_on(idp, "carol")(browser, await browser.get("/login"))
        assert step_up.status_code == 200
        assert [form.action for form in parse_forms(step_up.text)] == ["/login/step-up"]
        wrong = await browser.submit(step_up, {"totp": "000000" if pyotp.TOTP(seed).now() != "000000" else "111111"})
        assert wrong.status_code == 401
        assert browser.http.cookies.get("chamberlain_session") is None
        done = await browser.submit(wrong, {"totp": pyotp.TOTP(seed).now()})
        assert done.status_code == 303, done.text[:300]
        assert browser.http.cookies.get("chamberlain_session")
    events = await recorded(gateway, done.headers["x-request-id"], Action.MFA)
    assert [(event.outcome, event.public["details"]["provider"]) for event in events] == [("success", "corp")]


async def test_an_answer_is_taken_once(gateway: RunningServer, idp: OidcIdp) -> None:
    async with Browser(gateway.base_url) as browser:
        page = await browser.get("/login")
        redirect = await browser.submit(page, {"email": "alice@example.com"}, form_index=0)
        callback = await sign_in_through(idp, redirect.headers["location"], "alice")
        flow_cookie = browser.http.cookies.get("chamberlain_sso")
        assert (await browser.get(callback)).status_code == 303
        browser.http.cookies.set("chamberlain_sso", flow_cookie)  # the same answer again, with the same flow
        again = await browser.get(callback)
    assert again.status_code == 403
    events = await recorded(gateway, again.headers["x-request-id"], Action.SIGN_IN)
    assert [event.public["reason"] for event in events] == ["state_replay"]


async def test_a_role_change_takes_effect_at_the_next_sign_in_and_ends_grants_of_the_old_roles(
    gateway: RunningServer, idp: OidcIdp
) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
        client = await register(http)
        pkce = Pkce.new()
        url = authorization_url(client["client_id"], gateway.resource(), pkce)
        async with Browser(gateway.base_url) as browser:
            code = redirect_params(
                await browser.authorize(url, username="", password="", sign_in=single_sign_on(idp, "dave"))
            )["code"]
        tokens = (await exchange_code(http, client["client_id"], code, pkce.verifier)).json()
        async with gateway.engine() as database:
            await GroupMappingRepository(database, gateway.settings.tenant).set_roles("platform-team", ("admin",))
        async with Browser(gateway.base_url) as browser:
            assert (await single_sign_on(idp, "dave")(browser, await browser.get("/login"))).status_code == 303
        async with gateway.engine() as database:
            dave = await UserRepository(database, gateway.settings.tenant).get_by_username("dave@example.com")
        assert dave is not None
        assert dave.roles == ("admin",)
        stale = await refresh(http, client["client_id"], tokens["refresh_token"])
        assert stale.status_code == 400
        assert stale.json()["error"] == "invalid_grant"


# -- SAML 2.0 --------------------------------------------------------------------------------------------------------


def saml_sign_in(idp: SamlIdp, user: str) -> SignIn:
    """Home-realm discovery, the IdP's HTTP-Redirect endpoint as a browser meets it, then its auto-submitting form
    posted to our ACS (HTTP-POST binding)."""

    async def sign_in(browser: Browser, page: httpx.Response) -> httpx.Response:
        redirect = await browser.submit(page, {"email": SAML_USERS[user]["email"]}, form_index=0)
        assert redirect.status_code == 302, redirect.text[:300]
        assert redirect.headers["location"].startswith(idp.sso_url)
        async with httpx.AsyncClient(timeout=30) as stranger:  # the IdP's own origin: no cookies of ours
            form = await stranger.get(redirect.headers["location"] + f"&user={user}")
        saml_response, relay_state = form_fields(form.text)
        return await browser.http.post(
            "/sso/corp-saml/acs", data={"SAMLResponse": saml_response, "RelayState": relay_state}
        )

    return sign_in


async def test_a_saml_user_lands_with_the_mapped_role_and_the_sdk_calls_a_tool(
    gateway: RunningServer, saml_idp: SamlIdp
) -> None:
    storage = InMemoryTokenStorage()
    authorizer = HeadlessAuthorizer(gateway, sign_in=saml_sign_in(saml_idp, "erin"))
    async with sdk_client(gateway, storage, authorizer, mode="2026-07-28") as connection:
        result = await connection.client.call_tool("add", {"a": 1, "b": 2})
        assert not result.is_error, result
    async with gateway.engine() as database:
        erin = await UserRepository(database, gateway.settings.tenant).get_by_username("erin@saml.example")
    assert erin is not None
    assert erin.roles == ("developer",)
    assert storage.tokens is not None
    assert jwt_claims(storage.tokens.access_token)["sub"] == erin.id


async def test_the_sp_metadata_names_our_acs_and_a_replayed_saml_response_is_refused(
    gateway: RunningServer, saml_idp: SamlIdp
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        metadata = await http.get(f"{gateway.base_url}/sso/corp-saml/metadata")
    assert metadata.headers["content-type"].startswith("application/samlmetadata+xml")
    assert f'Location="{gateway.base_url}/sso/corp-saml/acs"' in metadata.text
    async with Browser(gateway.base_url) as browser:
        page = await browser.get("/login")
        redirect = await browser.submit(page, {"email": "erin@saml.example"}, form_index=0)
        flow_cookie = browser.http.cookies.get("chamberlain_sso")
        async with httpx.AsyncClient(timeout=30) as stranger:
            form = await stranger.get(redirect.headers["location"] + "&user=erin")
        answer = dict(zip(("SAMLResponse", "RelayState"), form_fields(form.text), strict=True))
        assert (await browser.http.post("/sso/corp-saml/acs", data=answer)).status_code == 303
        without_flow = await browser.http.post("/sso/corp-saml/acs", data=answer)
        browser.http.cookies.set("chamberlain_sso", flow_cookie)  # the same answer, with the flow it answered
        replayed = await browser.http.post("/sso/corp-saml/acs", data=answer)
    assert without_flow.status_code == 400  # the sign-in it answered is over: nothing in this browser awaits it
    assert replayed.status_code == 403
    events = await recorded(gateway, replayed.headers["x-request-id"], Action.SIGN_IN)
    assert [(event.public["reason"], event.public["details"]["method"]) for event in events] == [
        ("state_replay", "saml")
    ]
