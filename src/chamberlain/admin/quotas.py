"""/quotas: the tenant's quotas (counts it may not exceed) and rate limits, with its current usage.

Every tenant's administrators can read them. Only the platform sets them: a tenant's own administrators raising
their limits would make them no limits at all. So PUT works on the default tenant's own API (whose administrators
are the platform's), and other tenants' quotas are set with PATCH /tenants/{id} there.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from chamberlain.admin.auth import Admin, Administrator
from chamberlain.admin.common import problems, write_config_sections
from chamberlain.admin.models import QuotasIn, QuotasOut, Usage
from chamberlain.admin.problems import ProblemError
from chamberlain.tenancy.tenant import Tenant

router = APIRouter(tags=["quotas"])
SECTIONS = ("quotas", "rate_limits")


@router.get("/quotas", response_model=QuotasOut, responses=problems(), summary="Get quotas, rate limits and usage")
async def get_quotas(admin: Admin) -> QuotasOut:
    return await quotas_out(admin)


@router.put(
    "/quotas",
    response_model=QuotasOut,
    responses=problems(409, 503),
    summary="Set quotas and rate limits",
    description="Platform administrators only (the default tenant's API); other tenants' quotas are set with "
    "PATCH /tenants/{id}. Refused when the configuration file sets them.",
)
async def put_quotas(body: QuotasIn, request: Request, admin: Admin) -> QuotasOut:
    tenant = admin.tenant
    if not admin.platform:
        raise ProblemError(403, "quotas and rate limits are set by the platform's administrators", kind="platform-only")
    if set_in_file(tenant):
        raise ProblemError(
            409,
            "the configuration file sets this tenant's quotas or rate limits: change them there",
            kind="configured-in-file",
        )
    await write_config_sections(admin, request, "quotas", SECTIONS, body.model_dump(mode="json", exclude_unset=True))
    return await quotas_out(admin)


def set_in_file(tenant: Tenant) -> bool:
    configured = tenant.settings.tenants.get(tenant.id)
    return configured is not None and bool(set(SECTIONS) & configured.model_fields_set)


async def quotas_out(admin: Administrator) -> QuotasOut:
    tenant = admin.tenant
    counts = await tenant.shared.tenant_store.counts(tenant.id)
    return QuotasOut(
        quotas=tenant.config.quotas,
        rate_limits=tenant.config.rate_limits,
        usage=Usage(users=counts["users"], clients=counts["clients"], servers=counts["servers"]),
        editable=admin.platform and not set_in_file(tenant),
    )
