"""One tenant's own settings: roles, session timeouts, quotas and rate limits.

Written under `tenants: {ID: …}` in chamberlain.yaml, or stored in the database by the admin API and
`chamberlain roles import` (the `tenants.config` column). Where both set a section, the file's wins.
The default tenant also takes the top-level `roles:` and `login:` settings.
"""

from __future__ import annotations

import re
from typing import Annotated

from limits import parse as parse_rate_limit
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from chamberlain.policy.roles import RolesDocument

TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_tenant_id(value: str) -> str:
    if not TENANT_ID.fullmatch(value):
        raise ValueError(f"invalid tenant id {value!r}: use 1-63 of lower-case letters, digits and '-'")
    return value


def _rate_limit(value: str) -> str:
    # The `limits` library's notation: "100/minute", "10 per second", "1000/day;50/minute".
    try:
        parse_rate_limit(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit (write it like '600/minute' or '10 per second')") from None
    return value


_MAX_COUNT = 10**12
TenantId = Annotated[str, AfterValidator(check_tenant_id)]
RateLimit = Annotated[str, AfterValidator(_rate_limit)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionPolicy(_Section):
    """Browser sessions. Unset values fall back to `login.session_ttl` and `login.session_absolute_ttl`."""

    idle_timeout: int | None = Field(None, ge=60, le=7 * 86_400, description="seconds, when no role sets one")
    absolute_timeout: int | None = Field(None, ge=60, le=30 * 86_400, description="seconds")


class Quotas(_Section):
    """Counts a tenant may not exceed; None is unlimited."""

    # Bounded so every value fits the audit log's JSON (64-bit integers) and means something.
    servers: int | None = Field(None, ge=0, le=_MAX_COUNT)
    clients: int | None = Field(None, ge=0, le=_MAX_COUNT)
    users: int | None = Field(None, ge=0, le=_MAX_COUNT)
    requests_per_day: int | None = Field(None, ge=0, le=_MAX_COUNT, description="proxied requests per UTC day")


class RateLimits(_Section):
    """Request rates (and, for the LLM proxy, token rates) in the `limits` notation; None is unlimited."""

    per_user: RateLimit | None = None
    per_client: RateLimit | None = None
    per_tenant: RateLimit | None = None
    llm_tokens_per_user: RateLimit | None = None
    llm_tokens_per_tenant: RateLimit | None = None


class TenantConfig(_Section):
    name: str | None = Field(None, min_length=1, max_length=200)
    roles: RolesDocument | None = None
    sessions: SessionPolicy = SessionPolicy()
    quotas: Quotas = Quotas()
    rate_limits: RateLimits = RateLimits()

    def overlaid_by(self, file_config: TenantConfig) -> TenantConfig:
        """This (stored) config with every section the file sets replaced by the file's."""
        return self.model_copy(update={key: getattr(file_config, key) for key in file_config.model_fields_set})
