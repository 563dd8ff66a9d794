"""An OpenID Connect identity provider of a tenant (`sso.providers.NAME` with `kind: oidc`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chamberlain.sso.common_config import ProviderBase, https_url

Preset = Literal["generic", "okta", "entra", "google", "auth0", "ping", "onelogin"]


class OidcProviderConfig(ProviderBase):
    kind: Literal["oidc"] = "oidc"
    preset: Preset = "generic"
    issuer: https_url
    client_id: str = Field(min_length=1, max_length=500)
    # A vault reference "SOURCE/NAME" in this tenant, bound to the vault upstream "sso"; None: a public client (PKCE).
    client_secret: str | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    groups_claim: str = "groups"
