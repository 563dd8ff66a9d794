"""/tenants: the platform's tenants (Keycloak's realms), on the default tenant's admin API only.

A tenant's own administrators never see this resource (on their API it does not exist: 404). Creating a tenant
can create its first administrator too: the new tenant is its own issuer, with nobody able to sign in until then.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from chamberlain.admin.auth import Administrator, PlatformAdmin
from chamberlain.admin.common import instant, location, problems, record_change, stored_config, username_reference
from chamberlain.admin.models import TenantCreate, TenantCreated, TenantList, TenantOut, TenantUpdate
from chamberlain.admin.problems import ProblemError, invalid_body_field
from chamberlain.identity.passwords import PasswordPolicyError, hash_password
from chamberlain.policy.roles import DEFAULT_ROLES
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.tenants import TenantRow
from chamberlain.store.users import UserRepository
from chamberlain.tenancy.config import TenantConfig
from chamberlain.tenancy.tenant import tenant_issuer

router = APIRouter(tags=["tenants"])
TenantIdPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="the tenant's id")]


@router.get("/tenants", response_model=TenantList, responses=problems(), summary="List tenants (platform)")
async def list_tenants(admin: PlatformAdmin) -> TenantList:
    rows = await admin.tenant.shared.tenant_store.list()
    return TenantList(items=[tenant_out(admin, row) for row in rows])


@router.post(
    "/tenants",
    response_model=TenantCreated,
    status_code=201,
    responses=problems(409, 503),
    summary="Create a tenant (platform)",
)
async def create_tenant(
    body: TenantCreate, request: Request, response: Response, admin: PlatformAdmin
) -> TenantCreated:
    store = admin.tenant.shared.tenant_store
    if body.id == admin.tenant.settings.tenant or await store.get(body.id) is not None:
        raise ProblemError(409, "a tenant with that id already exists", kind="already-exists")
    config = body.config or TenantConfig()
    stored = config.model_dump(mode="json", exclude_unset=True) if body.config is not None else None
    password_hash: str | None = None
    initial = body.initial_admin
    if initial is not None:
        roles = config.roles or DEFAULT_ROLES
        administrative = {name for name, role in roles.enterprise_roles.items() if role.administrative_functions}
        if not administrative & set(initial.roles):
            raise invalid_body_field(
                "/initial_admin/roles", "none of these roles has administrative_functions in the tenant"
            )
        try:
            password_hash = await asyncio.to_thread(hash_password, initial.password.get_secret_value())
        except PasswordPolicyError as problem:
            raise invalid_body_field("/initial_admin/password", str(problem)) from None
    name = body.name or body.id
    after: dict[str, Any] = {"name": name, "config": stored}
    if initial is not None:
        after["initial_admin"] = {"user": username_reference(admin, initial.username), "roles": initial.roles}
    await record_change(admin, request, target=f"tenant:{body.id}", after=after)
    try:
        row = await store.create(body.id, name, stored)
    except AlreadyExists:
        raise ProblemError(409, "a tenant with that id already exists", kind="already-exists") from None
    initial_admin_id = None
    if initial is not None and password_hash is not None:
        user = await UserRepository(admin.tenant.database, body.id).add(
            initial.username, password_hash, tuple(dict.fromkeys(initial.roles)), must_change_password=True
        )
        initial_admin_id = user.id
    await admin.tenant.shared.refresh()  # the new issuer answers at once in this process
    response.headers["Location"] = location(request, f"/tenants/{body.id}")
    return TenantCreated(**dict(tenant_out(admin, row)), initial_admin_id=initial_admin_id)


@router.get("/tenants/{tenant_id}", response_model=TenantOut, responses=problems(), summary="Get a tenant (platform)")
async def get_tenant(tenant_id: TenantIdPath, admin: PlatformAdmin) -> TenantOut:
    row = await admin.tenant.shared.tenant_store.get(tenant_id)
    if row is None:
        raise _not_found()
    return tenant_out(admin, row)


@router.patch(
    "/tenants/{tenant_id}",
    response_model=TenantOut,
    responses=problems(409, 503),
    summary="Rename a tenant or replace its stored configuration (platform)",
    description="`config` replaces the stored configuration as a whole (roles, sessions, quotas, rate limits); "
    "sections the configuration file sets still win over it.",
)
async def update_tenant(
    tenant_id: TenantIdPath,
    body: TenantUpdate,
    request: Request,
    admin: PlatformAdmin,
) -> TenantOut:
    store = admin.tenant.shared.tenant_store
    row = await store.get(tenant_id)
    if row is None:
        raise _not_found()
    if body.name is None and body.config is None:
        return tenant_out(admin, row)
    config = body.config.model_dump(mode="json", exclude_unset=True) if body.config is not None else row.config
    if tenant_id == admin.tenant.id and body.config is not None:
        roles = body.config.roles or DEFAULT_ROLES
        if not {name for name, role in roles.enterprise_roles.items() if role.administrative_functions} & set(
            admin.user.roles
        ):
            raise ProblemError(
                409, "with this configuration you would no longer have administrative functions", kind="self-lockout"
            )
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if body.name is not None and body.name != row.name:
        before["name"], after["name"] = row.name, body.name
    if body.config is not None:
        before["config"], after["config"] = row.config, config
    await record_change(admin, request, target=f"tenant:{tenant_id}", before=before, after=after)
    await store.set_config(tenant_id, config, name=body.name)
    await admin.tenant.shared.refresh()
    updated = await store.get(tenant_id)
    if updated is None:
        raise _not_found()
    return tenant_out(admin, updated)


def tenant_out(admin: Administrator, row: TenantRow) -> TenantOut:
    issuer = tenant_issuer(admin.tenant.settings, row.id)
    created = instant(row.created_at)
    return TenantOut(
        id=row.id,
        name=row.name,
        issuer=issuer,
        admin_api=f"{issuer}/admin/api",
        created_at=created,
        config=stored_config(row.config),
    )


def _not_found() -> ProblemError:
    return ProblemError(404, "no such tenant")
