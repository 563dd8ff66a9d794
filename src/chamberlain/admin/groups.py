"""/groups: which roles the members of an IdP or directory group receive (Keycloak's group role mappings).

A group name may be an LDAP DN or contain '/', so it is the rest of the path (percent-encode what a URL cannot
carry as is)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from chamberlain.admin.auth import Admin
from chamberlain.admin.common import instant, problems, record_change
from chamberlain.admin.models import GroupList, GroupOut, GroupRoles
from chamberlain.admin.problems import ProblemError
from chamberlain.admin.users import check_roles_defined
from chamberlain.store.group_mappings import GroupMapping, GroupMappingRepository
from chamberlain.tenancy.tenant import Tenant

router = APIRouter(tags=["groups"])
GroupPath = Annotated[
    str, Path(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$", description="the group's name")
]


def repository(tenant: Tenant) -> GroupMappingRepository:
    # Built per request: a plain object over the shared engine, filtered on the tenant like every repository.
    return GroupMappingRepository(tenant.database, tenant.id)


@router.get("/groups", response_model=GroupList, responses=problems(), summary="List group role mappings")
async def list_groups(admin: Admin) -> GroupList:
    return GroupList(items=[group_out(mapping) for mapping in await repository(admin.tenant).list()])


@router.get("/groups/{group:path}", response_model=GroupOut, responses=problems(), summary="Get a group's roles")
async def get_group(group: GroupPath, admin: Admin) -> GroupOut:
    mapping = await repository(admin.tenant).get(group)
    if mapping is None:
        raise _not_found()
    return group_out(mapping)


@router.put(
    "/groups/{group:path}",
    response_model=GroupOut,
    responses=problems(503),
    summary="Set a group's roles",
    description="Replaces the roles the group's members receive; every role must be defined by the tenant.",
)
async def put_group(group: GroupPath, body: GroupRoles, request: Request, admin: Admin) -> GroupOut:
    tenant = admin.tenant
    roles = tuple(sorted(set(body.roles)))
    check_roles_defined(tenant, tuple(body.roles), "/roles")
    groups = repository(tenant)
    existing = await groups.get(group)
    if existing is not None and existing.roles == roles:
        return group_out(existing)
    await record_change(
        admin,
        request,
        target=f"group:{group}",
        before={"roles": list(existing.roles) if existing else []},
        after={"roles": list(roles)},
    )
    mapping = await groups.set_roles(group, roles)
    assert mapping is not None  # at least one role was set
    return group_out(mapping)


@router.delete(
    "/groups/{group:path}",
    status_code=204,
    response_class=Response,
    responses=problems(503),
    summary="Remove a group's mappings",
)
async def delete_group(group: GroupPath, request: Request, admin: Admin) -> Response:
    groups = repository(admin.tenant)
    existing = await groups.get(group)
    if existing is None:
        raise _not_found()
    await record_change(admin, request, target=f"group:{group}", before={"roles": list(existing.roles)}, after={})
    await groups.remove(group)
    return Response(status_code=204)


def group_out(mapping: GroupMapping) -> GroupOut:
    created = instant(mapping.created_at)
    return GroupOut(group=mapping.group, roles=list(mapping.roles), created_at=created)


def _not_found() -> ProblemError:
    return ProblemError(404, "no mappings for this group in this tenant")
