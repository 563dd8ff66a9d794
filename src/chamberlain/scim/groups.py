"""/Groups (RFC 7643 §4.2): a pushed group's displayName is a group name of the tenant's group mappings, so a
change of membership changes its members' roles (and revokes the grants carrying the old ones)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from chamberlain.scim.errors import UNIQUENESS, ScimError, invalid
from chamberlain.scim.filters import CORE_GROUP, lookup
from chamberlain.scim.resources import ResourceKind, meta, read_json, text_attribute
from chamberlain.scim.service import Provisioning
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.scim import ScimGroupRow

MAX_MEMBERS = 10_000


class _Group:
    """A group resource as a request states it."""

    def __init__(self, body: Any) -> None:
        if not isinstance(body, Mapping):
            raise invalid("a group must be a JSON object")
        display_name = text_attribute(body, "displayName", required=True, max_length=500)
        assert display_name is not None
        self.display_name = display_name
        self.external_id = text_attribute(body, "externalId", required=False, max_length=500)
        members = lookup(body, "members") or []
        if not isinstance(members, list) or len(members) > MAX_MEMBERS:
            raise invalid(f"members must be a list of at most {MAX_MEMBERS} members")
        values = [lookup(member, "value") if isinstance(member, Mapping) else None for member in members]
        if not all(isinstance(value, str) for value in values):
            raise invalid("each member must be an object with the user's id as its value")
        self.members = frozenset(str(value) for value in values)


def group_resource(provisioning: Provisioning, row: ScimGroupRow) -> dict[str, Any]:
    resource: dict[str, Any] = {"schemas": [CORE_GROUP], "id": row.id, "displayName": row.display_name}
    if row.external_id is not None:
        resource["externalId"] = row.external_id
    resource["members"] = [
        {"value": member, "$ref": f"{provisioning.base}/Users/{member}", "type": "User"} for member in row.members
    ]
    location = f"{provisioning.base}/Groups/{row.id}"
    resource["meta"] = meta("Group", location, row.created_at, row.updated_at, row.version)
    return resource


async def create_group(provisioning: Provisioning, request: Request) -> Response:
    group = _Group(await read_json(request))
    await _check_members(provisioning, group)
    await provisioning.record(
        "scim-group", after={"created": True, "display_name": group.display_name, "members": len(group.members)}
    )
    try:
        group_id = await provisioning.store.add_group(group.display_name, group.external_id, group.members)
    except AlreadyExists:
        raise _taken() from None
    await provisioning.refresh_roles(group.members)
    return await GROUPS.response(provisioning, group_id, 201)


async def delete_group(provisioning: Provisioning, request: Request) -> Response:
    row = await GROUPS.to_change(provisioning, request)
    await provisioning.record(
        f"scim-group:{row.id}", before={"display_name": row.display_name}, after={"deleted": True}
    )
    await provisioning.store.remove_group(row.id)
    await provisioning.refresh_roles(row.members)
    return Response(status_code=204)


async def _update(provisioning: Provisioning, row: ScimGroupRow, group: _Group) -> Response:
    await _check_members(provisioning, group)
    old = frozenset(row.members)
    renamed = group.display_name != row.display_name
    if renamed or group.members != old or group.external_id != row.external_id:
        before = {"display_name": row.display_name, "members": len(old)}
        after = {
            "display_name": group.display_name,
            "added": sorted(group.members - old),
            "removed": sorted(old - group.members),
        }
        await provisioning.record(f"scim-group:{row.id}", before=before, after=after)
        try:
            await provisioning.store.update_group(
                row.id, display_name=group.display_name, external_id=group.external_id, members=group.members
            )
        except AlreadyExists:
            raise _taken() from None
        # A renamed group maps to other roles for everyone in it; otherwise only those who came or went change.
        await provisioning.refresh_roles(old | group.members if renamed else old ^ group.members)
    return await GROUPS.response(provisioning, row.id)


async def _check_members(provisioning: Provisioning, group: _Group) -> None:
    unknown = group.members - await provisioning.store.provisioned(group.members)
    if unknown:
        raise invalid("a member is not a user provisioned in this tenant")


def _taken() -> ScimError:
    return ScimError(409, "a group of that displayName already exists", UNIQUENESS)


GROUPS: ResourceKind[ScimGroupRow, _Group] = ResourceKind(
    rows=lambda provisioning: provisioning.store.groups(),
    find=lambda provisioning, group_id: provisioning.store.group(group_id),
    missing="no such group",
    represent=group_resource,
    state=_Group,
    update=_update,
    extension_schemas=frozenset(),
)
