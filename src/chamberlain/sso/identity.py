"""What every sign-in through an identity provider comes down to, whatever the protocol.

OIDC (sso/oidc/), SAML (sso/saml/) and LDAP (sso/ldap/) each turn their protocol's answer into a FederatedIdentity,
or refuse with SignInRefused; sso/provisioning.py turns the identity into a local account with mapped roles, and
sso/mfa.py decides whether it proved enough. The web flow (web/sso.py) shows refusals as pages and audits them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FederatedIdentity:
    provider: str  # the provider's name in the tenant's `sso.providers`
    subject: str  # the IdP's stable id: OIDC `sub`, SAML NameID, the LDAP entry's DN
    email: str | None
    display_name: str | None
    groups: tuple[str, ...]  # as the IdP names them: claim values, attribute values, DNs
    mfa: bool  # the IdP proved a second factor (OIDC `amr`/`acr`, SAML AuthnContextClassRef)
    authn_context: tuple[str, ...] = ()  # the evidence as sent (amr values, acr, AuthnContextClassRef): for the audit


class SignInRefused(Exception):
    """The IdP's answer is not acceptable. `reason` is a short code for the audit log and metrics
    (`id_token_issuer`, `saml_signature`, ...); `message` is what the person sees. Neither holds a token or secret."""

    def __init__(self, reason: str, message: str, *, status_code: int = 403) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status_code = status_code


class IdentityProviderUnavailable(SignInRefused):
    """The IdP (or directory) could not be reached or answered with an error: a 502 page, never a 500."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message, status_code=502)
