"""Issue 5, acceptance 1: the enterprise_roles example imports as-is and is enforced end to end: a developer's
token cannot open /mcp/aws, a senior developer's can, and each session's lifetime follows the role."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from chamberlain.cli.main import app as cli
from chamberlain.store.browser_sessions import BrowserSessionRepository
from tests.support.mcp_calls import call_mcp
from tests.support.server import RunningServer, random_name
from tests.support.tenants import access_token, add_tenant

EXAMPLE = Path(__file__).parents[2] / "examples" / "roles.json"
SERVERS = ("github", "postgres", "slack", "aws", "terraform")


async def test_the_issue_example_is_enforced_end_to_end(server: RunningServer) -> None:
    tenant = random_name("enterprise")
    people = {"dev": ("developer",), "senior": ("senior_developer",), "boss": ("admin",)}
    await add_tenant(server, tenant, users=people, servers=SERVERS)
    env = {"CHAMBERLAIN_DATABASE_URL": server.database_url}
    argv = ["roles", "import", str(EXAMPLE), "--tenant", tenant, "--data-dir", str(server.settings.data_dir)]
    imported = await asyncio.to_thread(CliRunner().invoke, cli, argv, env=env)
    assert imported.exit_code == 0, imported.output
    await _policy_loaded(server, tenant)

    base = f"{server.base_url}/t/{tenant}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        dev_aws = await access_token(server, tenant, "dev", f"{base}/mcp/aws")
        assert (await call_mcp(http, dev_aws, server_name="aws")).status_code == 403
        senior_aws = await access_token(server, tenant, "senior", f"{base}/mcp/aws")
        assert (await call_mcp(http, senior_aws, server_name="aws")).status_code == 200
        dev_github = await access_token(server, tenant, "dev", f"{base}/mcp/github")
        assert (await call_mcp(http, dev_github, server_name="github")).status_code == 200
        boss_terraform = await access_token(server, tenant, "boss", f"{base}/mcp/terraform")
        assert (await call_mcp(http, boss_terraform, server_name="terraform")).status_code == 200

    async with server.engine() as database:
        sessions = await BrowserSessionRepository(database, tenant).list()
    minutes = {session.idle_timeout for session in sessions}
    # Each access_token call signed in once: developers (and the admin) 240 minutes, the senior developer 480.
    assert minutes == {240 * 60, 480 * 60}


async def _policy_loaded(server: RunningServer, tenant: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        state = server.state.tenant(tenant)
        if state is not None and "senior_developer" in state.roles.enterprise_roles:
            return
        assert time.monotonic() < deadline, "the imported roles were not loaded"
        await asyncio.sleep(0.05)
