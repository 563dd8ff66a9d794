"""/Users (RFC 7644 §3.3-§3.6): accounts of the tenant's users table; userName is the user name and `active` is
the opposite of `disabled`. Other attributes are kept as sent (scim_users). Deactivation and deletion revoke every
session, grant and consent of the user at once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.scim.errors import INVALID_VALUE, UNIQUENESS, ScimError, invalid
from chamberlain.scim.filters import CORE_USER, lookup
from chamberlain.scim.resources import ResourceKind, meta, read_json, text_attribute
from chamberlain.scim.schema import ENTERPRISE_USER, EXTENSION_SCHEMAS
from chamberlain.scim.service import Provisioning
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.scim import ScimUserRow

MAX_ATTRIBUTES_SIZE = 64 * 1024  # bytes of JSON
# Attributes with a home of their own, never kept among the others: `password` is never stored (people sign in
# through the IdP), `groups` is read-only (RFC 7643 §4.1.2: memberships change through /Groups).
_NOT_KEPT = frozenset({"schemas", "id", "meta", "username", "active", "externalid", "password", "groups"})
_USERNAME_CHARACTERS = set(range(0x20)) | {0x7F}


class _User:
    """A user resource as a request states it."""

    def __init__(self, body: Any) -> None:
        if not isinstance(body, Mapping):
            raise invalid("a user must be a JSON object")
        username = text_attribute(body, "userName", required=True, max_length=200)
        assert username is not None
        if username != username.strip() or any(ord(character) in _USERNAME_CHARACTERS for character in username):
            raise invalid("userName must not start or end with spaces or hold control characters")
        self.username = username
        self.active = _boolean(lookup(body, "active"))
        self.external_id = text_attribute(body, "externalId", required=False, max_length=500)
        self.attributes = {key: value for key, value in body.items() if key.lower() not in _NOT_KEPT}
        if len(json.dumps(self.attributes)) > MAX_ATTRIBUTES_SIZE:
            raise invalid("the user's attributes are too large")
        emails = lookup(self.attributes, "emails")
        if emails is not None and not (isinstance(emails, list) and all(isinstance(e, Mapping) for e in emails)):
            raise invalid("emails must be a list of objects")


def _boolean(value: Any) -> bool | None:
    """`active`; Entra sends it as the string "True" or "False"."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid("active must be a boolean", INVALID_VALUE)


def user_resource(provisioning: Provisioning, row: ScimUserRow) -> dict[str, Any]:
    extensions = [ENTERPRISE_USER for key in row.resource if key.lower() in EXTENSION_SCHEMAS]
    resource: dict[str, Any] = {"schemas": [CORE_USER, *extensions], "id": row.user_id}
    if row.external_id is not None:
        resource["externalId"] = row.external_id
    resource |= {"userName": row.username, **row.resource, "active": not row.disabled}
    location = f"{provisioning.base}/Users/{row.user_id}"
    resource["meta"] = meta("User", location, row.created_at, row.updated_at, row.version)
    return resource


async def create_user(provisioning: Provisioning, request: Request) -> Response:
    user = _User(await read_json(request))
    tenant = provisioning.tenant
    if await tenant.users.get_by_username(user.username) is not None:
        raise _taken()
    roles = provisioning.default_roles()  # in no group yet
    active = user.active is not False
    await provisioning.record(
        provisioning.username_reference(user.username), after={"created": True, "active": active, "roles": list(roles)}
    )
    try:
        user_id = await provisioning.store.add_user(
            user.username, disabled=not active, roles=roles, external_id=user.external_id, resource=user.attributes
        )
    except AlreadyExists:
        raise _taken() from None
    return await USERS.response(provisioning, user_id, 201)


async def delete_user(provisioning: Provisioning, request: Request) -> Response:
    """RFC 7644 §3.6: the user is gone; every way they were signed in ends first."""
    row = await USERS.to_change(provisioning, request)
    await provisioning.record(f"user:{row.user_id}", before={"active": not row.disabled}, after={"deleted": True})
    await provisioning.deprovision(row.user_id, "scim_deleted")
    await provisioning.tenant.users.remove(row.user_id)
    return Response(status_code=204)


async def _update(provisioning: Provisioning, row: ScimUserRow, user: _User) -> Response:
    """PUT (RFC 7644 §3.5.1) and PATCH: the attributes become those stated; an omitted `active` leaves it as it was."""
    active = (not row.disabled) if user.active is None else user.active
    before: dict[str, object] = {}
    after: dict[str, object] = {}
    if active != (not row.disabled):
        before["active"], after["active"] = not row.disabled, active
    if user.username != row.username:
        before["user_name"], after["user_name"] = "(previous)", "(changed)"  # personal data: only that it changed
    if user.external_id != row.external_id or user.attributes != row.resource:
        after["attributes_changed"] = True
    if after:
        await provisioning.record(f"user:{row.user_id}", before=before, after=after)
        try:
            await provisioning.store.update_user(
                row.user_id, username=user.username, external_id=user.external_id, resource=user.attributes
            )
        except AlreadyExists:
            raise _taken() from None
        if after.get("active") is False:
            await provisioning.deprovision(row.user_id, "scim_deactivated")
        elif after.get("active") is True:
            await provisioning.tenant.users.update_account(row.user_id, disabled=False)
    return await USERS.response(provisioning, row.user_id)


def _taken() -> ScimError:
    return ScimError(409, "a user of that userName already exists", UNIQUENESS)


USERS: ResourceKind[ScimUserRow, _User] = ResourceKind(
    rows=lambda provisioning: provisioning.store.users(),
    find=lambda provisioning, user_id: provisioning.store.user(user_id),
    missing="no such user",
    represent=user_resource,
    state=_User,
    update=_update,
    extension_schemas=EXTENSION_SCHEMAS,
)
