"""Issue 4, enterprise-managed authorization (MCP ext-auth): an MCP client redeems an ID-JAG its enterprise IdP
issued (draft-ietf-oauth-identity-assertion-authz-grant) at the token endpoint through the RFC 7523 jwt-bearer
grant, and gets a token for the user without a browser. Every rule of the draft's §4.4.1 gets a refusal.

The IdP is tests/support/idjag_issuer.py on loopback (discovery and JWKS over HTTP); each test makes its own tenant
whose `corp` provider is trusted for ID-JAGs and whose `legacy` provider (another IdP) is not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from chamberlain.audit.events import Action
from chamberlain.audit.reader import read_events
from chamberlain.oauth.grants.jwt_bearer import ID_JAG_PROFILE, JWT_BEARER
from chamberlain.store.federated_identities import FederatedIdentityRepository
from chamberlain.store.users import UserRepository
from tests.support.audit_events import recorded
from tests.support.idjag_issuer import IdJagIssuer, idjag_issuer
from tests.support.mcp_calls import call_mcp
from tests.support.oauth import register
from tests.support.server import RunningServer, free_port, random_name
from tests.support.tenants import add_tenant

SUBJECT = "00u1dana"  # the IdP's `sub` for the tenant's user "dana", a developer


@pytest.fixture(scope="module")
def idp() -> Iterator[IdJagIssuer]:
    with idjag_issuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def legacy_idp() -> Iterator[IdJagIssuer]:
    with idjag_issuer() as issuer:
        yield issuer


@dataclass
class Setup:
    server: RunningServer
    tenant: str
    issuer: str  # the tenant's issuer: the ID-JAG's aud
    http: httpx.AsyncClient  # at the tenant's base URL
    client_id: str
    client_secret: str
    user_id: str

    @property
    def resource(self) -> str:
        return f"{self.issuer}/mcp/demo"

    async def redeem(self, assertion: str, **extra: str) -> httpx.Response:
        form = {"grant_type": JWT_BEARER, "assertion": assertion, **extra}
        return await self.http.post("/token", data=form, auth=(self.client_id, self.client_secret))


def sso_config(idp: IdJagIssuer, legacy_idp: IdJagIssuer, **sso: Any) -> dict[str, Any]:
    providers = {
        "corp": {"kind": "oidc", "issuer": idp.issuer, "client_id": "chamberlain", "id_jag": True},
        "legacy": {"kind": "oidc", "issuer": legacy_idp.issuer, "client_id": "chamberlain"},
        **sso.pop("providers", {}),
    }
    return {"sso": {"providers": providers, **sso}}


@contextlib.asynccontextmanager
async def make_setup(
    server: RunningServer, idp: IdJagIssuer, legacy_idp: IdJagIssuer, **sso: Any
) -> AsyncIterator[Setup]:
    """A tenant with `sso` settings, its user dana linked to the IdP subject SUBJECT, and a confidential client
    registered for the jwt-bearer grant."""
    tenant = random_name("idjag")
    await add_tenant(server, tenant, users={"dana": ("developer",)}, config=sso_config(idp, legacy_idp, **sso))
    async with server.engine() as database:
        dana = await UserRepository(database, tenant).get_by_username("dana")
        assert dana is not None
        await FederatedIdentityRepository(database, tenant).link("corp", SUBJECT, dana.id)
    issuer = f"{server.base_url}/t/{tenant}"
    async with httpx.AsyncClient(base_url=issuer, timeout=30, follow_redirects=False) as http:
        client = await register(
            http, token_endpoint_auth_method="client_secret_basic", grant_types=[JWT_BEARER], redirect_uris=[]
        )
        yield Setup(server, tenant, issuer, http, client["client_id"], client["client_secret"], dana.id)


@pytest.fixture
async def setup(server: RunningServer, idp: IdJagIssuer, legacy_idp: IdJagIssuer) -> AsyncIterator[Setup]:
    async with make_setup(server, idp, legacy_idp) as made:
        yield made


def mint(setup: Setup, idp: IdJagIssuer, **overrides: Any) -> str:
    values: dict[str, Any] = {
        "audience": setup.issuer,
        "client_id": setup.client_id,
        "subject": SUBJECT,
        "resource": setup.resource,
        **overrides,
    }
    return idp.mint(**values)


def assert_refused(response: httpx.Response, error: str, assertion: str, status_code: int = 400) -> str:
    """An RFC 6749 §5.2 error with no token, not cacheable, that never quotes the assertion; its description."""
    assert response.status_code == status_code, response.text
    body = dict(response.json())
    assert body["error"] == error, body
    assert not {"access_token", "refresh_token", "id_token"} & body.keys()
    assert response.headers["cache-control"] == "no-store"
    for segment in filter(None, assertion.split(".")):
        assert segment not in response.text
    return str(body.get("error_description", ""))


def claims_of(access_token: str, server: RunningServer) -> dict[str, Any]:
    """The access token's claims, verified with the gateway's published keys."""
    keys = KeySet.import_key_set(server.state.keyring.jwks())
    return dict(jwt.decode(access_token, keys).claims)


# -- the grant works -------------------------------------------------------------------------------------------------


async def test_a_confidential_client_redeems_an_id_jag_for_a_token_that_works(setup: Setup, idp: IdJagIssuer) -> None:
    response = await setup.redeem(mint(setup, idp))
    assert response.status_code == 200, response.text
    body = response.json()
    # Draft §4.4.3: no refresh token; the client asks the IdP for a new ID-JAG instead.
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    assert body["scope"] == "mcp:tools"
    assert response.headers["cache-control"] == "no-store"
    claims = claims_of(body["access_token"], setup.server)
    # The token acts for the account the IdP subject is linked to, with that account's roles, for the ID-JAG's resource.
    assert claims["sub"] == setup.user_id
    assert claims["roles"] == ["developer"]
    assert claims["aud"] == setup.resource
    assert claims["client_id"] == setup.client_id
    assert (await call_mcp(setup.http, body["access_token"])).status_code == 200
    [event] = await recorded(setup.server, response.headers["x-request-id"], Action.TOKEN_ISSUED, setup.tenant)
    assert event.outcome == "success"
    assert event.public["details"]["grant_type"] == JWT_BEARER


async def test_the_token_carries_the_users_current_roles(setup: Setup, idp: IdJagIssuer) -> None:
    async with setup.server.engine() as database:
        await UserRepository(database, setup.tenant).update_account(setup.user_id, roles=())
    response = await setup.redeem(mint(setup, idp))
    assert response.status_code == 200, response.text
    assert "roles" not in claims_of(response.json()["access_token"], setup.server)
    # No role, no MCP server: the gateway's policy refuses the verified token.
    refused = await call_mcp(setup.http, response.json()["access_token"])
    assert refused.status_code == 403
    assert "roles" in refused.json()["error_description"]


async def test_scopes_are_narrowed_to_those_known_here(setup: Setup, idp: IdJagIssuer) -> None:
    response = await setup.redeem(mint(setup, idp, scope="mcp:tools chat.history"))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "mcp:tools"
    none_known = await setup.redeem(assertion := mint(setup, idp, scope="chat.history"))
    assert_refused(none_known, "invalid_scope", assertion)


async def test_the_resource_parameter_picks_one_of_several(setup: Setup, idp: IdJagIssuer) -> None:
    several = [setup.resource, "https://mcp.example.com/"]
    unchosen = await setup.redeem(assertion := mint(setup, idp, resource=several))
    assert_refused(unchosen, "invalid_target", assertion)
    chosen = await setup.redeem(mint(setup, idp, resource=several), resource=setup.resource)
    assert chosen.status_code == 200, chosen.text
    assert claims_of(chosen.json()["access_token"], setup.server)["aud"] == setup.resource


async def test_an_unknown_subject_is_provisioned_just_in_time(setup: Setup, idp: IdJagIssuer) -> None:
    response = await setup.redeem(mint(setup, idp, subject="00u1erin", email="erin@corp.example"))
    assert response.status_code == 200, response.text
    async with setup.server.engine() as database:
        erin = await UserRepository(database, setup.tenant).get_by_username("erin@corp.example")
        linked = await FederatedIdentityRepository(database, setup.tenant).user_of("corp", "00u1erin")
    assert erin is not None
    assert linked == erin.id
    assert claims_of(response.json()["access_token"], setup.server)["sub"] == erin.id


async def test_metadata_advertises_the_grant(setup: Setup) -> None:
    # RFC 8414 §3.1: the well-known segment goes before the tenant's path.
    url = f"{setup.server.base_url}/.well-known/oauth-authorization-server/t/{setup.tenant}"
    metadata = (await setup.http.get(url)).json()
    assert JWT_BEARER in metadata["grant_types_supported"]
    assert metadata["authorization_grant_profiles_supported"] == [ID_JAG_PROFILE]
    # Draft §8.4: which IdPs are trusted is not disclosed.
    assert "127.0.0.1" not in json.dumps(metadata["authorization_grant_profiles_supported"])


# -- refusals --------------------------------------------------------------------------------------------------------


# Each case: the mint overrides (given the tenant's setup and the time now), and what the refusal says.
REFUSED_ID_JAGS: dict[str, tuple[Callable[[Setup, int], dict[str, Any]], str]] = {
    "typ of a plain JWT": (lambda setup, now: {"header": {"typ": "JWT"}}, "typ"),
    "typ of an access token": (lambda setup, now: {"header": {"typ": "at+jwt"}}, "typ"),
    "no typ": (lambda setup, now: {"header": {"typ": None}}, "typ"),
    "aud of another server": (lambda setup, now: {"audience": "https://as.example.com"}, "aud"),
    "aud array with a second audience": (
        lambda setup, now: {"audience": [setup.issuer, "https://as.example.com"]},
        "aud",
    ),
    "client_id of another client": (lambda setup, now: {"client_id": "some-other-client"}, "another client"),
    "no client_id": (lambda setup, now: {"client_id": None}, "another client"),
    "expired": (lambda setup, now: {"iat": now - 600, "exp": now - 60}, "expired"),
    "issued in the future": (lambda setup, now: {"iat": now + 3600, "exp": now + 3660}, "not valid yet"),
    "not valid before an hour from now": (lambda setup, now: {"nbf": now + 3600}, "not valid yet"),
    "living too long": (lambda setup, now: {"exp": now + 7200}, "lives longer"),
    "no exp": (lambda setup, now: {"exp": None}, "exp"),
    "no jti": (lambda setup, now: {"jti": None}, "jti"),
    "no sub": (lambda setup, now: {"subject": None}, "sub"),
    "no resource": (lambda setup, now: {"resource": None}, "resource"),
    "bound to a key (cnf)": (lambda setup, now: {"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}, "cnf"),
}


@pytest.mark.parametrize("case", list(REFUSED_ID_JAGS))
async def test_an_invalid_id_jag_is_refused(setup: Setup, idp: IdJagIssuer, case: str) -> None:
    overrides, says = REFUSED_ID_JAGS[case]
    assertion = mint(setup, idp, **overrides(setup, int(time.time())))
    assert says in assert_refused(await setup.redeem(assertion), "invalid_grant", assertion)
    # Control: the same client, user and IdP, with a well-formed ID-JAG.
    assert (await setup.redeem(mint(setup, idp))).status_code == 200


async def test_a_replayed_id_jag_is_refused(setup: Setup, idp: IdJagIssuer) -> None:
    assertion = mint(setup, idp)
    assert (await setup.redeem(assertion)).status_code == 200
    assert "already redeemed" in assert_refused(await setup.redeem(assertion), "invalid_grant", assertion)
    # The jti decides, not the bytes: a second ID-JAG reusing it is a replay too.
    jti = jwt.decode(assertion, idp.key).claims["jti"]
    reused = mint(setup, idp, jti=jti, scope=None)
    assert_refused(await setup.redeem(reused), "invalid_grant", reused)


async def test_an_id_jag_signed_by_an_unknown_key_is_refused(setup: Setup, idp: IdJagIssuer) -> None:
    # The IdP's kid with another key, and a kid the IdP never published (its JWKS is fetched again, in vain).
    for kid in (idp.key.kid, "idp-2"):
        forged = mint(setup, idp, key=idp.rogue_key, header={"kid": kid})
        assert_refused(await setup.redeem(forged), "invalid_grant", forged)
    assert (await setup.redeem(mint(setup, idp))).status_code == 200


async def test_an_unsigned_id_jag_is_refused(setup: Setup, idp: IdJagIssuer) -> None:
    claims = jwt.decode(mint(setup, idp), idp.key).claims
    unsigned = (
        ".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
            for part in ({"alg": "none", "typ": "oauth-id-jag+jwt"}, claims)
        )
        + "."
    )
    assert_refused(await setup.redeem(unsigned), "invalid_grant", unsigned)


async def test_an_id_jag_from_an_issuer_not_trusted_for_them_is_refused(
    setup: Setup, idp: IdJagIssuer, legacy_idp: IdJagIssuer
) -> None:
    # `legacy` is a provider of this tenant for sign-in, but not marked `id_jag`.
    from_legacy = mint(setup, legacy_idp)
    assert "not an identity provider trusted" in assert_refused(
        await setup.redeem(from_legacy), "invalid_grant", from_legacy
    )
    # An issuer that is no provider at all.
    with idjag_issuer() as stranger:
        from_stranger = mint(setup, stranger)
        assert_refused(await setup.redeem(from_stranger), "invalid_grant", from_stranger)


async def test_an_id_jag_for_a_resource_not_ours_is_refused(
    server: RunningServer, setup: Setup, idp: IdJagIssuer
) -> None:
    for resource in ("https://mcp.example.com/", f"{setup.issuer}/mcp/nonexistent", f"{server.base_url}/mcp/demo"):
        assertion = mint(setup, idp, resource=resource)
        assert_refused(await setup.redeem(assertion), "invalid_target", assertion)


async def test_an_id_jag_for_another_tenant_is_refused(
    server: RunningServer, setup: Setup, idp: IdJagIssuer, legacy_idp: IdJagIssuer
) -> None:
    async with make_setup(server, idp, legacy_idp) as other:
        # Minted for the other tenant (its aud and resource) but presented here by this tenant's client.
        for_other = idp.mint(audience=other.issuer, client_id=setup.client_id, subject=SUBJECT, resource=other.resource)
        assert_refused(await setup.redeem(for_other), "invalid_grant", for_other)


async def test_an_unreachable_idp_is_a_clear_error_not_a_500(
    server: RunningServer, idp: IdJagIssuer, legacy_idp: IdJagIssuer
) -> None:
    down = IdJagIssuer(port=free_port())  # never started: nothing listens at its issuer
    provider = {"kind": "oidc", "issuer": down.issuer, "client_id": "chamberlain", "id_jag": True}
    async with make_setup(server, idp, legacy_idp, providers={"down": provider}) as setup:
        assertion = mint(setup, down)
        response = await setup.redeem(assertion)
        assert "try again later" in assert_refused(response, "temporarily_unavailable", assertion, status_code=503)


async def test_a_disabled_user_is_refused(setup: Setup, idp: IdJagIssuer) -> None:
    async with setup.server.engine() as database:
        await UserRepository(database, setup.tenant).update_account(setup.user_id, disabled=True)
    assertion = mint(setup, idp)
    assert "disabled" in assert_refused(await setup.redeem(assertion), "invalid_grant", assertion)


async def test_an_unknown_subject_is_refused_without_just_in_time_provisioning(
    server: RunningServer, idp: IdJagIssuer, legacy_idp: IdJagIssuer
) -> None:
    async with make_setup(server, idp, legacy_idp, jit=False) as setup:
        assertion = mint(setup, idp, subject="00u1nobody", email="nobody@corp.example")
        assert_refused(await setup.redeem(assertion), "invalid_grant", assertion)
        async with server.engine() as database:
            assert await UserRepository(database, setup.tenant).get_by_username("nobody@corp.example") is None


async def test_mfa_enforced_needs_the_idp_to_prove_it(
    server: RunningServer, idp: IdJagIssuer, legacy_idp: IdJagIssuer
) -> None:
    async with make_setup(server, idp, legacy_idp, mfa="enforced") as setup:
        without = mint(setup, idp, amr=["pwd"])
        assert "second factor" in assert_refused(await setup.redeem(without), "invalid_grant", without)
        proven = await setup.redeem(mint(setup, idp, amr=["pwd", "mfa"]))
        assert proven.status_code == 200, proven.text


async def test_the_grant_needs_a_confidential_client_registered_for_it(setup: Setup, idp: IdJagIssuer) -> None:
    # RFC 7591 §2 + draft §8.1: a public client cannot register for it.
    public = await setup.http.post(
        "/register",
        json={
            "client_name": "x",
            "token_endpoint_auth_method": "none",
            "grant_types": [JWT_BEARER],
            "redirect_uris": [],
        },
    )
    assert public.status_code == 400
    assert public.json()["error"] == "invalid_client_metadata"
    # A confidential client registered only for client_credentials may not use it (RFC 6749 §5.2).
    other = await register(
        setup.http,
        token_endpoint_auth_method="client_secret_basic",
        grant_types=["client_credentials"],
        redirect_uris=[],
    )
    assertion = mint(setup, idp, client_id=other["client_id"])
    response = await setup.http.post(
        "/token",
        data={"grant_type": JWT_BEARER, "assertion": assertion},
        auth=(other["client_id"], other["client_secret"]),
    )
    assert_refused(response, "unauthorized_client", assertion)
    # Client authentication is required: a wrong secret is invalid_client.
    wrong = await setup.http.post(
        "/token", data={"grant_type": JWT_BEARER, "assertion": assertion}, auth=(setup.client_id, "wrong")
    )
    assert_refused(wrong, "invalid_client", assertion, status_code=401)


async def test_a_request_without_an_assertion_is_refused(setup: Setup) -> None:
    response = await setup.redeem("")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    garbage = await setup.redeem("not-a-jwt")
    assert garbage.status_code == 400
    assert garbage.json()["error"] == "invalid_grant"


async def test_refusals_are_audited(setup: Setup, idp: IdJagIssuer) -> None:
    assertion = mint(setup, idp, client_id="some-other-client")
    assert (await setup.redeem(assertion)).status_code == 400
    deadline = time.monotonic() + 10  # events are queued, not written before the answer
    while True:
        async with setup.server.engine() as database:
            events = await read_events(database, setup.tenant, limit=1000)
        refused = [e for e in events if e.action == Action.TOKEN_ISSUED and e.outcome == "denied"]
        if refused or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    [event] = refused
    assert event.public["details"]["grant_type"] == JWT_BEARER
    assert event.public["reason"] == "invalid_grant"
    assert event.public["actor"]["id"] == setup.client_id
