"""A tenant's single sign-on: identity providers, the MFA policy, and what federated users get.

```yaml
sso:
  mfa: enforced            # off | optional | enforced: the tenant's floor; a role's `mfa` can only raise it
  default_roles: []        # roles every federated user has besides those their groups map to
  providers:
    okta: {kind: oidc, preset: okta, issuer: https://company.okta.com, client_id: ..., client_secret: sso/okta,
           domains: [company.com]}
    corp: {kind: saml, idp_entity_id: ..., sso_url: ..., certificates: [...], domains: [corp.example]}
    ad:   {kind: ldap, url: ldaps://dc.corp:636, bind_dn: ..., bind_password: sso/ad, user_base: ..., ...}
```
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from chamberlain.net.hosts import origin
from chamberlain.policy.roles import Mfa
from chamberlain.sso.common_config import PROVIDER_NAME_PATTERN
from chamberlain.sso.ldap.config import LdapProviderConfig
from chamberlain.sso.oidc.config import OidcProviderConfig
from chamberlain.sso.saml.config import SamlProviderConfig

ProviderName = Annotated[str, StringConstraints(pattern=PROVIDER_NAME_PATTERN)]
ProviderConfig = Annotated[OidcProviderConfig | SamlProviderConfig | LdapProviderConfig, Field(discriminator="kind")]


class SsoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mfa: Mfa = "off"
    default_roles: tuple[str, ...] = ()
    # Create accounts on first sign-in (just in time); false: only accounts that exist (SCIM, admin) may sign in.
    jit: bool = True
    providers: dict[ProviderName, ProviderConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _each_domain_once(self) -> Self:
        owners: dict[str, str] = {}
        for name, provider in self.providers.items():
            for domain in provider.domains:
                if domain in owners:
                    raise ValueError(
                        f"providers.{name}: the domain {domain!r} is already captured by {owners[domain]!r}"
                    )
                owners[domain] = name
        return self

    @property
    def offers_sign_in_redirect(self) -> bool:
        """Whether the sign-in page offers "Continue with single sign-on" (an OIDC or SAML provider has domains)."""
        return any(provider.kind != "ldap" and provider.domains for provider in self.providers.values())

    def redirect_origins(self) -> tuple[str, ...]:
        """Origins a sign-in form may end at (CSP form-action applies to the redirects after a submission): each
        OIDC provider's issuer, each SAML provider's SSO endpoint. The IdPs we know serve their authorization
        endpoint at their issuer's origin."""
        urls = [
            provider.issuer if isinstance(provider, OidcProviderConfig) else provider.sso_url
            for provider in self.providers.values()
            if not isinstance(provider, LdapProviderConfig)
        ]
        return tuple(dict.fromkeys(origin(url) for url in urls))

    def provider_for_email(self, email: str) -> tuple[str, ProviderConfig] | None:
        """The provider that captured the email's domain (home-realm discovery), if any."""
        _, at, domain = email.strip().rpartition("@")
        if not at:
            return None
        domain = domain.lower().rstrip(".")
        for name, provider in self.providers.items():
            if domain in provider.domains:
                return name, provider
        return None
