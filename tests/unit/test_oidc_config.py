"""OIDC provider configuration: presets fill in their defaults, and settings that would weaken sign-in are refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chamberlain.sso.config import SsoConfig
from chamberlain.sso.oidc.config import OidcProviderConfig

BASE: dict[str, Any] = {"issuer": "https://idp.example.com", "client_id": "chamberlain"}


def test_generic_defaults() -> None:
    config = OidcProviderConfig(**BASE)
    assert config.scopes == ("openid", "email", "profile")
    assert config.groups_claim == "groups"
    assert config.algorithms == ("RS256", "ES256", "PS256")
    assert config.mfa_values is None
    assert config.graph_url == "https://graph.microsoft.com"


def test_okta_preset_asks_for_groups_and_knows_its_acr() -> None:
    config = OidcProviderConfig(**BASE, preset="okta")
    assert "groups" in config.scopes
    assert config.mfa_values is not None
    assert "urn:okta:loa:2fa:any" in config.mfa_values


def test_explicit_values_win_over_the_preset() -> None:
    config = OidcProviderConfig(**BASE, preset="okta", scopes=["openid"], mfa_values=["custom"], groups_claim="roles")
    assert config.scopes == ("openid",)
    assert config.mfa_values == ("custom",)
    assert config.groups_claim == "roles"


def test_auth0_uses_a_namespaced_groups_claim() -> None:
    assert OidcProviderConfig(**BASE, preset="auth0").groups_claim == "https://chamberlain/groups"


def test_entra_issuer_is_templated_from_the_tenant() -> None:
    config = OidcProviderConfig(preset="entra", entra_tenant="contoso.onmicrosoft.com", client_id="c")
    assert config.issuer == "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"
    explicit = OidcProviderConfig(**BASE, preset="entra", entra_tenant="contoso.onmicrosoft.com")
    assert explicit.issuer == BASE["issuer"]


@pytest.mark.parametrize(
    "fields",
    [
        {"preset": "entra", "client_id": "c"},  # no tenant, no issuer
        {**BASE, "preset": "entra"},  # the overage and the issuer need the tenant
        {"preset": "entra", "entra_tenant": "../evil", "client_id": "c"},
        {**BASE, "preset": "google"},  # any Google account could sign in
        {**BASE, "algorithms": ["HS256"]},
        {**BASE, "algorithms": ["none"]},
        {**BASE, "algorithms": []},
        {**BASE, "scopes": ["email"]},  # no openid: no ID token
        {**BASE, "issuer": "http://idp.example.com"},  # plain http off loopback
        {**BASE, "graph_url": "http://graph.example.com"},
    ],
)
def test_weak_or_incomplete_settings_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OidcProviderConfig(**fields)


def test_google_needs_its_hosted_domains() -> None:
    config = OidcProviderConfig(**BASE, preset="google", hosted_domains=["Example.COM"])
    assert config.hosted_domains == ("example.com",)


def test_providers_parse_through_the_sso_config() -> None:
    sso = SsoConfig.model_validate({"providers": {"okta": {"kind": "oidc", "preset": "okta", **BASE}}})
    provider = sso.providers["okta"]
    assert isinstance(provider, OidcProviderConfig)
    assert "groups" in provider.scopes
