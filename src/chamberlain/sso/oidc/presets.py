"""What each OIDC preset fills in: the quirks of the identity providers we know, so an admin writes only the issuer
and the client. Every value here is a default that the provider's configuration may override.

- generic: scopes `openid email profile`, groups claim `groups`.
- okta: scopes add `groups` (the claim's filter is set on Okta's authorization server); MFA also by
  `acr` urn:okta:loa:2fa:any, phr, phrh.
- entra: groups claim `groups` (group object ids); Entra sends `amr: ["pwd", "mfa"]`. Its `email` is used only with
  the optional claim `xms_edov: true` (add the optional claims `email` and `xms_edov` to the app registration).
  The groups overage needs the delegated Graph permission GroupMember.Read.All: add
  `https://graph.microsoft.com/GroupMember.Read.All` to scopes.
- google: Google sends no groups and no `amr`/`acr`; `hd` must be one of `hosted_domains`.
- auth0: groups claim `https://chamberlain/groups` (Auth0 requires namespaced custom claims: an Action adds it);
  MFA also by `acr` http://schemas.openid.net/pape/policies/2007/06/multi-factor.
- ping: MFA also by `acr` Multi_Factor (PingOne's policy name; change it to yours).
- onelogin: scopes add `groups`.

Every preset also counts MFA by the `amr` rule of sso/oidc/id_token.py (RFC 8176).

Quirks handled in the relying party: Entra's issuer is templated from `entra_tenant`, and its `groups` overage
(`_claim_names`/`_claim_sources`, or `hasgroups`) is resolved through Microsoft Graph; Google's `hd` claim must be one
of the configured hosted domains.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PresetDefaults:
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    groups_claim: str = "groups"
    mfa_values: tuple[str, ...] = ()


PRESETS: dict[str, PresetDefaults] = {
    "generic": PresetDefaults(),
    # Okta: the `groups` scope adds the claim (its filter is set on the authorization server); acr values from
    # Okta's step-up documentation.
    "okta": PresetDefaults(
        scopes=("openid", "email", "profile", "groups"), mfa_values=("urn:okta:loa:2fa:any", "phr", "phrh")
    ),
    "entra": PresetDefaults(),
    "google": PresetDefaults(),
    "auth0": PresetDefaults(
        groups_claim="https://chamberlain/groups",
        mfa_values=("http://schemas.openid.net/pape/policies/2007/06/multi-factor",),
    ),
    "ping": PresetDefaults(mfa_values=("Multi_Factor",)),
    "onelogin": PresetDefaults(scopes=("openid", "email", "profile", "groups")),
}

ENTRA_ISSUER = "https://login.microsoftonline.com/{tenant}/v2.0"
GRAPH_URL = "https://graph.microsoft.com"
