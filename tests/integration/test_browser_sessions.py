"""Browser sessions: fixation, rotation on a change of roles or MFA state, idle and absolute expiry, browser
binding, lifetimes from the roles, and revocation (one user, everyone) from the CLI."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner, Result

from chamberlain.cli.main import app as cli
from chamberlain.crypto.tokens import digest
from chamberlain.store.browser_sessions import BrowserSessionRepository
from chamberlain.store.schema import browser_sessions
from chamberlain.store.users import UserRepository
from tests.support.browser import Browser
from tests.support.oauth import REDIRECT_URI, Pkce, authorization_url, exchange_code, redirect_params, refresh, register
from tests.support.server import USER_PASSWORD, RunningServer, random_name
from tests.support.tenants import add_tenant


def session_cookie(tenant: str) -> str:
    return f"chamberlain_{tenant}_session"  # each tenant's own cookie; plain http in tests: no __Host- prefix


@pytest.fixture
async def tenant(server: RunningServer) -> str:
    tenant_id = random_name("sessions")
    roles = {
        "enterprise_roles": {
            "developer": {"mcp_servers": ["demo"], "session_duration": 240},
            "senior_developer": {"mcp_servers": ["demo"], "session_duration": 480},
            "admin": {"mcp_servers": "*", "session_duration": 240, "administrative_functions": True},
        }
    }
    users = {"dev": ("developer",), "senior": ("senior_developer",), "both": ("developer", "senior_developer")}
    await add_tenant(server, tenant_id, users=users, config={"roles": roles})
    return tenant_id


class Person:
    """A browser signed in to a tenant through one client, which has the user's consent."""

    def __init__(self, server: RunningServer, tenant: str, browser: Browser, client_id: str) -> None:
        self.server, self.tenant, self.browser, self.client_id = server, tenant, browser, client_id

    def authorize_url(self, pkce: Pkce | None = None, **params: str) -> str:
        resource = f"{self.server.base_url}/t/{self.tenant}/mcp/demo"
        return f"/t/{self.tenant}" + authorization_url(self.client_id, resource, pkce or Pkce.new(), **params)

    @property
    def cookie(self) -> str:
        return str(self.browser.http.cookies[session_cookie(self.tenant)])

    async def is_signed_in(self, cookie: str | None = None, user_agent: str | None = None) -> bool:
        """A consented authorization goes straight back to the client only for a signed-in browser."""
        headers = {"user-agent": user_agent} if user_agent else {}
        cookies = {session_cookie(self.tenant): cookie} if cookie is not None else None
        async with httpx.AsyncClient(
            base_url=self.server.base_url, cookies=cookies or self.browser.http.cookies
        ) as http:
            response = await http.get(self.authorize_url(), headers=headers)
        if response.status_code == 302:
            assert response.headers["location"].startswith(REDIRECT_URI)
            return True
        assert response.status_code == 200
        assert "/login" in response.text
        return False


async def sign_in(server: RunningServer, tenant: str, browser: Browser, username: str, **params: str) -> Person:
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}") as http:
        client_id = (await register(http))["client_id"]
    person = Person(server, tenant, browser, client_id)
    redirect = await browser.authorize(person.authorize_url(**params), username=username, password=USER_PASSWORD)
    assert redirect.headers["location"].startswith(REDIRECT_URI)
    return person


async def test_a_planted_session_id_is_replaced_at_sign_in(server: RunningServer, tenant: str) -> None:
    async with Browser(server.base_url) as attacker:
        planted = (await sign_in(server, tenant, attacker, "dev")).cookie
    async with Browser(server.base_url) as victim:
        # Session fixation (OWASP): the attacker's own valid id, planted in the victim's browser before sign-in.
        victim.http.cookies.set(session_cookie(tenant), planted, domain="127.0.0.1")
        person = await sign_in(server, tenant, victim, "senior", prompt="login")
        assert person.cookie != planted
        assert not await person.is_signed_in(cookie=planted)
        assert await person.is_signed_in()


async def test_a_change_of_roles_rotates_the_session_id(server: RunningServer, tenant: str) -> None:
    async with Browser(server.base_url) as browser:
        person = await sign_in(server, tenant, browser, "dev")
        before = person.cookie
        async with server.engine() as database:
            users = UserRepository(database, tenant)
            dev = await users.get_by_username("dev")
            assert dev is not None
            await users.update_account(dev.id, roles=("developer", "admin"))
        response = await browser.get(person.authorize_url())
        assert response.status_code == 302  # still signed in: the change needs no new sign-in...
        after = person.cookie
        assert after != before  # ...but it gets a new id
        assert not await person.is_signed_in(cookie=before)  # and the old one stopped working at once
        assert await person.is_signed_in(cookie=after)


async def test_enrolling_a_second_factor_rotates_the_session_id(server: RunningServer, tenant: str) -> None:
    async with Browser(server.base_url) as browser:
        person = await sign_in(server, tenant, browser, "senior")
        before = person.cookie
        async with server.engine() as database:
            users = UserRepository(database, tenant)
            senior = await users.get_by_username("senior")
            assert senior is not None
            await users.set_totp_secret(senior.id, b"encrypted seed")
        assert (await browser.get(person.authorize_url())).status_code == 302
        assert person.cookie != before
        assert not await person.is_signed_in(cookie=before)


async def test_sessions_expire_when_idle_and_absolutely(server: RunningServer, tenant: str) -> None:
    for column in ("last_seen_at", "expires_at"):
        async with Browser(server.base_url) as browser:
            person = await sign_in(server, tenant, browser, "dev")
            assert await person.is_signed_in()
            past = time.time() - (240 * 60 + 5 if column == "last_seen_at" else 5)
            async with server.engine() as database, database.begin() as connection:
                await connection.execute(
                    update(browser_sessions)
                    .where(browser_sessions.c.id_hash == digest(person.cookie))
                    .values(**{column: past})
                )
            assert not await person.is_signed_in(), column


async def test_a_session_cookie_is_refused_from_another_browser(server: RunningServer, tenant: str) -> None:
    async with Browser(server.base_url) as browser:
        person = await sign_in(server, tenant, browser, "dev")
        assert await person.is_signed_in(user_agent=browser.http.headers["user-agent"])
        assert not await person.is_signed_in(user_agent="Mozilla/5.0 (stolen cookie)")


@pytest.mark.parametrize(("username", "minutes"), [("dev", 240), ("senior", 480), ("both", 240)])
async def test_the_idle_timeout_is_the_shortest_session_duration_of_the_roles(
    server: RunningServer, tenant: str, username: str, minutes: int
) -> None:
    async with Browser(server.base_url) as browser:
        person = await sign_in(server, tenant, browser, username)
        async with server.engine() as database:
            sessions = await BrowserSessionRepository(database, tenant).list()
        mine = [session for session in sessions if session.handle == digest(person.cookie)[:16].hex()]
        assert len(mine) == 1
        assert mine[0].idle_timeout == minutes * 60
        assert mine[0].expires_at - mine[0].created_at == pytest.approx(24 * 3600)


def invoke(server: RunningServer, *args: str) -> Result:
    env = {"CHAMBERLAIN_DATABASE_URL": server.database_url}
    return CliRunner().invoke(cli, [*args, "--data-dir", str(server.settings.data_dir)], env=env)


async def test_revoking_a_user_ends_sessions_refresh_tokens_and_consents(server: RunningServer, tenant: str) -> None:
    async with Browser(server.base_url) as browser, httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}") as http:
        person = await sign_in(server, tenant, browser, "dev")
        pkce = Pkce.new()
        code = redirect_params(await browser.get(person.authorize_url(pkce)))["code"]
        tokens = (await exchange_code(http, person.client_id, code, pkce.verifier)).json()
        listed = await asyncio.to_thread(invoke, server, "sessions", "list", "--tenant", tenant, "--user", "dev")
        assert listed.exit_code == 0, listed.output
        assert digest(person.cookie)[:16].hex() in listed.output
        result = await asyncio.to_thread(invoke, server, "sessions", "revoke", "dev", "--tenant", tenant)
        assert result.exit_code == 0, result.output
        assert not await person.is_signed_in()
        refused = await refresh(http, person.client_id, tokens["refresh_token"])
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_grant"
        # The consent went too: signing in again asks for it again.
        again = await browser.follow_to_client(await browser.get(person.authorize_url()))
        signed = await browser.submit(again, {"username": "dev", "password": USER_PASSWORD})
        consent = await browser.follow_to_client(signed)
        assert 'name="decision"' in consent.text


async def test_revoke_all_ends_every_session_of_the_tenant_only(server: RunningServer, tenant: str) -> None:
    other = random_name("bystander")
    await add_tenant(server, other, users={"dev": ("developer",)})
    async with Browser(server.base_url) as one, Browser(server.base_url) as two, Browser(server.base_url) as three:
        people = [await sign_in(server, tenant, one, "dev"), await sign_in(server, tenant, two, "senior")]
        bystander = await sign_in(server, other, three, "dev")
        result = await asyncio.to_thread(invoke, server, "sessions", "revoke-all", "--yes", "--tenant", tenant)
        assert result.exit_code == 0, result.output
        assert "Ended 2 session(s)" in result.output
        for person in people:
            assert not await person.is_signed_in()
        assert await bystander.is_signed_in()


def test_sessions_commands_name_a_missing_tenant(server: RunningServer) -> None:
    result = invoke(server, "sessions", "list", "--tenant", "no-such-tenant")
    assert result.exit_code == 1
    assert "no tenant 'no-such-tenant'" in result.output


@pytest.mark.parametrize(
    ("role", "tenant_config"),
    [
        pytest.param({"mcp_servers": ["demo"], "mfa": "enforced"}, {}, id="role-enforces"),
        # The role asks for nothing; the tenant's `sso.mfa` floor (chamberlain config set mfa enforced) does, and a
        # local password sign-in obeys it as federated ones do.
        pytest.param({"mcp_servers": ["demo"]}, {"sso": {"mfa": "enforced"}}, id="tenant-floor-enforces"),
    ],
)
async def test_enforced_mfa_refuses_a_local_user_without_a_second_factor(
    server: RunningServer, role: dict[str, object], tenant_config: dict[str, object]
) -> None:
    tenant = random_name("strict")
    config = {"roles": {"enterprise_roles": {"operator": role}}, **tenant_config}
    await add_tenant(server, tenant, users={"ops": ("operator",)}, config=config)
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{tenant}") as http:
        client_id = (await register(http))["client_id"]
    person = Person(server, tenant, Browser(server.base_url), client_id)
    async with person.browser as browser:
        page = await browser.follow_to_client(await browser.get(person.authorize_url()))
        refused = await browser.submit(page, {"username": "ops", "password": USER_PASSWORD})
        assert refused.status_code == 403
        assert "requires a second factor" in refused.text
        assert session_cookie(tenant) not in browser.http.cookies
