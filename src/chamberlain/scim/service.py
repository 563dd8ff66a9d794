"""What a SCIM change does besides storing attributes: audit records, roles from group memberships, and the
revocations of deprovisioning."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from starlette.requests import Request

from chamberlain.admin.users import revoke_grants, sign_out_everywhere
from chamberlain.audit.emit import keyed_hash
from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditUnavailable
from chamberlain.scim.errors import ScimError
from chamberlain.store.group_mappings import GroupMappingRepository
from chamberlain.store.scim import ScimRepository, scim_groups_of
from chamberlain.tenancy.tenant import Tenant
from chamberlain.web.request_id import request_id_of

ACTOR = Actor("service", "scim")


class Provisioning:
    """One request's view of its tenant for SCIM."""

    def __init__(self, tenant: Tenant, request: Request) -> None:
        self.tenant = tenant
        self.request = request
        self.store = ScimRepository(tenant.database, tenant.id)
        self.base = f"{tenant.issuer}/scim/v2"

    def username_reference(self, username: str) -> str:
        """A user name is personal data: records name an account by a keyed hash of it (as the admin API does)."""
        return "user-name:" + keyed_hash(self.tenant.audit_hash_key, username)[:16]

    async def record(
        self, target: str, *, before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None
    ) -> None:
        """Records the change before it is made; when a fail-closed record cannot be written, the change is refused
        (503), as for the admin API's changes."""
        event = AuditEvent(
            action=Action.ADMIN_CHANGE,
            outcome="success",
            tenant=self.tenant.id,
            actor=ACTOR,
            target=target,
            request_id=request_id_of(self.request.scope),
            details={"before": dict(before or {}), "after": dict(after or {}), "via": "scim"},
        )
        try:
            await self.tenant.audit.log.record_as_configured(event)
        except AuditUnavailable:
            raise ScimError(503, "the audit log cannot be written, so the change was refused") from None

    async def roles_for(self, user_id: str) -> tuple[str, ...]:
        """The roles the user's SCIM groups map to, with the tenant's default roles for federated users."""
        groups = await scim_groups_of(self.tenant.database, self.tenant.id, user_id)
        mapped = await GroupMappingRepository(self.tenant.database, self.tenant.id).roles_for(groups)
        return tuple(sorted({*mapped, *self.default_roles()}))

    def default_roles(self) -> tuple[str, ...]:
        """What every federated user has, whatever their groups (sso.default_roles)."""
        return tuple(sorted(set(self.tenant.config.sso.default_roles)))

    async def refresh_roles(self, user_ids: Collection[str]) -> None:
        """After a change of group memberships: a user whose roles change gets them, and loses the grants carrying
        the old ones (tokens stop working within seconds, as for an administrator's change)."""
        for user_id in sorted(user_ids):
            user = await self.tenant.users.get(user_id)
            if user is None:
                continue
            roles = await self.roles_for(user_id)
            if set(roles) == set(user.roles):
                continue
            await self.record(f"user:{user_id}", before={"roles": list(user.roles)}, after={"roles": list(roles)})
            await self.tenant.users.update_account(user_id, roles=roles)
            await revoke_grants(self.tenant, user_id, "roles_changed")

    async def deprovision(self, user_id: str, reason: str) -> None:
        """Disables the account first (no new sign-in), then ends every browser session, revokes every grant
        (refresh tokens, and the access tokens through the revocation feed) and withdraws every consent."""
        await self.tenant.users.update_account(user_id, disabled=True)
        await sign_out_everywhere(self.tenant, user_id, reason)
