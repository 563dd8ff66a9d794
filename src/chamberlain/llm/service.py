"""The LLM proxy's process-wide parts, held by AppState: upstream pools, API keys, virtual keys, routers, prices.

Everything a request needs is in memory and keyed so that a configuration change (the refresher replaces a tenant's
config object) is picked up on the next request without rebuilding anything that did not change.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from chamberlain.cost.pricing import Pricing, PricingError
from chamberlain.cost.spend import Scope
from chamberlain.llm.routing import Router
from chamberlain.llm.upstream import ApiKeys, LlmUpstream
from chamberlain.llm.virtual_keys import VirtualKeys
from chamberlain.store.database import Database
from chamberlain.store.usage import UsageRepository
from chamberlain.tenancy.config import LlmConfig, LlmRoute
from chamberlain.tenancy.tenant import Tenant, tenant_issuer

if TYPE_CHECKING:
    from chamberlain.state import AppState

logger = logging.getLogger(__name__)


class LlmService:
    def __init__(self, shared: AppState) -> None:
        self._shared = shared
        settings = shared.settings
        self.virtual_keys = VirtualKeys(shared.master_key, lambda tenant: f"{tenant_issuer(settings, tenant)}/llm")
        self.api_keys = ApiKeys()
        self._upstreams: dict[str, LlmUpstream] = {}
        self._routers: dict[str, tuple[tuple[LlmRoute, ...], Router]] = {}
        self._prices: dict[Path, Pricing | PricingError] = {}

    def upstream(self, config: LlmConfig) -> LlmUpstream:
        upstream = self._upstreams.get(config.upstream_url)
        if upstream is None:
            upstream = self._upstreams[config.upstream_url] = LlmUpstream(config.upstream_url)
        return upstream

    def router(self, tenant: Tenant) -> Router:
        routes = tenant.config.llm.routes
        known = self._routers.get(tenant.id)
        if known is not None and known[0] is routes:
            return known[1]
        router = Router(routes)
        self._routers[tenant.id] = (routes, router)
        return router

    def pricing(self, tenant: Tenant) -> Pricing:
        """The tenant's prices: its `llm.pricing_file` over the built-in ones, else the built-in ones. Raises
        PricingError (naming the key, the file and the line) when the tenant's file is invalid.

        A file is read once, when a tenant's configuration first names it; an edited file is read again when the
        configuration names it anew (or the gateway restarts). A broken file is remembered as broken, not re-read on
        every request, and logged once."""
        path = tenant.config.llm.pricing_file
        if path is None:
            return self._shared.pricing
        loaded = self._prices.get(path)
        if loaded is None:
            try:
                loaded = Pricing.load(path)
            except PricingError as invalid:
                logger.error("tenant %s: llm.pricing_file: %s", tenant.id, invalid)
                loaded = invalid
            self._prices[path] = loaded
        if isinstance(loaded, PricingError):
            raise loaded
        return loaded

    async def refresh(self) -> None:
        """Called by the state refresher: virtual keys, and letting go of what no tenant configures any more."""
        await self.virtual_keys.refresh(self._shared.database)
        tenants = list(self._shared.tenants.values())
        for tenant in tenants:
            with contextlib.suppress(PricingError):  # logged by pricing(); said again on the tenant's requests
                self.pricing(tenant)
        configured = {(tenant.id, reference) for tenant in tenants for reference in tenant.config.llm.keys.values()}
        await self.api_keys.keep_only(configured)
        urls = {tenant.config.llm.upstream_url for tenant in tenants}
        for url in set(self._upstreams) - urls:
            await self._upstreams.pop(url).aclose()
        paths = {tenant.config.llm.pricing_file for tenant in tenants}
        for path in set(self._prices) - paths:
            del self._prices[path]

    async def aclose(self) -> None:
        await self.api_keys.aclose()
        for upstream in self._upstreams.values():
            await upstream.aclose()
        self._upstreams.clear()


class StoredSpend:
    """The usage store as the budget guard's starting point for a period (cost/budgets.py SpendSource)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def spend(self, tenant: str, scope: Scope, subject: str | None, start: datetime, end: datetime) -> Decimal:
        repository = UsageRepository(self._database, tenant)
        if scope == "user":
            return await repository.spend(start, end, user=subject)
        if scope == "team":
            return await repository.spend(start, end, team=subject)
        return await repository.spend(start, end)
