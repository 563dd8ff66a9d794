"""One tenant at run time: its issuer, repositories, policy and servers, over the process-wide AppState.

Tenants are realms in the Keycloak sense: each is its own OAuth issuer (the default tenant at the root, tenant T
under /t/T), so a token, a cookie or a session of one tenant means nothing to another, and every repository a
handler can reach is built for the tenant of the request's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chamberlain.audit.service import AuditService
from chamberlain.crypto.master_key import MasterKey
from chamberlain.crypto.signing_keys import KeyRing
from chamberlain.dlp.engine import DlpEngine
from chamberlain.gateway.events import EventBus
from chamberlain.gateway.sessions import SessionBinder
from chamberlain.gateway.upstream_credentials import (
    GuardedCredentials,
    SubjectTokenMinter,
    VaultAccess,
    credentials_for,
)
from chamberlain.gateway.upstreams import UpstreamRegistry
from chamberlain.identity.password_change import PasswordChangeTickets
from chamberlain.oauth.access_tokens import AccessTokenIssuer, AccessTokenVerifier
from chamberlain.oauth.client_auth import ClientAuthenticator
from chamberlain.oauth.clients import ClientDirectory
from chamberlain.oauth.revocation_list import RevocationList
from chamberlain.policy.decisions import Policy
from chamberlain.policy.rate_limits import RateLimiter
from chamberlain.policy.roles import DEFAULT_ROLES, RolesDocument
from chamberlain.settings import Settings
from chamberlain.store.browser_sessions import BrowserSessionRepository
from chamberlain.store.clients import ClientRepository
from chamberlain.store.consents import ConsentRepository
from chamberlain.store.database import Database
from chamberlain.store.grants import GrantRepository
from chamberlain.store.servers import Server, ServerRepository
from chamberlain.store.users import UserRepository
from chamberlain.tenancy.config import TenantConfig
from chamberlain.vault.leak_guard import LeakGuard
from chamberlain.vault.service import Vault
from chamberlain.web.cookies import CookiePolicy
from chamberlain.web.csrf import CsrfProtection

if TYPE_CHECKING:
    from chamberlain.state import AppState

TENANT_PATH_PREFIX = "/t/"


@dataclass(frozen=True)
class ProtectedResource:
    server: Server
    resource: str  # the URL clients use, byte for byte: the tenant's issuer + "/mcp/" + name


def tenant_issuer(settings: Settings, tenant_id: str) -> str:
    if tenant_id == settings.tenant:
        return settings.public_url
    return f"{settings.public_url}{TENANT_PATH_PREFIX}{tenant_id}"


class Tenant:
    def __init__(self, shared: AppState, tenant_id: str, config: TenantConfig) -> None:
        self.shared = shared
        self.id = tenant_id
        settings, database = shared.settings, shared.database
        self.issuer = tenant_issuer(settings, tenant_id)
        self.admin_resource = f"{self.issuer}/admin/api"
        # The admin API is a protected resource too: a client asks for a token with resource={issuer}/admin/api
        # (RFC 8707) and that token is good nowhere else. Whether its holder is an administrator is decided by the
        # API on every request, from the user's current roles.
        self.admin_api = ProtectedResource(
            Server(f"admin-api:{tenant_id}", tenant_id, "admin-api", (), None, "config", None), self.admin_resource
        )
        # The LLM API (/v1/messages, llm/) likewise: tokens for {issuer}/llm are good there only, and MCP tokens not.
        self.llm_resource = ProtectedResource(
            Server(f"llm:{tenant_id}", tenant_id, "llm", (), None, "config", None), f"{self.issuer}/llm"
        )
        self.users = UserRepository(database, tenant_id)
        self.clients = ClientRepository(database, tenant_id)
        self.servers = ServerRepository(database, tenant_id, shared.master_key)
        self.grants = GrantRepository(database, tenant_id)
        self.consents = ConsentRepository(database, tenant_id)
        self.browser_sessions = BrowserSessionRepository(database, tenant_id)
        self.client_directory = ClientDirectory(tenant_id, self.clients, shared.cimd_resolver, shared.revocations)
        self.client_authenticator = ClientAuthenticator(
            self.client_directory, shared.client_key_sets, audiences=(self.issuer, self.token_endpoint)
        )
        is_default = tenant_id == settings.tenant
        self.cookies = CookiePolicy(secure=settings.cookies_secure, realm=None if is_default else tenant_id)
        self.csrf = CsrfProtection(shared.master_key.derive("csrf"), self.cookies)
        self.token_issuer = AccessTokenIssuer(self.issuer, shared.current_keys, settings.tokens.access_token_ttl)
        self.token_verifier = AccessTokenVerifier(self.issuer, shared.current_keys, shared.revocations)
        subject_tokens = SubjectTokenMinter(self.issuer, shared.current_keys)
        audit, guard = shared.audit, shared.leak_guard
        # Vault references of this tenant's servers resolve in this tenant's namespace only, for the named server;
        # every value injected is remembered by the leak guard, which the proxy consults on what it relays.
        self.upstreams = UpstreamRegistry(
            shared.builtin_upstream,
            lambda name, server_config: GuardedCredentials(
                credentials_for(
                    server_config.credential,
                    subject_tokens=subject_tokens,
                    on_use=audit.credential_use(tenant_id, name),
                    vault=VaultAccess(shared.vault, tenant_id, name, guard),
                ),
                guard,
                tenant_id,
                name,
            ),
            vaults=lambda name: VaultAccess(shared.vault, tenant_id, name, guard),
        )
        self.resources: dict[str, ProtectedResource] = {}
        self._server_names: frozenset[str] | None = None
        self.config = config
        self.policy = Policy(self.roles)
        self.dlp = self._dlp_engine(config)

    # -- configuration --------------------------------------------------------------------------------------------

    @property
    def roles(self) -> RolesDocument:
        return self.config.roles or DEFAULT_ROLES

    def configure(self, config: TenantConfig) -> None:
        """A new effective config from the refresher; the compiled policy is rebuilt only when roles changed."""
        roles_changed = config.roles != self.config.roles
        dlp_changed = config.dlp != self.config.dlp
        self.config = config
        if roles_changed:
            self.policy = Policy(self.roles)
        if dlp_changed:
            self.dlp = self._dlp_engine(config)

    def _dlp_engine(self, config: TenantConfig) -> DlpEngine:
        # Redaction hashes are keyed per tenant: equal values are joinable within a tenant, never across tenants.
        key = self.shared.master_key.derive(f"dlp-redaction:{self.id}")
        return DlpEngine(config.dlp, self.shared.settings.audit.classification_rules, key)

    def set_servers(self, servers: list[Server]) -> bool:
        """The tenant's servers as now stored and configured; True when the set of names changed."""
        self.resources = {server.name: self._resource(server) for server in servers}
        names = frozenset(self.resources)
        if names == self._server_names:
            return False
        self._server_names = names
        self.upstreams.keep_only(set(names))
        return True

    def _resource(self, server: Server) -> ProtectedResource:
        # An unchanged server keeps its object, so the request path's checks against it stay identity checks.
        known = self.resources.get(server.name)
        if known is not None and known.server == server:
            return known
        return ProtectedResource(server, self.resource_url(server.name))

    # -- URLs -----------------------------------------------------------------------------------------------------

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    def resource_url(self, server_name: str) -> str:
        return f"{self.issuer}/mcp/{server_name}"

    def resource_by_url(self, url: str) -> ProtectedResource | None:
        if url == self.admin_resource:
            return self.admin_api
        if url == self.llm_resource.resource:
            return self.llm_resource
        prefix = f"{self.issuer}/mcp/"
        if not url.startswith(prefix):
            return None
        found = self.resources.get(url[len(prefix) :])
        return found if found is not None and found.resource == url else None

    def path(self, path: str) -> str:
        """A path of this tenant's surface ("/authorize" -> "/t/acme/authorize")."""
        return self.issuer[len(self.settings.public_url) :] + path

    # -- what every tenant shares -----------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.shared.settings

    @property
    def database(self) -> Database:
        return self.shared.database

    @property
    def master_key(self) -> MasterKey:
        return self.shared.master_key

    @property
    def keyring(self) -> KeyRing:
        return self.shared.keyring

    @property
    def revocations(self) -> RevocationList:
        return self.shared.revocations

    @property
    def rate_limiter(self) -> RateLimiter:
        return self.shared.rate_limiter

    @property
    def vault(self) -> Vault:
        """The credential vault (every tenant's; `Vault.use` keeps each to its own namespace)."""
        return self.shared.vault

    @property
    def leak_guard(self) -> LeakGuard:
        return self.shared.leak_guard

    @property
    def audit(self) -> AuditService:
        return self.shared.audit

    @property
    def audit_hash_key(self) -> bytes:
        return self.shared.audit_hash_key

    @property
    def events(self) -> EventBus:
        return self.shared.events

    @property
    def session_binder(self) -> SessionBinder:
        return self.shared.session_binder

    @property
    def password_change_tickets(self) -> PasswordChangeTickets:
        return self.shared.password_change_tickets

    async def sync_revocations(self) -> None:
        await self.shared.sync_revocations()
