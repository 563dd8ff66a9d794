"""The OIDC relying party against a real OpenID Provider (oidc-provider, certified) and, for the answers a real OP never
gives, a stand-in whose token endpoint returns ID tokens the test crafts. Every refusal has its own reason."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from chamberlain.sso.identity import IdentityProviderUnavailable, SignInRefused
from chamberlain.sso.oidc.config import OidcProviderConfig
from chamberlain.sso.oidc.keys import IssuerKeys
from chamberlain.sso.oidc.relying_party import OidcRelyingParty
from tests.support.oidc_idp import (
    MFA_ACR,
    CraftedIdp,
    OidcIdp,
    running_crafted_idp,
    running_oidc_idp,
    sign_in_through,
)
from tests.support.server import free_port

pytestmark = pytest.mark.interop

REDIRECT_URI = "http://127.0.0.1:9/sso/corp/callback"  # never contacted: the IdP's redirect is where the test stops


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcIdp]:
    with running_oidc_idp(redirect_uris=[REDIRECT_URI]) as running:
        yield running


@pytest.fixture
def crafted() -> Iterator[CraftedIdp]:
    with running_crafted_idp() as running:
        yield running


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def keys(clock: Clock) -> AsyncIterator[IssuerKeys]:
    async with httpx.AsyncClient() as http:
        yield IssuerKeys(http, timeout=5, refresh_interval=30, clock=clock)


class Flow:
    """One browser's sign-in: what web/sso.py keeps between the redirect and the callback."""

    def __init__(self) -> None:
        self.state = secrets.token_urlsafe(16)
        self.nonce = secrets.token_urlsafe(16)
        self.verifier = secrets.token_urlsafe(48)

    async def start(self, party: OidcRelyingParty, login_hint: str | None = None) -> str:
        return await party.authorization_url(
            redirect_uri=REDIRECT_URI,
            state=self.state,
            nonce=self.nonce,
            code_verifier=self.verifier,
            login_hint=login_hint,
        )

    async def complete(self, party: OidcRelyingParty, params: dict[str, str], secret: str | None = None) -> Any:
        return await party.complete(
            redirect_uri=REDIRECT_URI,
            params=params,
            code_verifier=self.verifier,
            nonce=self.nonce,
            client_secret=secret,
        )


def _callback_params(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


# -- the real OpenID Provider ----------------------------------------------------------------------------------------


async def test_confidential_client_signs_in_with_groups_email_and_mfa(idp: OidcIdp, keys: IssuerKeys) -> None:
    party = OidcRelyingParty("corp", OidcProviderConfig(**idp.provider_config(client_secret="sso/corp")), keys)
    flow = Flow()
    url = await flow.start(party)
    request = parse_qs(urlsplit(url).query)
    assert request["code_challenge_method"] == ["S256"]
    assert request["nonce"] == [flow.nonce]
    params = _callback_params(await sign_in_through(idp, url, "alice"))
    assert params["state"] == flow.state
    assert params["iss"] == idp.issuer

    identity = await flow.complete(party, params, idp.client_secret)

    assert identity.provider == "corp"
    assert identity.subject == "alice"
    # oidc-provider puts email and groups in userinfo only: reaching them proves the userinfo request.
    assert identity.email == "alice@example.com"
    assert identity.display_name == "Alice Example"
    assert identity.groups == ("engineering", "admins")
    assert identity.mfa is True
    assert set(identity.authn_context) == {"pwd", "otp", MFA_ACR}


async def test_public_client_with_login_hint_and_no_mfa(idp: OidcIdp, keys: IssuerKeys) -> None:
    party = OidcRelyingParty("corp", OidcProviderConfig(**idp.provider_config(public=True)), keys)
    flow = Flow()
    url = await flow.start(party, login_hint="bob")
    assert parse_qs(urlsplit(url).query)["login_hint"] == ["bob"]

    identity = await flow.complete(party, _callback_params(await sign_in_through(idp, url, "nobody")))

    assert identity.subject == "bob"
    assert identity.groups == ("engineering",)
    assert identity.mfa is False
    assert identity.authn_context == ("pwd",)


async def test_claims_in_the_id_token_need_no_userinfo(keys: IssuerKeys) -> None:
    with running_oidc_idp(redirect_uris=[REDIRECT_URI], id_token_claims=True) as idp:
        config = OidcProviderConfig(**idp.provider_config(client_secret="sso/corp", userinfo=False))
        party = OidcRelyingParty("corp", config, keys)
        flow = Flow()
        params = _callback_params(await sign_in_through(idp, await flow.start(party), "alice"))
        identity = await flow.complete(party, params, idp.client_secret)
    assert identity.email == "alice@example.com"
    assert identity.groups == ("engineering", "admins")


async def test_a_code_for_another_verifier_is_refused(idp: OidcIdp, keys: IssuerKeys) -> None:
    party = OidcRelyingParty("corp", OidcProviderConfig(**idp.provider_config(public=True)), keys)
    flow = Flow()
    params = _callback_params(await sign_in_through(idp, await flow.start(party), "bob"))
    flow.verifier = secrets.token_urlsafe(48)  # an injected code: the attacker's browser had another verifier
    with pytest.raises(SignInRefused) as refused:
        await flow.complete(party, params)
    assert refused.value.reason == "token_exchange_refused"


async def test_an_idp_error_is_refused_with_its_code_only(idp: OidcIdp, keys: IssuerKeys) -> None:
    party = OidcRelyingParty("corp", OidcProviderConfig(**idp.provider_config(public=True)), keys)
    params = {"error": "access_denied", "error_description": "call +1 555 0100 now", "iss": idp.issuer, "state": "s"}
    with pytest.raises(SignInRefused) as refused:
        await Flow().complete(party, params)
    assert refused.value.reason == "idp_access_denied"
    assert "555" not in refused.value.message
    params["error"] = "<script>"
    with pytest.raises(SignInRefused) as refused:
        await Flow().complete(party, params)
    assert refused.value.reason == "idp_error"
    assert "<script>" not in refused.value.message


@pytest.mark.parametrize("iss", ["http://127.0.0.1:9", None])
async def test_mix_up_is_refused(idp: OidcIdp, keys: IssuerKeys, iss: str | None) -> None:
    """RFC 9207: oidc-provider advertises `iss` in responses, so another issuer's or none is a mix-up."""
    party = OidcRelyingParty("corp", OidcProviderConfig(**idp.provider_config(public=True)), keys)
    flow = Flow()
    params = _callback_params(await sign_in_through(idp, await flow.start(party), "bob"))
    if iss is None:
        del params["iss"]
    else:
        params["iss"] = iss
    with pytest.raises(SignInRefused) as refused:
        await flow.complete(party, params)
    assert refused.value.reason == "authorization_response_issuer"


async def test_idp_down_is_unavailable_not_an_error(keys: IssuerKeys) -> None:
    config = OidcProviderConfig(issuer=f"http://127.0.0.1:{free_port()}", client_id="c")
    with pytest.raises(IdentityProviderUnavailable) as down:
        await Flow().start(OidcRelyingParty("corp", config, keys))
    assert down.value.status_code == 502
    assert down.value.reason == "idp_discovery"


async def test_discovery_for_another_issuer_is_refused(idp: OidcIdp, keys: IssuerKeys) -> None:
    # OIDC Discovery §4.3: fetched for ".../" the document says "..." (no slash): not the same issuer.
    config = OidcProviderConfig(**idp.provider_config(public=True) | {"issuer": idp.issuer + "/"})
    with pytest.raises(IdentityProviderUnavailable) as refused:
        await Flow().start(OidcRelyingParty("corp", config, keys))
    assert refused.value.reason == "idp_discovery_issuer"


# -- crafted answers ---------------------------------------------------------------------------------------------------


def _party(crafted: CraftedIdp, keys: IssuerKeys, **config: Any) -> OidcRelyingParty:
    return OidcRelyingParty("crafted", OidcProviderConfig(issuer=crafted.issuer, client_id="rp", **config), keys)


async def _complete_with(crafted: CraftedIdp, party: OidcRelyingParty, flow: Flow) -> Any:
    return await flow.complete(party, {"code": "c", "state": flow.state, "iss": crafted.issuer})


async def _refusal(crafted: CraftedIdp, keys: IssuerKeys, id_token: str, flow: Flow, **config: Any) -> str:
    crafted.id_token = id_token
    with pytest.raises(SignInRefused) as refused:
        await _complete_with(crafted, _party(crafted, keys, **config), flow)
    assert refused.value.status_code == 403
    return refused.value.reason


async def test_crafted_valid_token_signs_in(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    crafted.id_token = crafted.sign(
        crafted.claims(client_id="rp", nonce=flow.nonce, email="c@example.com", groups=["g"])
    )
    identity = await _complete_with(crafted, _party(crafted, keys), flow)
    assert identity.subject == "crafted-user"
    assert identity.groups == ("g",)
    assert identity.mfa is False
    assert crafted.token_requests[-1]["code_verifier"] == flow.verifier


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "http://127.0.0.1:9"}, "id_token_issuer"),
        ({"aud": "someone-else"}, "id_token_audience"),
        ({"aud": ["rp", "other"]}, "id_token_azp"),
        ({"aud": ["rp", "other"], "azp": "other"}, "id_token_azp"),
        ({"nonce": "another-sign-in"}, "id_token_nonce"),
        ({"nonce": None}, "id_token_nonce"),
        ({"exp": 1_000_000}, "id_token_expired"),
        ({"iat": 4_000_000_000, "exp": 4_000_000_300}, "id_token_iat"),
        ({"sub": None}, "id_token_subject"),
    ],
)
async def test_bad_claims_are_refused(
    crafted: CraftedIdp, keys: IssuerKeys, claims: dict[str, Any], reason: str
) -> None:
    flow = Flow()
    token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce) | claims)
    assert await _refusal(crafted, keys, token, flow) == reason


@pytest.mark.filterwarnings('ignore:JWS algorithm "none" is deprecated')
async def test_unsigned_and_symmetric_tokens_are_refused(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    claims = crafted.claims(client_id="rp", nonce=flow.nonce)
    unsigned = jwt.encode({"alg": "none"}, claims, None, algorithms=["none"])
    assert await _refusal(crafted, keys, unsigned, flow) == "id_token_algorithm"
    # HS256: a public client shares no secret, and with published keys it is the algorithm confusion (RFC 8725 §2.1).
    confused = jwt.encode({"alg": "HS256", "kid": crafted.key.kid}, claims, OctKey.generate_key(256))
    assert await _refusal(crafted, keys, confused, flow) == "id_token_algorithm"


async def test_a_disallowed_algorithm_is_refused(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce))
    assert await _refusal(crafted, keys, token, flow, algorithms=["ES256"]) == "id_token_algorithm"


async def test_a_forged_signature_is_refused(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    forger = RSAKey.generate_key(2048, parameters={"kid": crafted.key.kid})
    token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce), key=forger)
    assert await _refusal(crafted, keys, token, flow) == "id_token_signature"


async def test_an_unknown_key_refreshes_the_jwks_once_then_is_rate_limited(
    crafted: CraftedIdp, keys: IssuerKeys, clock: Clock
) -> None:
    flow = Flow()
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce))
    await _complete_with(crafted, _party(crafted, keys), flow)
    assert crafted.jwks_fetches == 1

    stranger = RSAKey.generate_key(2048, parameters={"kid": "not-published"})
    token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce), key=stranger)
    assert await _refusal(crafted, keys, token, flow) == "id_token_key_unknown"
    assert crafted.jwks_fetches == 1  # fetched moments ago: not again

    clock.now += 31  # the rate limit's window has passed: one refresh
    assert await _refusal(crafted, keys, token, flow) == "id_token_key_unknown"
    assert crafted.jwks_fetches == 2
    for kid in ("spray-1", "spray-2", "spray-3"):
        sprayed = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce), key=stranger, header={"kid": kid})
        assert await _refusal(crafted, keys, sprayed, flow) == "id_token_key_unknown"
    assert crafted.jwks_fetches == 2


async def test_a_rotated_key_is_picked_up(crafted: CraftedIdp, keys: IssuerKeys, clock: Clock) -> None:
    flow = Flow()
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce))
    await _complete_with(crafted, _party(crafted, keys), flow)
    clock.now += 31
    crafted.key = RSAKey.generate_key(2048, parameters={"kid": "crafted-2", "use": "sig"})
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce))
    assert (await _complete_with(crafted, _party(crafted, keys), flow)).subject == "crafted-user"
    assert crafted.jwks_fetches == 2


async def test_keys_expire_after_their_ttl(crafted: CraftedIdp, keys: IssuerKeys, clock: Clock) -> None:
    flow = Flow()
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce))
    await _complete_with(crafted, _party(crafted, keys), flow)
    clock.now += 3601
    await _complete_with(crafted, _party(crafted, keys), flow)
    assert crafted.jwks_fetches == 2


async def test_verify_alone_works_from_a_cold_cache(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    """The ID-JAG grant calls verify() first, without discovery: it fetches discovery and keys itself."""
    token = crafted.sign({"iss": crafted.issuer, "sub": "u"}, header={"typ": "oauth-id-jag+jwt"})
    header, claims = await keys.verify(token, issuer=crafted.issuer, algorithms=["RS256"])
    assert header["typ"] == "oauth-id-jag+jwt"
    assert claims == {"iss": crafted.issuer, "sub": "u"}


async def test_a_failing_jwks_endpoint_is_not_hammered(crafted: CraftedIdp, keys: IssuerKeys, clock: Clock) -> None:
    crafted.jwks_status = 503
    token = crafted.sign({"iss": crafted.issuer, "sub": "u"})
    for _ in range(3):
        with pytest.raises(IdentityProviderUnavailable):
            await keys.verify(token, issuer=crafted.issuer, algorithms=["RS256"])
    assert crafted.jwks_fetches == 1
    crafted.jwks_status = 200
    clock.now += 31
    assert (await keys.verify(token, issuer=crafted.issuer, algorithms=["RS256"]))[1]["sub"] == "u"


async def test_discovery_that_is_not_json_is_unavailable(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    crafted.discovery_broken = True
    with pytest.raises(IdentityProviderUnavailable) as broken:
        await Flow().start(_party(crafted, keys))
    assert broken.value.reason == "idp_discovery"


async def test_discovery_is_cached_until_its_ttl(crafted: CraftedIdp, keys: IssuerKeys, clock: Clock) -> None:
    party = _party(crafted, keys)
    await Flow().start(party)
    crafted.discovery_broken = True
    await Flow().start(party)  # cached
    clock.now += 3601
    with pytest.raises(IdentityProviderUnavailable):
        await Flow().start(party)


async def test_userinfo_for_another_subject_is_refused(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    crafted.userinfo = {"sub": "someone-else", "email": "x@example.com"}
    token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce))
    assert await _refusal(crafted, keys, token, flow) == "userinfo_subject"


async def test_userinfo_fills_only_what_is_missing(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    crafted.userinfo = {"sub": "crafted-user", "email": "u@example.com", "groups": ["from-userinfo"], "iss": "evil"}
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce, groups=["from-token"]))
    identity = await _complete_with(crafted, _party(crafted, keys), flow)
    assert identity.email == "u@example.com"
    assert identity.groups == ("from-token",)


async def test_an_unverified_email_is_dropped(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    claims = crafted.claims(client_id="rp", nonce=flow.nonce, email="ceo@example.com", email_verified=False, groups=[])
    crafted.id_token = crafted.sign(claims)
    assert (await _complete_with(crafted, _party(crafted, keys, userinfo=False), flow)).email is None


async def test_a_refused_code_is_a_refusal_not_an_outage(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    with pytest.raises(SignInRefused) as refused:
        await flow.complete(_party(crafted, keys), {"code": "refused", "iss": crafted.issuer})
    assert refused.value.reason == "token_exchange_refused"
    assert not isinstance(refused.value, IdentityProviderUnavailable)


async def test_entra_groups_overage_is_read_from_graph(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    crafted.graph_groups = ["0b1f-group-a", "7c2e-group-b", "9d3f-group-c"]
    overage = {"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph.invalid"}}}
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce, email="e@example.com", **overage))
    party = _party(crafted, keys, preset="entra", entra_tenant="contoso.example", graph_url=crafted.graph_url)
    identity = await _complete_with(crafted, party, flow)
    assert identity.groups == ("0b1f-group-a", "7c2e-group-b", "9d3f-group-c")  # all three pages

    assert identity.email is None  # Entra's email is unverified without xms_edov

    crafted.id_token = crafted.sign(
        crafted.claims(client_id="rp", nonce=flow.nonce, email="e@example.com", xms_edov=True, hasgroups=True)
    )
    identity = await _complete_with(crafted, party, flow)
    assert identity.groups == ("0b1f-group-a", "7c2e-group-b", "9d3f-group-c")
    assert identity.email == "e@example.com"


async def test_google_hosted_domain_must_match(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    config = {"preset": "google", "hosted_domains": ["example.com"]}
    for hd in ("example.org", None):
        token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce, hd=hd, email="p@example.org"))
        assert await _refusal(crafted, keys, token, flow, **config) == "google_hosted_domain"
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce, hd="example.com", groups=[]))
    party = _party(crafted, keys, **config)
    assert "hd=example.com" in await flow.start(party)
    assert (await _complete_with(crafted, party, flow)).subject == "crafted-user"


async def test_a_response_without_iss_is_accepted_when_not_advertised(crafted: CraftedIdp, keys: IssuerKeys) -> None:
    flow = Flow()
    crafted.iss_parameter_supported = False
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce, email="e@example.com", groups=[]))
    await flow.complete(_party(crafted, keys), {"code": "c"})
    with pytest.raises(SignInRefused) as refused:
        await flow.complete(_party(crafted, keys), {"code": "c", "iss": "http://127.0.0.1:9"})
    assert refused.value.reason == "authorization_response_issuer"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(["code", "state", "iss", "error", "error_description", "x"]), st.text()))
async def test_any_callback_is_an_identity_or_a_refusal(
    crafted: CraftedIdp, keys: IssuerKeys, params: dict[str, str]
) -> None:
    """Whatever the query says, the answer is a FederatedIdentity or SignInRefused: never another exception."""
    flow = Flow()
    crafted.id_token = crafted.sign(crafted.claims(client_id="rp", nonce=flow.nonce, email="e@example.com", groups=[]))
    try:
        identity = await flow.complete(_party(crafted, keys), params)
    except SignInRefused:
        return
    assert params.get("iss") == crafted.issuer
    assert params.get("code")
    assert "error" not in params
    assert identity.subject == "crafted-user"
