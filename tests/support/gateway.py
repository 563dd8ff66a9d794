"""A gateway in front of real upstreams, shared by the proxy's integration tests and the SDK interop tests.

Servers (all reach the same test upstream, tests/support/upstream_server.py):
  up      streamable HTTP, stateful, SSE answers (what SDK clients meet in the wild)
  plain   streamable HTTP, stateless, JSON answers (simple to drive with plain HTTP)
  keyed   as plain, the gateway presents a static API key upstream
  up-keyed   as up, with keyed's API key (an injected credential echoed in an SSE answer)
  slow    as plain, with a 1 s timeout
  broken  an upstream answering garbage
  down    nothing listens there
  local   the upstream as a stdio process the gateway runs
  exchanged  as plain, with an RFC 8693 token exchange at a stand-in authorization server for a per-user token
  machine as plain, with a client-credentials token from that stand-in
  vaulted    as plain, the API key header's value in the vault (upstream/api-key)
  misbound   as plain, naming the same vault secret, which is not bound to it
  refreshed  as plain, access tokens refreshed at the stand-in from the gateway's refresh token in the vault
             (upstream-as/gateway-grant), its client secret in the vault too (upstream-as/client-secret)
  personal   as plain, each user's own refresh token from the vault (upstream-as/user-grant.USER_ID), as a public
             client of the stand-in; users connect their own grant at /connect/personal (the stand-in's
             authorization endpoint, its issuer checked in responses, RFC 9207)
Vault secrets are stored by the tests (`vault_of`): a server whose secret is missing answers -32002.
The developer role (the test user alice) reaches them all with `delete_*` tools denied; guest (bob) only `demo` and
`personal`; admin (carol) everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chamberlain.audit.log import AuditLog
from chamberlain.crypto.master_key import load_master_key
from chamberlain.identity.passwords import hash_password
from chamberlain.store.users import UserRepository
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import load_kek_ring
from chamberlain.vault.service import Vault
from tests.support.server import RunningServer, free_port, running_server
from tests.support.upstream_authorization_server import UpstreamAuthorizationServer, upstream_authorization_server
from tests.support.upstreams import HttpUpstreamProcess, http_upstream, stdio_server_config

UPSTREAM_SECRET = "upstream-api-key-d41d8cd9"
GUEST, GUEST_PASSWORD = "bob", "bob's long password 1"
ADMIN, ADMIN_PASSWORD = "carol", "carol's long password 1"  # the bootstrap admin must change its password first
PASSWORDS = {GUEST: GUEST_PASSWORD, ADMIN: ADMIN_PASSWORD}
SERVERS_WITH_RULES = (
    "up",
    "plain",
    "keyed",
    "up-keyed",
    "slow",
    "broken",
    "down",
    "local",
    "exchanged",
    "machine",
    "vaulted",
    "misbound",
    "refreshed",
    "personal",
)
EXCHANGE_CLIENT, EXCHANGE_SECRET = "chamberlain-at-upstream", "exchange-secret-7f3a"
PUBLIC_CLIENT = "chamberlain-public"  # a public client of the stand-in (no secret): per-user refresh grants
UPSTREAM_AUDIENCE = "https://upstream.example/mcp"
VAULT_SOURCE, API_KEY_SECRET = "upstream", "api-key"
AS_SOURCE, GATEWAY_GRANT, CLIENT_SECRET, USER_GRANT = "upstream-as", "gateway-grant", "client-secret", "user-grant"
REFRESH_SCOPE = "tools"
ROLES: dict[str, Any] = {
    "enterprise_roles": {
        "admin": {"mcp_servers": "*", "administrative_functions": True},
        "developer": {
            "mcp_servers": ["demo", *SERVERS_WITH_RULES],
            "tools": {name: {"allow": ["*"], "deny": ["delete_*"]} for name in SERVERS_WITH_RULES},
            "prompts": {"plain": {"allow": []}},  # nothing
            "resources": {"plain": {"allow": ["test://*"], "deny": ["test://secret*"]}},
        },
        "guest": {"mcp_servers": ["demo", "personal"]},
    }
}


@dataclass
class Gateway:
    server: RunningServer
    stateful: HttpUpstreamProcess
    plain: HttpUpstreamProcess
    authorization_server: UpstreamAuthorizationServer  # the upstream's own, for token exchange


@contextlib.contextmanager
def gateway_with_upstreams(data_dir: Path, **settings: Any) -> Iterator[Gateway]:
    with (
        http_upstream() as stateful,
        http_upstream("--stateless", "--json-response") as plain,
        http_upstream("--garbage") as garbage,
        # It learns the gateway's issuer and key set once the gateway runs (below); it fetches them per exchange.
        upstream_authorization_server(
            clients={EXCHANGE_CLIENT: EXCHANGE_SECRET}, subject_issuer="", subject_jwks={"keys": []}
        ) as authorization_server,
    ):
        servers = {
            "up": {"url": stateful.url},
            "plain": {"url": plain.url},
            "keyed": {
                "url": plain.url,
                "credential": {"type": "header", "header": "Authorization", "value": "Bearer " + UPSTREAM_SECRET},
            },
            "up-keyed": {
                "url": stateful.url,
                "credential": {"type": "header", "header": "Authorization", "value": "Bearer " + UPSTREAM_SECRET},
            },
            "slow": {"url": plain.url, "timeout": 1},
            "broken": {"url": garbage.url},
            "down": {"url": f"http://127.0.0.1:{free_port()}/mcp", "timeout": 2},
            "local": stdio_server_config().model_dump(exclude_defaults=True),
            "machine": {  # the gateway's own OAuth token (client credentials) at the stand-in
                "url": plain.url,
                "credential": {
                    "type": "client_credentials",
                    "token_endpoint": authorization_server.token_endpoint,
                    "client_id": EXCHANGE_CLIENT,
                    "client_secret": EXCHANGE_SECRET,
                },
            },
            "exchanged": {
                "url": plain.url,
                "credential": {
                    "type": "token_exchange",
                    "token_endpoint": authorization_server.token_endpoint,
                    "client_id": EXCHANGE_CLIENT,
                    "client_secret": EXCHANGE_SECRET,
                    "audience": UPSTREAM_AUDIENCE,
                },
            },
            "vaulted": {
                "url": plain.url,
                "credential": {
                    "type": "header",
                    "header": "Authorization",
                    "vault": f"{VAULT_SOURCE}/{API_KEY_SECRET}",
                },
            },
            "misbound": {
                "url": plain.url,
                "credential": {
                    "type": "header",
                    "header": "Authorization",
                    "vault": f"{VAULT_SOURCE}/{API_KEY_SECRET}",
                },
            },
            "refreshed": {
                "url": plain.url,
                "credential": {
                    "type": "refresh_token",
                    "token_endpoint": authorization_server.token_endpoint,
                    "client_id": EXCHANGE_CLIENT,
                    "client_secret_vault": f"{AS_SOURCE}/{CLIENT_SECRET}",
                    "vault": f"{AS_SOURCE}/{GATEWAY_GRANT}",
                    "scope": REFRESH_SCOPE,
                },
            },
            "personal": {
                "url": plain.url,
                "credential": {
                    "type": "refresh_token",
                    "token_endpoint": authorization_server.token_endpoint,
                    "client_id": PUBLIC_CLIENT,
                    "vault": f"{AS_SOURCE}/{USER_GRANT}",
                    "per_user": True,
                    "authorization_endpoint": authorization_server.authorization_endpoint,
                    "issuer": authorization_server.issuer,
                    "scope": REFRESH_SCOPE,
                },
            },
        }
        authorization_server.public_clients.add(PUBLIC_CLIENT)
        with running_server(data_dir, servers=servers, roles=ROLES, **settings) as running:
            asyncio.run(_add_users(running))
            authorization_server.subject_issuer = running.base_url
            authorization_server.subject_jwks = running.base_url + "/jwks.json"
            yield Gateway(running, stateful, plain, authorization_server)


@contextlib.asynccontextmanager
async def vault_of(server: RunningServer) -> AsyncIterator[Vault]:
    """The running gateway's vault, opened beside it (its database, its key-encryption key, its audit log) the way
    the CLI opens it: what is stored here the gateway reads on its next vault read."""
    async with server.engine() as database:
        settings = server.settings
        master_key = load_master_key(settings.data_dir, environ={})
        keks = load_kek_ring(settings.vault, data_dir=settings.data_dir, master_key=master_key)
        log = AuditLog(database, master_key, settings.audit)
        await log.start()
        try:
            yield Vault(database, EnvelopeBackend(database, keks), log, settings.vault)
        finally:
            await log.aclose()


async def _add_users(server: RunningServer) -> None:
    async with server.engine() as database:
        users = UserRepository(database, server.settings.tenant)
        await users.add(GUEST, hash_password(GUEST_PASSWORD), ("guest",))
        await users.add(ADMIN, hash_password(ADMIN_PASSWORD), ("admin",))
