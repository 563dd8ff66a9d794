"""Whether a sign-in proved enough: Chamberlain enforces MFA itself rather than trusting the IdP's configuration.

The level required is the strictest of the tenant's `sso.mfa` and the `mfa` of the roles the person holds (roles
document): `off`, `optional`, `enforced`. `enforced` needs proof of a second factor, from the IdP (OIDC `amr`/`acr`,
SAML AuthnContextClassRef, judged by the protocol modules) or from a local factor asked for here (step-up).
`optional` asks for the local factor of those who enrolled one and whose IdP did not prove a second factor.
"""

from __future__ import annotations

from enum import Enum

from chamberlain.policy.roles import MFA_LEVELS
from chamberlain.sso.identity import FederatedIdentity
from chamberlain.store.users import User
from chamberlain.tenancy.tenant import Tenant


class SecondFactor(Enum):
    PROVEN = "proven"  # by the IdP, or not required
    STEP_UP = "step_up"  # ask for the user's local factor
    MISSING = "missing"  # required, and the user has no local factor: refuse


def required_level(app: Tenant, roles: tuple[str, ...]) -> str:
    tenant_floor = app.config.sso.mfa
    role_level = app.policy.profile(roles).mfa
    return max(tenant_floor, role_level, key=MFA_LEVELS.index)


def second_factor(app: Tenant, user: User, identity: FederatedIdentity) -> SecondFactor:
    level = required_level(app, user.roles)
    if identity.mfa or level == "off":
        return SecondFactor.PROVEN
    enrolled = user.totp_secret is not None
    if level == "optional":
        return SecondFactor.STEP_UP if enrolled else SecondFactor.PROVEN
    return SecondFactor.STEP_UP if enrolled else SecondFactor.MISSING
