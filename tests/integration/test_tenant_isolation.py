"""No decision crosses a tenant (issue 5, acceptance 2), as a property: Hypothesis generates tenants whose users,
roles, servers, clients and sessions deliberately share names and ids across tenants, stores them in a real
store, and checks every lookup and decision a request can reach from each tenant against every other's objects."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chamberlain.cli.init import DEMO_SCOPES, initialise
from chamberlain.demo.server import DemoHandler
from chamberlain.gateway.asgi_upstream import AsgiUpstream
from chamberlain.oauth.access_tokens import InvalidAccessToken
from chamberlain.settings import Settings, load_settings
from chamberlain.state import open_state
from chamberlain.store.browser_sessions import NewSession
from chamberlain.tenancy.tenant import Tenant

NAMES = ("alice", "bob", "carol")  # shared across tenants on purpose
SERVERS = ("github", "postgres", "slack", "aws")
ROLES = ("developer", "admin", "auditor")


@dataclass(frozen=True)
class TenantPlan:
    users: dict[str, tuple[str, ...]]  # user name -> roles
    roles: dict[str, tuple[str, ...]]  # role -> servers it reaches
    servers: tuple[str, ...]
    clients: tuple[str, ...]


tenant_plans = st.builds(
    TenantPlan,
    users=st.dictionaries(st.sampled_from(NAMES), st.lists(st.sampled_from(ROLES), max_size=2, unique=True).map(tuple)),
    roles=st.dictionaries(
        st.sampled_from(ROLES), st.lists(st.sampled_from(SERVERS), max_size=3, unique=True).map(tuple)
    ),
    servers=st.lists(st.sampled_from(SERVERS), max_size=3, unique=True).map(tuple),
    clients=st.lists(st.sampled_from(("cli", "https://app.example/client.json")), max_size=2, unique=True).map(tuple),
)


@dataclass
class Built:
    tenant: Tenant
    plan: TenantPlan
    user_ids: dict[str, str]
    session_ids: list[str]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans=st.lists(tenant_plans, min_size=2, max_size=3))
def test_no_lookup_or_decision_crosses_a_tenant(plans: list[TenantPlan]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_check(Path(directory), plans))


async def _check(data_dir: Path, plans: list[TenantPlan]) -> None:
    settings = load_settings(data_dir=data_dir, environ={})
    await initialise(settings)
    built = await _build(settings, plans)
    state = built[0].tenant.shared
    try:
        for mine in built:
            for theirs in built:
                if theirs is not mine:
                    await _isolated(mine, theirs)
    finally:
        await state.close()


async def _build(settings: Settings, plans: list[TenantPlan]) -> list[Built]:
    state = await open_state(settings, AsgiUpstream(DemoHandler()))
    ids = [settings.tenant] + [f"tenant-{index}" for index in range(1, len(plans))]
    for tenant_id, plan in zip(ids, plans, strict=True):
        config = {
            "roles": {
                "enterprise_roles": {role: {"mcp_servers": list(servers)} for role, servers in plan.roles.items()}
            }
        }
        if tenant_id == settings.tenant:
            await state.tenant_store.set_config(tenant_id, config)
        else:
            await state.tenant_store.create(tenant_id, tenant_id, config)
    await state.refresh()
    result = []
    for tenant_id, plan in zip(ids, plans, strict=True):
        tenant = state.tenants[tenant_id]
        for server in plan.servers:
            if await tenant.servers.get(server) is None:
                await tenant.servers.add_built_in(server, DEMO_SCOPES)
        user_ids = {}
        sessions = []
        for name, roles in plan.users.items():
            user = await tenant.users.get_by_username(name) or await tenant.users.add(name, "x", roles)
            user_ids[name] = user.id
            sessions.append(
                await tenant.browser_sessions.create(
                    NewSession(user.id, mfa=False, roles=roles, idle_timeout=600, absolute_timeout=600, user_agent="")
                )
            )
        for client_id in plan.clients:
            await tenant.clients.add(client_id, "static", {"redirect_uris": ["http://127.0.0.1/cb"]}, None)
        result.append(Built(tenant, plan, user_ids, sessions))
    await state.refresh()
    return result


async def _isolated(mine: Built, theirs: Built) -> None:
    tenant, other = mine.tenant, theirs.tenant
    assert tenant.issuer != other.issuer
    for name, user_id in theirs.user_ids.items():
        assert await tenant.users.get(user_id) is None
        namesake = await tenant.users.get_by_username(name)
        assert namesake is None or (namesake.tenant_id == tenant.id and namesake.id == mine.user_ids[name])
        # A token the other tenant issued, for a resource named like one of ours, is refused here.
        for server in (*theirs.plan.servers, *mine.plan.servers):
            token = other.token_issuer.issue(
                subject=user_id,
                client_id="cli",
                audience=other.resource_url(server),
                scopes=frozenset(DEMO_SCOPES),
                tenant=other.id,
                grant_id=None,
                auth_time=None,
                roles=theirs.plan.users[name],
            )
            with pytest.raises(InvalidAccessToken):
                tenant.token_verifier.verify(token.token, audience=tenant.resource_url(server))
            with pytest.raises(InvalidAccessToken):
                tenant.token_verifier.verify(token.token, audience=None)
    for server in theirs.plan.servers:
        assert tenant.resource_by_url(other.resource_url(server)) is None
        ours = tenant.resources.get(server)
        assert ours is None or ours.server.tenant_id == tenant.id
    for session_id in theirs.session_ids:
        assert await tenant.browser_sessions.get(session_id, user_agent="") is None
    assert {session.user_id for session in await tenant.browser_sessions.list()} <= set(mine.user_ids.values())
    for client_id in theirs.plan.clients:
        ours = await tenant.clients.get(client_id)
        assert ours is None or (ours.tenant_id == tenant.id and client_id in mine.plan.clients)
    # Decisions depend on this tenant's roles alone: a role set from the other tenant reaches here exactly what
    # this tenant's document grants those role names.
    for roles in theirs.plan.users.values():
        for server in SERVERS:
            granted = any(server in mine.plan.roles.get(role, ()) for role in roles)
            assert (tenant.policy.access(roles, server) is not None) == granted
