"""An OpenID Connect relying party: the authorization code flow with PKCE (OIDC Core 1.0 §3.1, RFC 7636) against one
of a tenant's identity providers, ending in a FederatedIdentity or a refusal.

The caller (web/sso.py) makes and keeps `state`, `nonce` and the PKCE verifier per browser, and checks `state`;
everything the provider answers is checked here.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from chamberlain.sso.identity import FederatedIdentity, IdentityProviderUnavailable, SignInRefused
from chamberlain.sso.oidc.config import OidcProviderConfig
from chamberlain.sso.oidc.id_token import check_claims, proves_mfa, string_list
from chamberlain.sso.oidc.keys import IssuerKeys, ProviderError, ProviderMetadata

# Userinfo claims that may fill what the ID token left out; nothing else (OIDC Core §5.3.2 lets us trust the
# response only as far as `sub` matches, and `iss`/`aud` of the ID token are never taken from it).
_USERINFO_CLAIMS = ("email", "email_verified", "name", "preferred_username")
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # RFC 6749 §4.1.2.1 codes; never free text on our page
MAX_GRAPH_PAGES = 20


class OidcRelyingParty:
    def __init__(self, name: str, config: OidcProviderConfig, keys: IssuerKeys) -> None:
        self.name = name
        self.config = config
        self.keys = keys

    async def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str, login_hint: str | None
    ) -> str:
        """The authentication request (OIDC Core §3.1.2.1) the browser is sent to."""
        metadata = await self.keys.metadata(self.config.issuer)
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": _s256(code_verifier),
            "code_challenge_method": "S256",
        }
        if login_hint:
            params["login_hint"] = login_hint
        if self.config.preset == "google" and len(self.config.hosted_domains) == 1:
            # Google's `hd` parameter only streamlines the account chooser; the `hd` claim is what is checked.
            params["hd"] = self.config.hosted_domains[0]
        separator = "&" if urlsplit(metadata.authorization_endpoint).query else "?"
        return metadata.authorization_endpoint + separator + urlencode(params)

    async def complete(
        self,
        *,
        redirect_uri: str,
        params: Mapping[str, str],
        code_verifier: str,
        nonce: str,
        client_secret: str | None,
    ) -> FederatedIdentity:
        """The identity the authorization response proves, after the code exchange and every check."""
        metadata = await self.keys.metadata(self.config.issuer)
        self._check_response_issuer(metadata, params)
        if "error" in params:
            raise _provider_error(params["error"])
        code = params.get("code")
        if not code:
            raise SignInRefused(
                "authorization_code_missing", "The identity provider's answer has no code.", status_code=400
            )
        tokens = await self._exchange(metadata, code, redirect_uri, code_verifier, client_secret)
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str):
            raise SignInRefused("id_token_missing", "The identity provider sent no ID token.")
        _, claims = await self.keys.verify(id_token, issuer=self.config.issuer, algorithms=self.config.algorithms)
        subject = check_claims(claims, issuer=self.config.issuer, client_id=self.config.client_id, nonce=nonce)
        self._check_hosted_domain(claims)
        access = access_token if isinstance(access_token, str) else None
        claims = await self._with_userinfo(metadata, claims, subject, access)
        groups = await self._groups(claims, access)
        return self._identity(subject, claims, groups)

    def _check_response_issuer(self, metadata: ProviderMetadata, params: Mapping[str, str]) -> None:
        # RFC 9207 §2.4: a response naming another issuer is a mix-up attack; a provider that advertises the parameter
        # always sends it, so its absence is refused too. Checked before `error`, which a mixed-up IdP may also send.
        iss = params.get("iss")
        if iss is None and not metadata.iss_parameter_supported:
            return
        if iss != self.config.issuer:
            raise SignInRefused("authorization_response_issuer", "The answer came from another identity provider.")

    async def _exchange(
        self, metadata: ProviderMetadata, code: str, redirect_uri: str, verifier: str, secret: str | None
    ) -> dict[str, Any]:
        """The token request (OIDC Core §3.1.3.1, RFC 7636 §4.5)."""
        if metadata.token_endpoint is None:
            raise IdentityProviderUnavailable("idp_discovery_invalid", "The identity provider has no token endpoint.")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        request: dict[str, Any] = {"data": form, "headers": {"Accept": "application/json"}}
        if secret is None:
            form["client_id"] = self.config.client_id  # a public client (RFC 6749 §3.2.1)
        elif "client_secret_basic" in metadata.token_endpoint_auth_methods or not metadata.token_endpoint_auth_methods:
            # RFC 6749 §2.3.1: both are form-urlencoded before they go into the Basic credentials.
            request["auth"] = httpx.BasicAuth(quote(self.config.client_id, safe=""), quote(secret, safe=""))
        else:
            form |= {"client_id": self.config.client_id, "client_secret": secret}
        try:
            return await self.keys.request_json("POST", metadata.token_endpoint, what="token", **request)
        except ProviderError as failed:
            # RFC 6749 §5.2: a 400 with invalid_grant is a refused code (used, expired, or injected), not an outage.
            error = failed.oauth_error() if failed.status in (400, 401) else None
            if error is None:
                raise
            raise SignInRefused(
                "token_exchange_refused", f"The identity provider refused the sign-in ({_safe_code(error)}). Try again."
            ) from None

    def _check_hosted_domain(self, claims: Mapping[str, Any]) -> None:
        # Google: `hd` names the Workspace domain of the account; personal accounts have none.
        if self.config.preset == "google" and claims.get("hd") not in self.config.hosted_domains:
            raise SignInRefused("google_hosted_domain", "This Google account does not belong to an allowed domain.")

    async def _with_userinfo(
        self, metadata: ProviderMetadata, claims: dict[str, Any], subject: str, access_token: str | None
    ) -> dict[str, Any]:
        missing = "email" not in claims or (self.config.groups_claim not in claims and not _groups_overage(claims))
        if not (missing and self.config.userinfo and metadata.userinfo_endpoint and access_token):
            return claims
        userinfo = await self.keys.get_json(
            metadata.userinfo_endpoint,
            what="userinfo",
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        if userinfo.get("sub") != subject:  # OIDC Core §5.3.2: a substituted response
            raise SignInRefused("userinfo_subject", "The identity provider's user information is for another person.")
        extra = {key: userinfo[key] for key in (*_USERINFO_CLAIMS, self.config.groups_claim) if key in userinfo}
        return extra | claims

    async def _groups(self, claims: Mapping[str, Any], access_token: str | None) -> tuple[str, ...]:
        if self.config.preset == "entra" and _groups_overage(claims):
            return await self._graph_groups(access_token)
        return string_list(claims.get(self.config.groups_claim))

    async def _graph_groups(self, access_token: str | None) -> tuple[str, ...]:
        """Entra's groups overage: the token names too many groups to carry them, so they are read from Microsoft
        Graph (`GET /v1.0/me/transitiveMemberOf`, paged by `@odata.nextLink`) as the same object ids."""
        if access_token is None:
            raise IdentityProviderUnavailable("idp_graph", "Entra sent no access token to read the groups with.")
        base = self.config.graph_url.rstrip("/")
        url: str | None = f"{base}/v1.0/me/transitiveMemberOf/microsoft.graph.group?$select=id&$top=999"
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        groups: list[str] = []
        for _ in range(MAX_GRAPH_PAGES):
            if url is None:
                return tuple(groups)
            page = await self.keys.get_json(url, what="Graph", headers=headers)
            values = page.get("value")
            groups += [
                item["id"] for item in values or [] if isinstance(item, dict) and isinstance(item.get("id"), str)
            ]
            next_link = page.get("@odata.nextLink")
            # The access token goes only to the configured Graph.
            url = next_link if isinstance(next_link, str) and next_link.startswith(base + "/") else None
        raise IdentityProviderUnavailable("idp_graph", "Microsoft Graph lists too many groups for this account.")

    def _identity(self, subject: str, claims: Mapping[str, Any], groups: tuple[str, ...]) -> FederatedIdentity:
        email = claims.get("email") if self._email_is_verified(claims) else None
        name = claims.get("name") or claims.get("preferred_username")
        amr = string_list(claims.get("amr"))
        acr = claims.get("acr") if isinstance(claims.get("acr"), str) else None
        return FederatedIdentity(
            provider=self.name,
            subject=subject,
            email=email,
            display_name=name if isinstance(name, str) else None,
            groups=groups,
            mfa=proves_mfa(amr, acr, self.config.mfa_values or ()),
            authn_context=(*amr, *([acr] if acr else [])),
        )

    def _email_is_verified(self, claims: Mapping[str, Any]) -> bool:
        if not isinstance(claims.get("email"), str):
            return False
        if self.config.preset == "entra":
            # Entra's `email` is whatever the account's mail attribute says, unverified ("nOAuth"): only its
            # optional claim `xms_edov` (email domain owner verified) makes it evidence.
            return claims.get("xms_edov") in (True, "1", "true")
        # An address the provider says it did not verify is not evidence of who this is (OIDC Core §5.7).
        return claims.get("email_verified") is not False


def _groups_overage(claims: Mapping[str, Any]) -> bool:
    # Entra's overage: `_claim_names: {"groups": "src1"}` (OIDC Core §5.6.2 distributed claims), or `hasgroups: true`.
    names = claims.get("_claim_names")
    return (isinstance(names, dict) and "groups" in names) or claims.get("hasgroups") is True


def _provider_error(error: str) -> SignInRefused:
    """RFC 6749 §4.1.2.1: the provider's error code is shown; its free-text description is not (it is the
    provider's, unvetted)."""
    if error == "access_denied":
        return SignInRefused("idp_access_denied", "The identity provider did not let you sign in to this application.")
    return SignInRefused("idp_error", f"The identity provider could not sign you in ({_safe_code(error)}).")


def _safe_code(error: str) -> str:
    return error if _ERROR_CODE.match(error) else "an unknown error"


def _s256(verifier: str) -> str:
    # RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding.
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")
