"""The SSO section of a tenant's configuration: providers, captured domains, the MFA floor, sealed flow state."""

from __future__ import annotations

import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chamberlain.crypto.master_key import MasterKey
from chamberlain.crypto.sealed import Sealer
from chamberlain.sso.config import SsoConfig

OKTA = {"kind": "oidc", "preset": "okta", "issuer": "https://company.okta.com", "client_id": "0oa1"}
SAML = {
    "kind": "saml",
    "idp_entity_id": "https://idp.example.org/saml",
    "sso_url": "https://idp.example.org/saml/sso",
    "certificates": ["MIIB"],
}


def test_a_domain_routes_to_the_provider_that_captured_it_whatever_its_case() -> None:
    config = SsoConfig.model_validate({"providers": {"okta": {**OKTA, "domains": ["Company.COM."]}}})
    found = config.provider_for_email("Bob@company.com")
    assert found is not None
    assert found[0] == "okta"
    assert config.provider_for_email("bob@subsidiary.company.com") is None  # a subdomain is not captured with it
    assert config.provider_for_email("company.com") is None  # not an email
    assert config.offers_sign_in_redirect


def test_a_domain_captured_twice_is_refused_naming_both_providers() -> None:
    with pytest.raises(ValidationError) as problem:
        SsoConfig.model_validate(
            {"providers": {"okta": {**OKTA, "domains": ["company.com"]}, "saml": {**SAML, "domains": ["company.com"]}}}
        )
    assert "'company.com' is already captured by 'okta'" in str(problem.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("issuer", "http://company.okta.com", "must use https"),
        ("issuer", "https://user:secret@company.okta.com", "without user information"),
        ("domains", ["not a domain"], "is not a domain name"),
        ("domains", ["localhost"], "is not a domain name"),
        ("preset", "keycloak", "Input should be"),
    ],
)
def test_bad_provider_settings_are_refused_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as problem:
        SsoConfig.model_validate({"providers": {"okta": {**OKTA, field: value}}})
    assert message in str(problem.value)
    assert f"providers.okta.oidc.{field}" in str(problem.value)


def test_plain_http_is_allowed_for_a_loopback_issuer_only() -> None:
    config = SsoConfig.model_validate({"providers": {"dev": {**OKTA, "issuer": "http://127.0.0.1:9000"}}})
    assert config.redirect_origins() == ("http://127.0.0.1:9000",)


def test_form_action_origins_cover_each_redirect_provider_once() -> None:
    config = SsoConfig.model_validate(
        {"providers": {"okta": OKTA, "okta2": {**OKTA, "client_id": "other"}, "saml": SAML}}
    )
    assert config.redirect_origins() == ("https://company.okta.com", "https://idp.example.org")
    assert not config.offers_sign_in_redirect  # no provider captured a domain: the page shows no SSO form


def test_mfa_policy_takes_only_the_three_levels() -> None:
    assert SsoConfig.model_validate({"mfa": "enforced"}).mfa == "enforced"
    with pytest.raises(ValidationError):
        SsoConfig.model_validate({"mfa": "required"})


# -- sealed state ----------------------------------------------------------------------------------------------------

KEY = MasterKey(secrets.token_bytes(32))


def test_a_sealed_value_opens_only_for_its_purpose_and_tenant() -> None:
    sealed = Sealer(KEY, "sso-flow", "acme").seal({"provider": "okta", "n": 1})
    assert Sealer(KEY, "sso-flow", "acme").open(sealed) == {"provider": "okta", "n": 1}
    assert Sealer(KEY, "sso-flow", "other").open(sealed) is None
    assert Sealer(KEY, "connect-state", "acme").open(sealed) is None
    assert Sealer(MasterKey(secrets.token_bytes(32)), "sso-flow", "acme").open(sealed) is None


def test_a_tampered_sealed_value_does_not_open() -> None:
    sealed = Sealer(KEY, "sso-flow", "acme").seal({"provider": "okta"})
    for position in (0, 5, len(sealed) // 2, len(sealed) - 1):
        flipped = "A" if sealed[position] != "A" else "B"
        assert Sealer(KEY, "sso-flow", "acme").open(sealed[:position] + flipped + sealed[position + 1 :]) is None


@given(st.text(max_size=300))
def test_anything_else_never_opens_and_never_raises(value: str) -> None:
    assert Sealer(KEY, "sso-flow", "acme").open(value) is None
