"""Everything a running gateway holds: the store, keys, caches, the services built on them, and its tenants.

Request handlers read immutable snapshots (key ring, server tables, tenant configs) and in-memory sets
(revocations); a background task keeps those in step with the store, so changes made by the CLI, the admin API or
another replica arrive within seconds. Per-tenant parts live in tenancy/tenant.py.

The credential vault is built once here: its key-encryption key ring from `vault:` (by default derived from the
master key, so a fresh install needs nothing new), and its backend: the envelope store in the database, or OpenBao
(KV v2 for the secrets, transit as the key-encryption key) when `vault.openbao` is set; that connection is opened
in `start` and its token revoked in `close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from pydantic import ValidationError

from chamberlain.audit.emit import keyed_hash_key
from chamberlain.audit.service import AuditService
from chamberlain.cost.alerts import vault_secrets
from chamberlain.cost.budgets import BudgetGuard, BudgetRule
from chamberlain.cost.pricing import Pricing
from chamberlain.cost.recorder import UsageRecorder
from chamberlain.crypto.master_key import MasterKey, load_master_key
from chamberlain.crypto.signing_keys import KeyRing, load_signing_key
from chamberlain.dlp.alerts import vault_secrets as dlp_vault_secrets
from chamberlain.dlp.compliance import retention_days
from chamberlain.gateway.activity import ActivityMonitor
from chamberlain.gateway.events import EventBus
from chamberlain.gateway.sessions import SessionBinder
from chamberlain.gateway.upstream import Upstream
from chamberlain.identity.password_change import PasswordChangeTickets
from chamberlain.llm.service import LlmService, StoredSpend
from chamberlain.net.ssrf import AddressPolicy, Resolver, SystemResolver
from chamberlain.net.webhooks import AlertSender
from chamberlain.oauth.cimd import ClientMetadataDocumentResolver
from chamberlain.oauth.client_keys import ClientKeySets
from chamberlain.oauth.revocation_fanout import FeedCursor, RevocationFanout
from chamberlain.oauth.revocation_list import RevocationList
from chamberlain.policy.rate_limits import RateLimiter
from chamberlain.policy.roles import check_servers
from chamberlain.settings import Settings
from chamberlain.sso.oidc.keys import IssuerKeys
from chamberlain.sso.registry import ProviderRegistry
from chamberlain.store import keys as key_store
from chamberlain.store.database import Database, create_database, pending_migrations
from chamberlain.store.errors import store_unavailable
from chamberlain.store.grants import revocations_since
from chamberlain.store.seen_identifiers import purge_expired
from chamberlain.store.servers import Server, configured_servers, merge_servers
from chamberlain.store.tenants import TenantRepository, TenantRow
from chamberlain.tenancy.config import TenantConfig
from chamberlain.tenancy.effective import effective_config
from chamberlain.tenancy.tenant import ProtectedResource, Tenant
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import KekRing, load_kek_ring
from chamberlain.vault.leak_guard import LeakGuard
from chamberlain.vault.service import Vault
from chamberlain.vault.storage import open_vault_storage

if TYPE_CHECKING:
    from chamberlain.vault.openbao import OpenBaoConnection

logger = logging.getLogger(__name__)
REFRESH_INTERVAL = 1.0  # seconds between pulls of what other processes changed (keys, tenants, servers)
# Revocations are pulled more often: with Redis down (no announcements), one replica's revocation still reaches the
# others within a second, the poll's period plus the query.
REVOCATION_POLL_INTERVAL = 0.5
PURGE_INTERVAL = 300.0  # seconds between purges of expired one-time identifiers (store/seen_identifiers.py)


class NotInitialised(Exception):
    pass


@dataclass
class AppState:
    settings: Settings
    database: Database
    master_key: MasterKey
    keyring: KeyRing
    resolver: Resolver
    builtin_upstream: Upstream  # the demo server, answering in-process
    revocations: RevocationList = field(default_factory=RevocationList)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    _refresher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        settings = self.settings
        registration = settings.registration
        # Client-chosen URLs (metadata documents, jwks_uri) are fetched only from public addresses, unless a
        # developer explicitly allows private networks.
        fetch_policy = AddressPolicy(
            allow_loopback=registration.allow_private_networks,
            allow_private=registration.allow_private_networks,
        )
        self.cimd_resolver = ClientMetadataDocumentResolver(
            self.resolver,
            fetch_policy,
            max_bytes=registration.cimd_max_bytes,
            timeout=registration.fetch_timeout,
            allow_http_loopback=registration.allow_private_networks,
        )
        self.client_key_sets = ClientKeySets(self.resolver, fetch_policy, timeout=registration.fetch_timeout)
        self.password_change_tickets = PasswordChangeTickets(self.master_key.derive("password-change"))
        self.events = EventBus()
        self.audit = AuditService(self.database, self.master_key, settings.audit)
        self.audit.tenant_retention = self._compliance_retention
        self.audit_hash_key = keyed_hash_key(self.master_key)  # HMAC key for values kept unreadable
        self.events.subscribe(self.audit.gateway_decision)
        self.server_activity = ActivityMonitor()  # the console's servers page (gateway/activity.py)
        self.events.subscribe(self.server_activity.record)
        self.session_binder = SessionBinder(self.master_key.derive("mcp-session"))
        self.tenant_store = TenantRepository(self.database)
        self.rate_limiter = RateLimiter.from_settings(settings)
        # With redis_url: revocations announced to every replica at once; the poll of refresh() stays the fallback.
        self.revocation_fanout = RevocationFanout(settings.redis_url, self._revocations_announced)
        self.revocation_cursor = FeedCursor()  # ids commit out of order: re-reads the last seconds of the feed
        # The envelope store's vault until start() (the only backend that needs no connection); OpenBao's replaces it
        # there when configured, before any tenant (or request) can reach it.
        self.vault_keks: KekRing = load_kek_ring(settings.vault, data_dir=settings.data_dir, master_key=self.master_key)
        self.vault = Vault(
            self.database, EnvelopeBackend(self.database, self.vault_keks), self.audit.log, settings.vault
        )
        self._openbao: OpenBaoConnection | None = None
        self.leak_guard = LeakGuard()  # the values injected upstream, per tenant (see vault/leak_guard.py)
        # The LLM proxy (llm/): prices, usage records written off the request path, budgets (held in Redis when
        # redis_url is set) fed by settlements and by telemetry records, and alerts at their thresholds.
        self.pricing = Pricing.load()
        self.usage_recorder = UsageRecorder(self.database)
        self.budget_alerts = AlertSender(
            lambda tenant, reference: vault_secrets(self.vault)(tenant, reference),
            resolver=self.resolver,
            policy=fetch_policy,
            audit=self.audit.log,
            allow_http_loopback=registration.allow_private_networks,
        )
        # DLP `alert` actions (dlp/alerts.py); no audit sink: the gateway audits each detection where it is made.
        self.dlp_alerts = AlertSender(
            lambda tenant, reference: dlp_vault_secrets(self.vault)(tenant, reference),
            resolver=self.resolver,
            policy=fetch_policy,
            allow_http_loopback=registration.allow_private_networks,
        )
        self.budget_guard = BudgetGuard.from_settings(
            settings,
            StoredSpend(self.database),
            alerts=self.budget_alerts,
            audit=self.audit.log,
            rules_of=self._budget_rules,
        )
        self.usage_recorder.subscribe(self.budget_guard.record_listener)
        self.llm = LlmService(self)
        # Single sign-on (sso/): one pooled client for every tenant's identity providers (discovery, JWKS, token and
        # userinfo endpoints, Graph), their keys cached per issuer, and the providers' protocol objects.
        self.idp_http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        self.sso = ProviderRegistry(IssuerKeys(self.idp_http))
        self._configured_servers = configured_servers(settings)
        self._tenants_version: tuple[tuple[str, float], ...] | None = None
        self._invalid_configs: set[tuple[str, str]] = set()

    @property
    def default_tenant(self) -> Tenant:
        return self.tenants[self.settings.tenant]

    def tenant(self, tenant_id: str) -> Tenant | None:
        return self.tenants.get(tenant_id)

    def tenant_by_issuer(self, issuer: str) -> Tenant | None:
        return next((tenant for tenant in self.tenants.values() if tenant.issuer == issuer), None)

    def current_keys(self) -> KeyRing:
        return self.keyring

    def _compliance_retention(self, tenant_id: str) -> int | None:
        tenant = self.tenants.get(tenant_id)
        return retention_days(tenant.config.dlp.compliance) if tenant is not None else None

    def _budget_rules(self, tenant_id: str) -> tuple[BudgetRule, ...]:
        tenant = self.tenants.get(tenant_id)
        return tenant.config.budgets if tenant is not None else ()

    async def sync_revocations(self) -> None:
        """Applies revocations written to the feed right away; called by whoever just wrote one, so the other
        replicas are told at once too (oauth/revocation_fanout.py)."""
        await self.pull_revocations()
        await self.revocation_fanout.announce(self.revocations.last_id)

    async def pull_revocations(self) -> None:
        """Applies revocations written to the feed (by this process or others) since the last pull."""
        entries = await revocations_since(self.database, self.revocation_cursor.floor)
        self.revocations.apply(entries)
        self.revocation_cursor.seen(entries)

    async def _revocations_announced(self, feed_id: int | None) -> None:
        if feed_id is None or feed_id > self.revocations.last_id:
            await self.pull_revocations()

    async def refresh(self) -> None:
        """Pulls what other processes changed: revocations, signing keys, tenants, servers."""
        await self.pull_revocations()
        rows = await key_store.usable_keys(self.database)
        if key_ring_version(rows) != self.keyring.version:
            self.keyring = key_ring_from_rows(rows, self.master_key)
        version = await self.tenant_store.version()
        if version != self._tenants_version:
            await self._refresh_tenants(await self.tenant_store.list())
            self._tenants_version = version
        for tenant in list(self.tenants.values()):
            await self._refresh_servers(tenant)
        await self.llm.refresh()

    async def _refresh_tenants(self, rows: list[TenantRow]) -> None:
        present = {self.settings.tenant} | {row.id for row in rows}
        for row in rows:
            config = self._effective_config(row)
            known = self.tenants.get(row.id)
            if known is None:
                self.tenants[row.id] = Tenant(self, row.id, config)
            else:
                known.configure(config)
        if self.settings.tenant not in self.tenants:  # not initialised with this tenant id: serve it all the same
            self.tenants[self.settings.tenant] = Tenant(self, self.settings.tenant, self._effective_config(None))
        for gone in set(self.tenants) - present:
            retired = self.tenants.pop(gone)
            await retired.upstreams.aclose()

    def _effective_config(self, row: TenantRow | None) -> TenantConfig:
        tenant_id = row.id if row is not None else self.settings.tenant
        stored = row.config if row is not None else None
        try:
            return effective_config(self.settings, tenant_id, stored)
        except ValidationError as invalid:
            # Written by another version, or by hand: serve the tenant on its file settings and say so once per
            # stored version, rather than take the whole gateway down.
            key = (tenant_id, json.dumps(stored, sort_keys=True))
            if key not in self._invalid_configs:
                self._invalid_configs.add(key)
                logger.error("tenant %r: the stored configuration is invalid, ignored: %s", tenant_id, invalid)
            return effective_config(self.settings, tenant_id, None)

    async def _refresh_servers(self, tenant: Tenant) -> None:
        stored = await tenant.servers.list()
        configured = self._configured_servers if tenant.id == self.settings.tenant else []
        servers, overridden = merge_servers(configured, stored)
        if tenant.set_servers(servers):
            self._report_server_problems(tenant, overridden)

    def _report_server_problems(self, tenant: Tenant, overridden: list[Server]) -> None:
        """Logged when the set of servers changes: mistakes worth fixing that must not stop the gateway."""
        for server in overridden:
            logger.warning("server %r is in the config file and the database: the config file's wins", server.name)
        if tenant.config.roles is None:
            return  # the built-in defaults name the demo server, which a new tenant need not have
        for problem in check_servers(tenant.config.roles, tenant.resources):
            logger.warning("tenant %r: %s", tenant.id, problem)

    async def _open_vault(self) -> None:
        """With `vault.openbao`: the OpenBao backend replaces the envelope store before any tenant can reach it."""
        if self.settings.vault.openbao is None:
            return
        storage = await open_vault_storage(self.settings, self.database, self.master_key)
        self._openbao = storage.connection
        self.vault_keks = storage.keks
        self.vault = Vault(self.database, storage.backend, self.audit.log, self.settings.vault)

    async def start(self) -> None:
        await self._open_vault()
        await self.refresh()
        await self.revocation_fanout.start()
        await self.audit.start()
        await self.events.start()
        await self.usage_recorder.start()
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for tenant in self.tenants.values():
            await tenant.upstreams.aclose()
        if self._openbao is not None:
            await self._openbao.close()  # revokes its token unless vault.openbao.revoke_token_on_close is false
            self._openbao = None
        await self.llm.aclose()
        await self.sso.aclose()
        await self.idp_http.aclose()
        await self.budget_guard.aclose()
        await self.budget_alerts.aclose()
        await self.dlp_alerts.aclose()
        await self.usage_recorder.aclose()  # writes what is queued
        await self.events.aclose()
        await self.audit.aclose()
        await self.rate_limiter.aclose()
        await self.revocation_fanout.aclose()
        await self.database.dispose()

    async def _refresh_forever(self) -> None:
        outage_since: float | None = None  # an outage is logged when it begins and when it ends, not every second
        next_purge = time.monotonic() + PURGE_INTERVAL
        next_refresh = time.monotonic() + REFRESH_INTERVAL
        next_tick = time.monotonic()
        while True:
            # A fixed rate: the work's own time is not added to the period; after falling behind (a slow store) it
            # starts again from now rather than catch up.
            next_tick += REVOCATION_POLL_INTERVAL
            delay = next_tick - time.monotonic()
            if delay < 0:
                next_tick, delay = time.monotonic() + REVOCATION_POLL_INTERVAL, REVOCATION_POLL_INTERVAL
            await asyncio.sleep(delay)
            try:
                if time.monotonic() < next_refresh:
                    await self.pull_revocations()
                    continue
                next_refresh = max(next_refresh + REFRESH_INTERVAL, time.monotonic() + REVOCATION_POLL_INTERVAL)
                await self.refresh()
                self.revocations.prune()
                if time.monotonic() >= next_purge:  # expired one-time identifiers, off the sign-in path
                    await purge_expired(self.database)
                    next_purge = time.monotonic() + PURGE_INTERVAL
            except Exception as problem:  # the store may blip; keep serving from the last snapshot and retry
                if not store_unavailable(problem):
                    logger.exception("could not refresh state from the store")
                elif outage_since is None:
                    outage_since = time.monotonic()
                    logger.error("the store is unreachable (%s): serving the last snapshot", type(problem).__name__)
                continue
            if outage_since is not None:
                logger.warning("the store is reachable again after %.0f s", time.monotonic() - outage_since)
                outage_since = None


def key_ring_version(rows: list[key_store.KeyRow]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((row.kid, row.retired_at or 0.0) for row in rows))


def key_ring_from_rows(rows: list[key_store.KeyRow], master_key: MasterKey) -> KeyRing:
    """Decrypts the private keys; only called when the set of keys changed."""
    return KeyRing(
        load_signing_key(
            kid=row.kid,
            alg=row.alg,
            public_jwk=row.public_jwk,
            encrypted_private_key=row.private_key,
            master_key=master_key,
            created_at=row.created_at,
            retired_at=row.retired_at,
            expires_at=row.expires_at,
        )
        for row in rows
    )


async def load_key_ring(database: Database, master_key: MasterKey) -> KeyRing:
    return key_ring_from_rows(await key_store.usable_keys(database), master_key)


async def open_state(settings: Settings, builtin_upstream: Upstream, *, resolver: Resolver | None = None) -> AppState:
    database = create_database(settings.effective_database_url)
    try:
        if await pending_migrations(database):
            raise NotInitialised(
                "the store is not initialised or needs migrating: run 'chamberlain init' (or 'chamberlain migrate')"
            )
        master_key = load_master_key(settings.data_dir)
        keyring = await load_key_ring(database, master_key)
    except BaseException:
        await database.dispose()
        raise
    state = AppState(settings, database, master_key, keyring, resolver or SystemResolver(), builtin_upstream)
    await state.start()
    return state


__all__ = ["AppState", "NotInitialised", "ProtectedResource", "open_state"]
