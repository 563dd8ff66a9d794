"""An OpenID Connect identity provider of a tenant (`sso.providers.NAME` with `kind: oidc`).

Fields left out take their preset's defaults (sso/oidc/presets.py): `scopes`, `groups_claim`, `mfa_values`; with
`preset: entra`, `issuer` may be left out and is built from `entra_tenant`.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from chamberlain.gateway.server_config import VaultReference
from chamberlain.sso.common_config import Domain, ProviderBase, https_url
from chamberlain.sso.oidc.presets import ENTRA_ISSUER, GRAPH_URL, PRESETS

Preset = Literal["generic", "okta", "entra", "google", "auth0", "ping", "onelogin"]
# RFC 7518 §3.1's asymmetric JWS algorithms: `none` and HS* are never accepted for an ID token (RFC 8725 §3.1-3.2).
SignatureAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_ENTRA_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


class OidcProviderConfig(ProviderBase):
    kind: Literal["oidc"] = "oidc"
    preset: Preset = "generic"
    issuer: https_url
    client_id: str = Field(min_length=1, max_length=500)
    # A vault reference "SOURCE/NAME" in this tenant, bound to the vault upstream "sso"; None: a public client (PKCE).
    client_secret: VaultReference | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    groups_claim: str = Field("groups", min_length=1, max_length=500)
    algorithms: tuple[SignatureAlgorithm, ...] = Field(("RS256", "ES256", "PS256"), min_length=1)
    # Ask the userinfo endpoint (OIDC Core §5.3) when the ID token lacks the email or the groups claim.
    userinfo: bool = True
    # Trust ID-JAGs this provider issues (the jwt-bearer grant, oauth/grants/jwt_bearer.py).
    id_jag: bool = False
    # Entra: the directory (tenant) id or a verified domain; the issuer is https://login.microsoftonline.com/{it}/v2.0.
    entra_tenant: str | None = None
    # Entra: where group memberships are read when the token has too many (the groups overage). Tests point it at a
    # loopback stand-in.
    graph_url: https_url = GRAPH_URL
    # Google: the Workspace domains whose accounts may sign in; the ID token's `hd` claim must be one of them.
    hosted_domains: tuple[Domain, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = PRESETS.get(str(data.get("preset", "generic")))
        filled = dict(data)
        if preset is not None:
            filled.setdefault("scopes", preset.scopes)
            filled.setdefault("groups_claim", preset.groups_claim)
            if filled.get("mfa_values") is None and preset.mfa_values:
                filled["mfa_values"] = preset.mfa_values
        tenant = filled.get("entra_tenant")
        if filled.get("preset") == "entra" and "issuer" not in filled and isinstance(tenant, str):
            if not _ENTRA_TENANT.match(tenant):
                raise ValueError("entra_tenant must be a directory (tenant) id or a domain name")
            filled["issuer"] = ENTRA_ISSUER.format(tenant=tenant)
        return filled

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in scopes:  # OIDC Core §3.1.2.1: without it the request is plain OAuth, with no ID token
            raise ValueError("scopes must include 'openid'")
        return scopes

    @model_validator(mode="after")
    def _preset_fields(self) -> Self:
        if self.preset == "entra" and self.entra_tenant is None:
            raise ValueError("preset entra needs entra_tenant (the directory id or a verified domain)")
        if self.preset == "google" and not self.hosted_domains:
            # Without it any Google account, personal ones included, could sign in.
            raise ValueError("preset google needs hosted_domains (the Workspace domains allowed to sign in)")
        return self
