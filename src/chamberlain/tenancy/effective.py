"""A tenant's configuration in force: what the store holds, with each section the config file sets replacing it.

The file's part is `tenants.ID` in chamberlain.yaml and, for the default tenant, the top-level `roles:`, `llm:`,
`budgets:`, `dlp:` and `sso:` when the file sets them. Used by the running gateway (state.py) and by CLI commands
that enforce a tenant's quotas.
"""

from __future__ import annotations

from typing import Any

from chamberlain.settings import Settings
from chamberlain.store.database import Database
from chamberlain.store.tenants import TenantRepository
from chamberlain.tenancy.config import TenantConfig

# Top-level settings that are the default tenant's sections when the file sets them.
_DEFAULT_TENANT_SECTIONS = ("roles", "llm", "budgets", "dlp", "sso")


def from_file(settings: Settings, tenant_id: str) -> TenantConfig:
    configured = settings.tenants.get(tenant_id, TenantConfig())
    if tenant_id != settings.tenant:
        return configured
    given = {key: getattr(settings, key) for key in _DEFAULT_TENANT_SECTIONS if key in settings.model_fields_set}
    return configured.model_copy(update=given) if given else configured


def effective_config(settings: Settings, tenant_id: str, stored: dict[str, Any] | None) -> TenantConfig:
    """Raises pydantic.ValidationError when the stored part is invalid."""
    base = TenantConfig.model_validate(stored) if stored else TenantConfig()
    return base.overlaid_by(from_file(settings, tenant_id))


async def load_effective_config(database: Database, settings: Settings, tenant_id: str) -> TenantConfig:
    row = await TenantRepository(database).get(tenant_id)
    return effective_config(settings, tenant_id, row.config if row is not None else None)
