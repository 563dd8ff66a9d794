"""Count quotas: how many users, clients and servers a tenant may have (`Quotas` in tenancy/config.py).

Checked where one is created (the admin API, the CLI, dynamic client registration) before the insert. The check and
the insert are separate statements, so creations racing each other can overshoot a quota by the number running at
once; creations are administrative and rare, and a quota is a budget, not a security boundary. The daily request
quota (`requests_per_day`) is a rate: policy/rate_limits.py counts it with the request limits.
"""

from __future__ import annotations

from typing import Literal

from chamberlain.store.tenants import TenantRepository
from chamberlain.tenancy.config import Quotas

QuotaKind = Literal["users", "clients", "servers"]

_SINGULAR: dict[QuotaKind, str] = {"users": "user", "clients": "client", "servers": "server"}


async def check_can_add(tenants: TenantRepository, tenant_id: str, quotas: Quotas, kind: QuotaKind) -> str | None:
    """None when the tenant may have one more `kind`; otherwise the refusal, as a sentence for the administrator
    ("tenant acme has reached its quota of 5 servers"). No query when the quota is unset (unlimited)."""
    limit: int | None = getattr(quotas, kind)
    if limit is None:
        return None
    if limit > 0:
        counts = await tenants.counts(tenant_id)
        if counts[kind] < limit:
            return None
    noun = _SINGULAR[kind] if limit == 1 else kind
    return f"tenant {tenant_id} has reached its quota of {limit} {noun}"
