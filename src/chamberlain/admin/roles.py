"""/roles: the tenant's role document (the `enterprise_roles` format, with Chamberlain's extensions), as
`chamberlain roles import` stores it. Validated in full; unknown server names are reported, not fatal."""

from __future__ import annotations

from fastapi import APIRouter, Request

from chamberlain.admin.auth import Admin, Administrator
from chamberlain.admin.common import problems, write_config_sections
from chamberlain.admin.models import RolesOut
from chamberlain.admin.problems import ProblemError
from chamberlain.policy.roles import RolesDocument, check_servers
from chamberlain.tenancy.tenant import Tenant

router = APIRouter(tags=["roles"])


@router.get("/roles", response_model=RolesOut, responses=problems(), summary="Get the role document")
async def get_roles(admin: Admin) -> RolesOut:
    return roles_out(admin.tenant, admin.tenant.roles)


@router.put(
    "/roles",
    response_model=RolesOut,
    responses=problems(409, 503),
    summary="Replace the role document",
    description="Takes effect within a second on every replica. Refused when the configuration file sets the "
    "roles (it would win), or when the caller would lose administrative functions by it.",
)
async def put_roles(document: RolesDocument, request: Request, admin: Admin) -> RolesOut:
    await replace_roles(admin, request, document)
    return roles_out(admin.tenant, document)


async def replace_roles(admin: Administrator, request: Request, document: RolesDocument) -> None:
    """Checks the replacement may be made, records it, stores it and applies it (also the console's)."""
    check_replaceable(admin, document)
    written = document.model_dump(mode="json", exclude_unset=True)
    await write_config_sections(admin, request, "roles", ("roles",), {"roles": written})


def check_replaceable(admin: Administrator, document: RolesDocument) -> None:
    """Refuses (409) when the configuration file sets the roles, or the caller would lose administration."""
    tenant = admin.tenant
    if roles_from_file(tenant):
        raise ProblemError(
            409, "the configuration file sets this tenant's roles: change them there", kind="configured-in-file"
        )
    administrative = {name for name, role in document.enterprise_roles.items() if role.administrative_functions}
    if not administrative & set(admin.user.roles):
        raise ProblemError(
            409,
            "with this document you would no longer have administrative functions; keep one of your roles "
            "administrative",
            kind="self-lockout",
        )


def roles_from_file(tenant: Tenant) -> bool:
    settings = tenant.settings
    if tenant.id == settings.tenant and "roles" in settings.model_fields_set:
        return True
    configured = settings.tenants.get(tenant.id)
    return configured is not None and "roles" in configured.model_fields_set


def roles_out(tenant: Tenant, document: RolesDocument) -> RolesOut:
    from_file = roles_from_file(tenant)
    if from_file:
        source = "configuration file"
    elif tenant.config.roles is None:
        source = "built-in default"
    else:
        source = "stored"
    return RolesOut(
        document=document,
        source=source,
        editable=not from_file,
        administrative_roles=sorted(
            name for name, role in document.enterprise_roles.items() if role.administrative_functions
        ),
        warnings=check_servers(document, tenant.resources),
    )
