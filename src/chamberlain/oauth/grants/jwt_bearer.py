"""The JWT bearer grant (RFC 7523 §2.1) for Identity Assertion JWT Authorization Grants (ID-JAG).

MCP's enterprise-managed authorization (ext-auth) lets a client that signed its user in with the enterprise IdP
exchange that sign-in at the IdP for an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant, "the draft") and
redeem it here for an access token, without sending the user through a browser. The IdP must be one of this tenant's
OIDC providers that the administrator marked as issuing ID-JAGs (`id_jag: true`); its `sub` is the same subject it
signs in with, so the ID-JAG acts for the account that subject is linked to (or provisions it just in time, as a
first sign-in would). The user's roles are the account's, as for every other grant.

No refresh token is issued (draft §4.4.3): the ID-JAG stands in for one, and the client asks the IdP for a new one.
Each ID-JAG is redeemed once (RFC 7523 §3 item 7): its `jti` is claimed in the store, on every replica at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from chamberlain.oauth.client_metadata import JWT_BEARER_GRANT
from chamberlain.oauth.clients import Client
from chamberlain.oauth.errors import (
    INVALID_GRANT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    INVALID_TARGET,
    TEMPORARILY_UNAVAILABLE,
    UNAUTHORIZED_CLIENT,
    OAuthError,
)
from chamberlain.oauth.scopes import parse_scope
from chamberlain.oauth.token_response import TokenResponse
from chamberlain.sso.identity import FederatedIdentity, IdentityProviderUnavailable, SignInRefused
from chamberlain.sso.mfa import SecondFactor, second_factor
from chamberlain.sso.oidc.config import OidcProviderConfig
from chamberlain.sso.oidc.id_token import CLOCK_SKEW_SECONDS, is_numeric_date, proves_mfa, string_list
from chamberlain.sso.provisioning import provision
from chamberlain.store.federated_identities import FederatedIdentityRepository
from chamberlain.store.seen_identifiers import ID_JAG, SeenIdentifiers
from chamberlain.store.users import User
from chamberlain.tenancy.tenant import ProtectedResource, Tenant

JWT_BEARER = JWT_BEARER_GRANT
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"  # draft §7.2, authorization_grant_profiles_supported
ID_JAG_TYPE = "oauth-id-jag+jwt"  # draft §3.1
MAX_ASSERTION_LENGTH = 16 * 1024
MAX_SUBJECT_LENGTH = 255  # OpenID Connect Core §2: `sub` is at most 255 ASCII characters
# RFC 7523 §3 items 4 and 6 let us refuse assertions that live unreasonably long; ext-auth §4.2 shows 300 to 3600 s.
MAX_LIFETIME = 3600


@dataclass(frozen=True)
class IdJag:
    """The verified claims that decide what is issued."""

    provider: str  # the provider's name in this tenant's `sso.providers`
    config: OidcProviderConfig
    subject: str
    jti: str
    expires_at: float
    claims: dict[str, Any]


def invalid_grant(description: str) -> OAuthError:
    """RFC 7523 §3.1: an assertion that is not valid is `invalid_grant`. Descriptions never quote the assertion."""
    return OAuthError(INVALID_GRANT, description)


async def exchange(app: Tenant, client: Client, form: dict[str, str], binding: str | None) -> TokenResponse:
    # Draft §8.1: only confidential clients; public ones use the authorization code grant, where the user consents.
    if client.metadata.is_public:
        raise OAuthError(
            UNAUTHORIZED_CLIENT, "public clients cannot redeem an ID-JAG; use the authorization code grant"
        )
    assertion = form.get("assertion")
    if not assertion:
        raise OAuthError(INVALID_REQUEST, "assertion is required")  # RFC 7523 §2.1
    grant = await _verified(app, client, assertion)
    resource = _resource(app, grant.claims.get("resource"), form.get("resource"))
    scopes = _scopes(app, client, resource, grant.claims.get("scope"), form.get("scope"))
    # RFC 7523 §3 item 7: single use. jti values are unique per issuer (RFC 7519 §4.1.7), so the issuer scopes it.
    claimed = await SeenIdentifiers(app.database, app.id).claim(
        ID_JAG, f"{grant.config.issuer}\x00{grant.jti}", grant.expires_at
    )
    if not claimed:
        raise invalid_grant("the ID-JAG was already redeemed; ask the identity provider for a new one")
    identity = _identity(grant)
    user = await _user(app, identity)
    # Chamberlain enforces MFA itself (sso/mfa.py). No browser is involved here, so a role that needs a second factor
    # the IdP did not prove (`amr`/`acr` in the ID-JAG) is refused rather than asked for it.
    if second_factor(app, user, identity) is not SecondFactor.PROVEN:
        raise invalid_grant("this account needs a second factor that the identity provider did not prove (amr/acr)")
    auth_time = grant.claims.get("auth_time")
    access_token = app.token_issuer.issue(
        subject=user.id,
        client_id=client.client_id,
        audience=resource.resource,
        scopes=scopes,
        tenant=app.id,
        grant_id=None,
        auth_time=auth_time if is_numeric_date(auth_time) else None,
        roles=user.roles,
        certificate_thumbprint=binding,  # RFC 8705 §3.1
    )
    return TokenResponse(access_token)


async def _verified(app: Tenant, client: Client, assertion: str) -> IdJag:
    """The ID-JAG's claims, once its issuer is trusted here, its signature verified with that issuer's keys, and
    every rule of draft §4.4.1 (which applies RFC 7521 §5.2 and RFC 7523 §3) holds."""
    if len(assertion) > MAX_ASSERTION_LENGTH:
        raise invalid_grant("the assertion is too long")
    name, config = _trusted_provider(app, _unverified_issuer(assertion))
    try:
        # The provider's own algorithm allow-list; `none` and HS* are never among them (RFC 8725 §3.1-3.2).
        header, claims = await app.shared.sso.keys.verify(assertion, issuer=config.issuer, algorithms=config.algorithms)
    except IdentityProviderUnavailable:
        raise OAuthError(
            TEMPORARILY_UNAVAILABLE, "the identity provider's keys cannot be fetched; try again later", status_code=503
        ) from None
    except SignInRefused:
        raise invalid_grant("the ID-JAG's signature is not valid for its issuer") from None
    # Draft §3.1 and RFC 8725 §3.11: explicit typing keeps an ID token or access token from passing as an ID-JAG.
    if not _is_id_jag_type(header.get("typ")):
        raise invalid_grant(f"the assertion's typ must be {ID_JAG_TYPE}")
    if claims.get("iss") != config.issuer:
        raise invalid_grant("the ID-JAG's iss is not its identity provider's issuer")
    _check_audience(app, claims.get("aud"))
    # Draft §4.4.1: the ID-JAG was issued for the client that authenticated this request.
    if claims.get("client_id") != client.client_id:
        raise invalid_grant("the ID-JAG was issued for another client")
    expires_at = _check_times(claims)
    subject, jti = claims.get("sub"), claims.get("jti")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise invalid_grant("the ID-JAG has no valid sub")
    if not isinstance(jti, str) or not jti:
        raise invalid_grant("the ID-JAG has no jti")
    # Draft §8.6.1.2: an ID-JAG bound to a key needs a DPoP proof, which this server does not take.
    if "cnf" in claims:
        raise invalid_grant("the ID-JAG is bound to a key (cnf); proof of possession is not supported here")
    return IdJag(name, config, subject, jti, expires_at, claims)


def _unverified_issuer(assertion: str) -> str:
    """The unverified `iss` only chooses whose keys to verify with; nothing in it is trusted before that check."""
    try:
        iss = json.loads(extract_compact(assertion.encode("ascii")).payload).get("iss")
    except (JoseError, ValueError, UnicodeError, AttributeError):
        iss = None
    if not isinstance(iss, str):
        raise invalid_grant("the assertion is not a signed JWT with an iss")
    return iss


def _trusted_provider(app: Tenant, issuer: str) -> tuple[str, OidcProviderConfig]:
    for name, config in app.config.sso.providers.items():
        if isinstance(config, OidcProviderConfig) and config.id_jag and config.issuer == issuer:
            return name, config
    raise invalid_grant("the ID-JAG's issuer is not an identity provider trusted here for ID-JAGs")


def _is_id_jag_type(typ: object) -> bool:
    # RFC 7515 §4.1.9: media types compare case-insensitively, and "application/" may be left out.
    return isinstance(typ, str) and typ.lower().removeprefix("application/") == ID_JAG_TYPE


def _check_audience(app: Tenant, aud: object) -> None:
    # Draft §4.4.1: aud is our issuer, as a string or an array of exactly that one element.
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audiences != [app.issuer]:
        raise invalid_grant("the ID-JAG's aud is not this authorization server's issuer")


def _check_times(claims: dict[str, Any]) -> float:
    """RFC 7523 §3 items 4-6 and draft §3.1 (exp and iat required): the expiry, once the ID-JAG is current."""
    now = time.time()
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if not is_numeric_date(exp) or not is_numeric_date(iat):
        raise invalid_grant("the ID-JAG must have numeric exp and iat")
    if exp <= now:
        raise invalid_grant("the ID-JAG has expired; ask the identity provider for a new one")
    if iat > now + CLOCK_SKEW_SECONDS or (
        nbf is not None and (not is_numeric_date(nbf) or nbf > now + CLOCK_SKEW_SECONDS)
    ):
        raise invalid_grant("the ID-JAG is not valid yet")
    if exp - iat > MAX_LIFETIME:
        raise invalid_grant(f"the ID-JAG lives longer than {MAX_LIFETIME} seconds")
    return float(exp)


def _resource(app: Tenant, claimed: object, requested: str | None) -> ProtectedResource:
    """The access token's audience: the ID-JAG's `resource` (one URI or an array), processed per RFC 8707 §2 (draft
    §4.4.1); a `resource` request parameter picks one of several. It must be a protected resource of this tenant."""
    resources = [claimed] if isinstance(claimed, str) else claimed if isinstance(claimed, list) else []
    if not resources or not all(isinstance(resource, str) for resource in resources):
        # MCP ext-auth §4.3 makes the claim required: the IdP's policy decided which MCP server the grant is for.
        raise invalid_grant("the ID-JAG names no resource")
    if requested is not None:
        if requested not in resources:
            raise OAuthError(INVALID_TARGET, "resource is not one the ID-JAG grants")
        chosen = requested
    elif len(resources) == 1:
        chosen = resources[0]
    else:
        raise OAuthError(INVALID_TARGET, "the ID-JAG names several resources: choose one with the resource parameter")
    found = app.resource_by_url(chosen)
    if found is None:
        raise OAuthError(INVALID_TARGET, "the ID-JAG's resource is not an MCP server registered here")
    return found


def _scopes(
    app: Tenant, client: Client, resource: ProtectedResource, claimed: object, requested: str | None
) -> frozenset[str]:
    """Draft §4.4.1: the scopes the IdP granted (the resource's own when it named none; RFC 6749 §3.3), narrowed to
    those known here and, when the client registered a `scope` (RFC 7591 §2), to those; a `scope` request parameter
    (RFC 7521 §4.1) may narrow them further."""
    if claimed is not None and not isinstance(claimed, str):
        raise invalid_grant("the ID-JAG's scope must be a space-separated string")
    allowed = frozenset(app.settings.scopes) | frozenset(resource.server.scopes)
    if client.metadata.scope is not None:
        allowed &= parse_scope(client.metadata.scope)
    granted = (parse_scope(claimed) or frozenset(resource.server.scopes)) & allowed
    if requested is not None:
        granted &= parse_scope(requested)
    if not granted:
        raise OAuthError(INVALID_SCOPE, "none of the ID-JAG's scopes is allowed for this client")
    return granted


def _identity(grant: IdJag) -> FederatedIdentity:
    """The ID-JAG as a sign-in of its subject: draft §3.1 lets it carry the claims an ID token would (email, groups,
    amr, acr), read as the OIDC relying party reads them."""
    claims = grant.claims
    email, name, acr = claims.get("email"), claims.get("name"), claims.get("acr")
    amr = string_list(claims.get("amr"))
    acr = acr if isinstance(acr, str) else None
    return FederatedIdentity(
        provider=grant.provider,
        subject=grant.subject,
        # OIDC Core §5.7: an address the provider says it did not verify is no evidence of who this is.
        email=email if isinstance(email, str) and claims.get("email_verified") is not False else None,
        display_name=name if isinstance(name, str) else None,
        groups=string_list(claims.get(grant.config.groups_claim)),
        mfa=proves_mfa(amr, acr, grant.config.mfa_values or ()),
        authn_context=(*amr, *([acr] if acr else [])),
    )


async def _user(app: Tenant, identity: FederatedIdentity) -> User:
    """The account the subject signs in as. A linked account keeps its roles (the ID-JAG is no sign-in that would
    recompute them); an unknown subject is provisioned as its first sign-in would be (draft §3.1 allows JIT)."""
    user_id = await FederatedIdentityRepository(app.database, app.id).user_of(identity.provider, identity.subject)
    if user_id is None:
        try:
            user = (await provision(app, identity)).user
        except SignInRefused as refused:  # its message is written for the person; no token or secret is in it
            raise invalid_grant(refused.message) from None
    else:
        found = await app.users.get(user_id)
        if found is None:
            raise invalid_grant("the account this subject signs in as no longer exists")
        user = found
    if user.disabled:
        raise invalid_grant("the user's account is disabled")
    return user
