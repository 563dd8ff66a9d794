"""Just-in-time provisioning: the local account a federated identity signs in as, with the roles its groups map to.

The first sign-in of an IdP subject creates the account (named by the email the IdP asserted, else
`provider:subject`) and links the subject to it (store/federated_identities.py); later sign-ins find it by the link,
never by the name, so an IdP cannot take over an account by asserting someone else's email. The one exception is an
account of the same name whose email domain the provider has captured: the provider is the only way into such an
account (local passwords are refused there), so linking it is what the administrator asked for when capturing the
domain; SCIM-provisioned accounts are linked this way on their first sign-in.

Roles are recomputed at every sign-in from the IdP's groups (and those SCIM pushed for the account)
through the tenant's group mappings, plus `sso.default_roles`: the IdP is the source of truth, as Keycloak's
"force" sync mode. When they changed, the user's grants are revoked (tokens with the old roles stop working) and the
new session carries the new roles (sessions/browser.py rotates others on their next use).
"""

from __future__ import annotations

from dataclasses import dataclass

from chamberlain.admin.users import revoke_grants
from chamberlain.policy.quotas import check_can_add
from chamberlain.sso.identity import FederatedIdentity, SignInRefused
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.federated_identities import FederatedIdentityRepository
from chamberlain.store.group_mappings import GroupMappingRepository
from chamberlain.store.scim import scim_groups_of
from chamberlain.store.users import User
from chamberlain.tenancy.tenant import Tenant

_MAX_USERNAME = 200  # users.username


@dataclass(frozen=True)
class Provisioned:
    user: User
    created: bool
    previous_roles: tuple[str, ...] | None  # None when the roles did not change


async def provision(app: Tenant, identity: FederatedIdentity) -> Provisioned:
    """The identity's account with its roles as now mapped; SignInRefused when it may not sign in."""
    links = FederatedIdentityRepository(app.database, app.id)
    user_id = await links.user_of(identity.provider, identity.subject)
    created = False
    if user_id is not None:
        user = await app.users.get(user_id)
        if user is None:
            raise SignInRefused("account_missing", "Your account could not be found; ask an administrator.")
    else:
        user, created = await _first_sign_in(app, links, identity)
    if user.disabled:
        raise SignInRefused("user_disabled", "Your account is disabled. Ask an administrator to enable it.")
    # Groups SCIM pushed for the account (store/scim.py) count with the IdP's own.
    groups = identity.groups + await scim_groups_of(app.database, app.id, user.id)
    roles = await mapped_roles(app, groups)
    previous = None
    if roles != user.roles:
        previous = user.roles
        updated = await app.users.update_account(user.id, roles=roles)
        user = updated if updated is not None else user
        if not created:
            await revoke_grants(app, user.id, "roles_changed")
    await links.record_login(identity.provider, identity.subject)
    await app.users.record_successful_login(user.id)
    return Provisioned(user, created, previous)


async def mapped_roles(app: Tenant, groups: tuple[str, ...]) -> tuple[str, ...]:
    mapped = await GroupMappingRepository(app.database, app.id).roles_for(groups)
    return tuple(sorted(set(mapped) | set(app.config.sso.default_roles)))


async def _first_sign_in(
    app: Tenant, links: FederatedIdentityRepository, identity: FederatedIdentity
) -> tuple[User, bool]:
    username = (identity.email or f"{identity.provider}:{identity.subject}").strip().lower()
    if len(username) > _MAX_USERNAME:
        raise SignInRefused("username_too_long", "Your identity provider sent a name too long for an account here.")
    existing = await app.users.get_by_username(username)
    if existing is not None:
        if not _captured_by(app, identity.provider, username):
            raise SignInRefused(
                "account_exists",
                "An account with your name already exists here and is not linked to this identity provider. "
                "Ask an administrator.",
            )
        await _link(links, identity, existing.id)
        return existing, False
    if not app.config.sso.jit:
        raise SignInRefused("not_provisioned", "You have no account here yet. Ask an administrator for access.")
    refusal = await check_can_add(app.shared.tenant_store, app.id, app.config.quotas, "users")
    if refusal is not None:
        raise SignInRefused(
            "quota_exceeded", "This organisation has no room for another account; tell an administrator."
        )
    try:
        user = await app.users.add(username, None, ())
    except AlreadyExists:  # a concurrent first sign-in of the same person
        raced = await app.users.get_by_username(username)
        if raced is None:
            raise SignInRefused("account_exists", "Your account could not be created; please try again.") from None
        user = raced
    await _link(links, identity, user.id)
    return user, True


async def _link(links: FederatedIdentityRepository, identity: FederatedIdentity, user_id: str) -> None:
    if not await links.link(identity.provider, identity.subject, user_id):
        linked = await links.user_of(identity.provider, identity.subject)
        if linked != user_id:  # a concurrent sign-in linked it to another account: never merge silently
            raise SignInRefused("account_conflict", "Your account could not be linked; ask an administrator.")


def _captured_by(app: Tenant, provider: str, username: str) -> bool:
    found = app.config.sso.provider_for_email(username)
    return found is not None and found[0] == provider
