"""A gateway in front of real upstreams, shared by the proxy's integration tests and the SDK interop tests.

Servers (all reach the same test upstream, tests/support/upstream_server.py):
  up      streamable HTTP, stateful, SSE answers (what SDK clients meet in the wild)
  plain   streamable HTTP, stateless, JSON answers (simple to drive with plain HTTP)
  keyed   as plain, the gateway presents a static API key upstream
  slow    as plain, with a 1 s timeout
  broken  an upstream answering garbage
  down    nothing listens there
  local   the upstream as a stdio process the gateway runs
  exchanged  as plain, with an RFC 8693 token exchange at a stand-in authorization server for a per-user token
  machine as plain, with a client-credentials token from that stand-in
The developer role (the test user alice) reaches them all with `delete_*` tools denied; guest (bob) only `demo`;
admin (carol) everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chamberlain.identity.passwords import hash_password
from chamberlain.store.users import UserRepository
from tests.support.server import RunningServer, free_port, running_server
from tests.support.upstream_authorization_server import UpstreamAuthorizationServer, upstream_authorization_server
from tests.support.upstreams import HttpUpstreamProcess, http_upstream, stdio_server_config

UPSTREAM_SECRET = "upstream-api-key-d41d8cd9"
GUEST, GUEST_PASSWORD = "bob", "bob's long password 1"
ADMIN, ADMIN_PASSWORD = "carol", "carol's long password 1"  # the bootstrap admin must change its password first
PASSWORDS = {GUEST: GUEST_PASSWORD, ADMIN: ADMIN_PASSWORD}
SERVERS_WITH_RULES = ("up", "plain", "keyed", "slow", "broken", "down", "local", "exchanged", "machine")
EXCHANGE_CLIENT, EXCHANGE_SECRET = "chamberlain-at-upstream", "exchange-secret-7f3a"
UPSTREAM_AUDIENCE = "https://upstream.example/mcp"
ROLES: dict[str, Any] = {
    "enterprise_roles": {
        "admin": {"mcp_servers": "*", "administrative_functions": True},
        "developer": {
            "mcp_servers": ["demo", *SERVERS_WITH_RULES],
            "tools": {name: {"allow": ["*"], "deny": ["delete_*"]} for name in SERVERS_WITH_RULES},
            "prompts": {"plain": {"allow": []}},  # nothing
            "resources": {"plain": {"allow": ["test://*"], "deny": ["test://secret*"]}},
        },
        "guest": {"mcp_servers": ["demo"]},
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
        }
        with running_server(data_dir, servers=servers, roles=ROLES, **settings) as running:
            asyncio.run(_add_users(running))
            authorization_server.subject_issuer = running.base_url
            authorization_server.subject_jwks = running.base_url + "/jwks.json"
            yield Gateway(running, stateful, plain, authorization_server)


async def _add_users(server: RunningServer) -> None:
    async with server.engine() as database:
        users = UserRepository(database, server.settings.tenant)
        await users.add(GUEST, hash_password(GUEST_PASSWORD), ("guest",))
        await users.add(ADMIN, hash_password(ADMIN_PASSWORD), ("admin",))
