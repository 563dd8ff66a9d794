"""One tenant's own settings: roles, sessions, quotas, rate limits, the LLM proxy, budgets, data protection and SSO.

Written under `tenants: {ID: …}` in chamberlain.yaml, or stored in the database by the admin API and
`chamberlain roles import` (the `tenants.config` column). Where both set a section, the file's wins.
The default tenant also takes the top-level `roles:`, `login:`, `llm:` and `budgets:` settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Self

from limits import parse as parse_rate_limit
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from chamberlain.cost.budgets import BudgetRule
from chamberlain.dlp.config import DlpConfig
from chamberlain.gateway.server_config import VaultReference
from chamberlain.net.hosts import check_off_machine_url
from chamberlain.policy.roles import RolesDocument
from chamberlain.sso.config import SsoConfig

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


def _upstream_url(url: str) -> str:
    # The upstream gets the tenant's API key in a header: never in the clear off this machine.
    return check_off_machine_url(url, query=False).rstrip("/")


ModelId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/\-]*$")]
KeyName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class LlmRoute(_Section):
    """A routing rule: a request for `model` (a real id or an alias) is served by `to` when every condition given
    holds. Rules are tried in order and the first that matches wins; a request no rule matches keeps its model."""

    model: ModelId
    to: ModelId
    max_input_tokens: int | None = Field(None, ge=0, description="the request's estimated input tokens at most")
    tools: bool | None = Field(None, description="true: only requests offering tools; false: only without")
    roles: tuple[str, ...] | None = Field(None, description="only callers holding one of these roles")


class LlmConfig(_Section):
    """The LLM proxy (/v1/messages): where requests go, with which API key, and how models are routed."""

    upstream_url: Annotated[str, AfterValidator(_upstream_url)] = "https://api.anthropic.com"
    # Upstream API keys by name, each a vault secret of this tenant ("SOURCE/NAME", bound to the upstream "llm").
    keys: dict[KeyName, VaultReference] = Field(default_factory=dict)
    team_keys: dict[str, KeyName] = Field(default_factory=dict, description="team -> key name")
    default_key: KeyName | None = Field(None, description="the key of callers whose team has none")
    # A caller's team: the first team, in this order, that lists one of the caller's roles.
    teams: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="team -> roles")
    routes: tuple[LlmRoute, ...] = ()
    pricing_file: Path | None = Field(None, description="prices overriding the built-in pricing.yaml")
    timeout: float = Field(600.0, gt=0, le=3600, description="seconds for the answer to begin, and between events")
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)

    @model_validator(mode="after")
    def _key_names_exist(self) -> Self:
        named = {f"team_keys.{team}": name for team, name in self.team_keys.items()}
        if self.default_key is not None:
            named["default_key"] = self.default_key
        for where, name in named.items():
            if name not in self.keys:
                raise ValueError(f"{where}: no key named {name!r} in llm.keys")
        return self


class TenantConfig(_Section):
    name: str | None = Field(None, min_length=1, max_length=200)
    roles: RolesDocument | None = None
    sessions: SessionPolicy = SessionPolicy()
    quotas: Quotas = Quotas()
    rate_limits: RateLimits = RateLimits()
    llm: LlmConfig = LlmConfig()
    # Spend limits per user, team or tenant and period (cost/budgets.py), held by the LLM proxy before forwarding.
    budgets: tuple[BudgetRule, ...] = ()
    dlp: DlpConfig = DlpConfig()
    # Identity providers, domain capture and the MFA floor (sso/config.py).
    sso: SsoConfig = SsoConfig()

    def overlaid_by(self, file_config: TenantConfig) -> TenantConfig:
        """This (stored) config with every section the file sets replaced by the file's."""
        return self.model_copy(update={key: getattr(file_config, key) for key in file_config.model_fields_set})
