"""Local sign-in through the real forms: one-time password change, TOTP as a second factor, session handling."""

from __future__ import annotations

import httpx
import pyotp

from chamberlain.crypto.master_key import load_master_key
from chamberlain.identity.passwords import hash_password
from chamberlain.identity.totp import encrypt_seed, new_totp_seed
from chamberlain.store.users import UserRepository
from tests.support.browser import Browser
from tests.support.oauth import Pkce, authorization_url, redirect_params, register
from tests.support.server import RunningServer, random_name

PASSWORD = "a long enough password"


async def add_user(server: RunningServer, *, totp_seed: str | None = None, must_change: bool = False) -> str:
    name = random_name("user")
    async with server.engine() as engine:
        users = UserRepository(engine, server.settings.tenant)
        user = await users.add(name, hash_password(PASSWORD), ("developer",), must_change_password=must_change)
        if totp_seed is not None:
            master_key = load_master_key(server.settings.data_dir)
            await users.set_totp_secret(user.id, encrypt_seed(totp_seed, user.id, master_key))
    return name


async def sign_in_to_authorize(
    server: RunningServer, http: httpx.AsyncClient, browser: Browser, username: str, password: str = PASSWORD
) -> httpx.Response:
    """Starts an authorization for a new client in `browser` and submits the sign-in form it shows; returns the
    answer to that submission."""
    client = await register(http)
    page = await browser.get(authorization_url(client["client_id"], server.resource(), Pkce.new()))
    assert page.status_code == 200
    assert 'autocomplete="username"' in page.text
    assert 'autocomplete="current-password"' in page.text
    return await browser.submit(page, {"username": username, "password": password})


async def test_one_time_password_must_be_replaced_before_the_flow_continues(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    name = await add_user(server, must_change=True)
    async with Browser(server.base_url) as browser:
        change = await sign_in_to_authorize(server, http, browser, name)
        assert change.status_code == 200
        assert 'action="/login/password"' in change.text
        assert browser.http.cookies.get("chamberlain_session") is None  # no session before the change

        same = await browser.submit(change, {"new_password": PASSWORD, "confirm_password": PASSWORD})
        assert same.status_code == 400
        assert "other than the one-time password" in same.text
        differ = await browser.submit(same, {"new_password": "new password 1", "confirm_password": "new password 2"})
        assert "differ" in differ.text

        done = await browser.submit(differ, {"new_password": "my own password", "confirm_password": "my own password"})
        assert done.status_code == 303
        consent = await browser.follow_to_client(done)
        assert 'name="decision"' in consent.text
    async with Browser(server.base_url) as browser:
        old = await sign_in_to_authorize(server, http, browser, name)
        assert old.status_code == 401
        new = await browser.submit(old, {"username": name, "password": "my own password"})
        assert new.status_code == 303


async def test_forged_password_change_ticket_is_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    name = await add_user(server, must_change=True)
    async with Browser(server.base_url) as browser:
        change = await sign_in_to_authorize(server, http, browser, name)
        forged = await browser.submit(
            change, {"ticket": "someone-else.9999999999.00", "new_password": "x" * 12, "confirm_password": "x" * 12}
        )
        assert forged.status_code == 403


async def test_totp_is_required_when_enrolled(server: RunningServer, http: httpx.AsyncClient) -> None:
    seed = new_totp_seed()
    name = await add_user(server, totp_seed=seed)
    async with Browser(server.base_url) as browser:
        asked = await sign_in_to_authorize(server, http, browser, name)
        assert asked.status_code == 401
        assert 'autocomplete="one-time-code"' in asked.text
        wrong = await browser.submit(asked, {"password": PASSWORD, "totp": "000000"})
        assert wrong.status_code == 401
        right = await browser.submit(wrong, {"password": PASSWORD, "totp": pyotp.TOTP(seed).now()})
        assert right.status_code == 303
        consent = await browser.follow_to_client(right)
        redirect = await browser.submit(consent, {"decision": "allow"})
        assert "code" in redirect_params(redirect)


async def test_sign_in_issues_a_fresh_session_id(server: RunningServer, http: httpx.AsyncClient) -> None:
    async with Browser(server.base_url) as browser:
        browser.http.cookies.set("chamberlain_session", "planted-by-an-attacker", domain="127.0.0.1")
        signed = await sign_in_to_authorize(server, http, browser, server.user, server.user_password)
        assert signed.status_code == 303
        session = browser.http.cookies.get("chamberlain_session")
        assert session
        assert session != "planted-by-an-attacker"
        cookie_header = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie_header
        assert "samesite=lax" in cookie_header
