"""Everything a running gateway holds: the store, keys, caches and the services built on them.

Request handlers read immutable snapshots (key ring, server table) and in-memory sets (revocations); a background
task keeps those in step with the store, so changes made by the CLI or another replica arrive within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from chamberlain.audit.emit import keyed_hash_key
from chamberlain.audit.service import AuditService
from chamberlain.crypto.master_key import MasterKey, load_master_key
from chamberlain.crypto.signing_keys import KeyRing, load_signing_key
from chamberlain.gateway.events import EventBus
from chamberlain.gateway.sessions import SessionBinder
from chamberlain.gateway.upstream import Upstream
from chamberlain.gateway.upstream_credentials import SubjectTokenMinter, credentials_for
from chamberlain.gateway.upstreams import UpstreamRegistry
from chamberlain.identity.password_change import PasswordChangeTickets
from chamberlain.net.ssrf import AddressPolicy, Resolver, SystemResolver
from chamberlain.oauth.access_tokens import AccessTokenIssuer, AccessTokenVerifier
from chamberlain.oauth.cimd import ClientMetadataDocumentResolver
from chamberlain.oauth.client_auth import ClientAuthenticator
from chamberlain.oauth.client_keys import ClientKeySets
from chamberlain.oauth.clients import ClientDirectory
from chamberlain.oauth.revocation_list import RevocationList
from chamberlain.policy.decisions import Policy
from chamberlain.policy.roles import check_servers
from chamberlain.settings import Settings
from chamberlain.store import keys as key_store
from chamberlain.store.browser_sessions import BrowserSessionRepository
from chamberlain.store.clients import ClientRepository
from chamberlain.store.consents import ConsentRepository
from chamberlain.store.database import Database, create_database, pending_migrations
from chamberlain.store.grants import GrantRepository, revocations_since
from chamberlain.store.servers import Server, ServerRepository, configured_servers, merge_servers
from chamberlain.store.users import UserRepository
from chamberlain.web.cookies import CookiePolicy
from chamberlain.web.csrf import CsrfProtection

logger = logging.getLogger(__name__)
REFRESH_INTERVAL = 1.0


class NotInitialised(Exception):
    pass


@dataclass(frozen=True)
class ProtectedResource:
    server: Server
    resource: str  # the URL clients use, byte for byte: issuer + "/mcp/" + name


@dataclass
class AppState:
    settings: Settings
    database: Database
    master_key: MasterKey
    keyring: KeyRing
    resolver: Resolver
    builtin_upstream: Upstream  # the demo server, answering in-process
    revocations: RevocationList = field(default_factory=RevocationList)
    resources: dict[str, ProtectedResource] = field(default_factory=dict)
    _refresher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        settings, database, tenant = self.settings, self.database, self.settings.tenant
        self.issuer = settings.public_url
        self.users = UserRepository(database, tenant)
        self.clients = ClientRepository(database, tenant)
        self.servers = ServerRepository(database, tenant, self.master_key)
        self.grants = GrantRepository(database, tenant)
        self.consents = ConsentRepository(database, tenant)
        self.browser_sessions = BrowserSessionRepository(database, tenant)
        registration = settings.registration
        # Client-chosen URLs (metadata documents, jwks_uri) are fetched only from public addresses, unless a
        # developer explicitly allows private networks.
        fetch_policy = AddressPolicy(
            allow_loopback=registration.allow_private_networks,
            allow_private=registration.allow_private_networks,
        )
        self.client_directory = ClientDirectory(
            self.clients,
            ClientMetadataDocumentResolver(
                self.resolver,
                fetch_policy,
                max_bytes=registration.cimd_max_bytes,
                timeout=registration.fetch_timeout,
                allow_http_loopback=registration.allow_private_networks,
            ),
            self.revocations,
        )
        self.client_authenticator = ClientAuthenticator(
            self.client_directory,
            ClientKeySets(self.resolver, fetch_policy, timeout=registration.fetch_timeout),
            audiences=(self.issuer, self.token_endpoint),
        )
        self.cookies = CookiePolicy(secure=settings.cookies_secure)
        self.csrf = CsrfProtection(self.master_key.derive("csrf"), self.cookies)
        self.password_change_tickets = PasswordChangeTickets(self.master_key.derive("password-change"))
        self.token_issuer = AccessTokenIssuer(self.issuer, self.current_keys, settings.tokens.access_token_ttl)
        self.token_verifier = AccessTokenVerifier(self.issuer, self.current_keys, self.revocations)
        self.policy = Policy(settings.roles)
        self.events = EventBus()
        self.audit = AuditService(self.database, self.master_key, settings.audit, tenant)
        self.audit_hash_key = keyed_hash_key(self.master_key)  # HMAC key for values kept unreadable
        self.events.subscribe(self.audit.gateway_decision)
        self.session_binder = SessionBinder(self.master_key.derive("mcp-session"))
        subject_tokens = SubjectTokenMinter(self.issuer, self.current_keys)
        self.upstreams = UpstreamRegistry(
            self.builtin_upstream,
            lambda name, config: credentials_for(
                config.credential, subject_tokens=subject_tokens, on_use=self.audit.credential_use(name)
            ),
        )
        self._configured_servers = configured_servers(settings)
        self._known_servers: frozenset[str] | None = None

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    def current_keys(self) -> KeyRing:
        return self.keyring

    def resource_url(self, server_name: str) -> str:
        return f"{self.issuer}/mcp/{server_name}"

    def resource_by_url(self, url: str) -> ProtectedResource | None:
        prefix = f"{self.issuer}/mcp/"
        if not url.startswith(prefix):
            return None
        found = self.resources.get(url[len(prefix) :])
        return found if found is not None and found.resource == url else None

    async def sync_revocations(self) -> None:
        """Applies revocations written to the feed (by this process or others) right away."""
        self.revocations.apply(await revocations_since(self.database, self.revocations.last_id))

    async def refresh(self) -> None:
        """Pulls what other processes changed: revocations, signing keys, servers."""
        await self.sync_revocations()
        rows = await key_store.usable_keys(self.database)
        if key_ring_version(rows) != self.keyring.version:
            self.keyring = key_ring_from_rows(rows, self.master_key)
        servers, overridden = merge_servers(self._configured_servers, await self.servers.list())
        self.resources = {server.name: self._resource(server) for server in servers}
        names = frozenset(self.resources)
        if names != self._known_servers:
            self._known_servers = names
            self.upstreams.keep_only(set(names))
            self._report_server_problems(names, overridden)

    def _resource(self, server: Server) -> ProtectedResource:
        # An unchanged server keeps its object, so the request path's checks against it stay identity checks.
        known = self.resources.get(server.name)
        if known is not None and known.server == server:
            return known
        return ProtectedResource(server, self.resource_url(server.name))

    def _report_server_problems(self, names: frozenset[str], overridden: list[Server]) -> None:
        """Logged when the set of servers changes: mistakes worth fixing that must not stop the gateway."""
        for server in overridden:
            logger.warning("server %r is in the config file and the database: the config file's wins", server.name)
        for problem in check_servers(self.settings.roles, names):
            logger.warning("%s", problem)

    async def start(self) -> None:
        await self.refresh()
        await self.audit.start()
        await self.events.start()
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.upstreams.aclose()
        await self.events.aclose()
        await self.audit.aclose()
        await self.database.dispose()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            try:
                await self.refresh()
                self.revocations.prune()
            except Exception:  # the store may blip; keep serving from the last snapshot and retry
                logger.exception("could not refresh state from the store")


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
