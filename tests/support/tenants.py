"""Tenants in a running test server: created in its store, then served once its refresher has seen them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from chamberlain.cli.init import DEMO_SCOPES
from chamberlain.crypto.master_key import load_master_key
from chamberlain.identity.passwords import hash_password
from chamberlain.store.servers import ServerRepository
from chamberlain.store.tenants import TenantRepository
from chamberlain.store.users import UserRepository
from tests.support.browser import Browser
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register
from tests.support.server import USER_PASSWORD, RunningServer


async def add_tenant(
    server: RunningServer,
    tenant_id: str,
    *,
    users: dict[str, tuple[str, ...]] | None = None,
    servers: tuple[str, ...] = ("demo",),
    config: dict[str, Any] | None = None,
) -> None:
    """A tenant with users (all with the test password) and built-in demo servers under the given names."""
    async with server.engine() as database:
        await TenantRepository(database).create(tenant_id, tenant_id.title(), config)
        for name, roles in (users or {}).items():
            await UserRepository(database, tenant_id).add(name, hash_password(USER_PASSWORD), roles)
        repository = ServerRepository(database, tenant_id, load_master_key(server.settings.data_dir))
        for name in servers:
            await repository.add_built_in(name, DEMO_SCOPES)
    await served(server, tenant_id, servers)


async def add_servers(server: RunningServer, tenant_id: str, names: tuple[str, ...]) -> None:
    async with server.engine() as database:
        repository = ServerRepository(database, tenant_id, load_master_key(server.settings.data_dir))
        for name in names:
            await repository.add_built_in(name, DEMO_SCOPES)
    await served(server, tenant_id, names)


async def served(server: RunningServer, tenant_id: str, servers: tuple[str, ...] = ()) -> None:
    """Waits (up to 10 s) until the server's refresher serves the tenant and these servers of it."""
    deadline = time.monotonic() + 10
    while True:
        tenant = server.state.tenant(tenant_id)
        if tenant is not None and all(name in tenant.resources for name in servers):
            return
        assert time.monotonic() < deadline, f"tenant {tenant_id} was not served within 10 s"
        await asyncio.sleep(0.05)


def tenant_path(server: RunningServer, tenant_id: str) -> str:
    """Where a tenant's endpoints are: the root for the default tenant, /t/ID for the others."""
    return "" if tenant_id == server.settings.tenant else f"/t/{tenant_id}"


async def access_token(server: RunningServer, tenant_id: str, username: str, resource: str) -> str:
    """An access token for `resource`, got by `username` of the tenant signing in and consenting, through a client
    registered in that tenant."""
    prefix = tenant_path(server, tenant_id)
    async with httpx.AsyncClient(base_url=server.base_url + prefix, timeout=30) as http:
        client_id = (await register(http))["client_id"]
        pkce = Pkce.new()
        async with Browser(server.base_url) as browser:
            redirect = await browser.authorize(
                prefix + authorization_url(client_id, resource, pkce), username=username, password=USER_PASSWORD
            )
        response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])
