"""A SAML 2.0 identity provider of a tenant (`sso.providers.NAME` with `kind: saml`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from chamberlain.sso.common_config import ProviderBase


class SamlProviderConfig(ProviderBase):
    kind: Literal["saml"] = "saml"
    idp_entity_id: str = Field(min_length=1, max_length=1000)
    sso_url: str = Field(min_length=1, max_length=2000)  # the IdP's SingleSignOnService (HTTP-Redirect binding)
    certificates: tuple[str, ...] = Field(min_length=1)  # the IdP's signing certificates (PEM or base64 DER)
    groups_attribute: str = "groups"
    email_attribute: str = "email"
    name_attribute: str = "displayName"
    # Refuse assertions sent in the clear (SAML Core §2.3.4 <EncryptedAssertion>, to our metadata's encryption key).
    want_assertions_encrypted: bool = False
