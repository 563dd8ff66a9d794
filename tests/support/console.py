"""The admin console in a real headless Chromium, driven by Playwright (issue 11 acceptance 1 and 2).

Playwright drives Debian's own Chromium (`apt-get install chromium`), passed as its executable: `playwright install`
is never run and nothing is downloaded. Outside CI the browser tests skip when /usr/bin/chromium (or the playwright
package) is missing; under CI=true they fail instead, since .ci/run installs both.

A gateway with the console runs on loopback (tests/support/server.py) with three kinds of user: an administrator
(`administrative_functions`), an auditor (`audit_access: read` only) and a developer (neither). People sign in
through the real /login page in the browser, exactly as an administrator would. Screenshots are kept under
test-artifacts/console/ (CHAMBERLAIN_CONSOLE_ARTIFACTS overrides the directory) for CI to publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from chamberlain.identity.passwords import hash_password
from chamberlain.store.users import UserRepository
from tests.support.browser import Browser as HttpBrowser
from tests.support.browser import parse_forms
from tests.support.chromium import CHROMIUM, CHROMIUM_FLAGS, require_browser
from tests.support.server import USER_PASSWORD, RunningServer, running_server

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Dialog, Page

REPO = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = Path(os.environ.get("CHAMBERLAIN_CONSOLE_ARTIFACTS") or REPO / "test-artifacts" / "console")
WAIT_MS = 20_000  # an upper bound for each wait, never an expectation of speed

ROLES: dict[str, Any] = {
    "enterprise_roles": {
        "admin": {"mcp_servers": "*", "data_classification_access": "*", "administrative_functions": True},
        "developer": {"mcp_servers": ["demo"]},
        "auditor": {"mcp_servers": [], "audit_access": "read"},
    }
}

# Every page of the console, relative to the console's root (the contract in the issue); the detail pages need ids.
PAGES = ("", "/users", "/groups", "/clients", "/servers", "/roles", "/roles/edit", "/audit", "/cost", "/vault", "/dlp")
READ_ONLY_PAGES = ("", "/audit", "/cost")  # what `audit_access: read` alone may see


@contextlib.contextmanager
def console_server(data_dir: Path, database_url: str | None = None, **settings: Any) -> Iterator[RunningServer]:
    """A gateway whose role document has the admin, developer and auditor roles above."""
    with running_server(data_dir, database_url, roles=settings.pop("roles", ROLES), **settings) as running:
        yield running


async def add_user(server: RunningServer, username: str, roles: tuple[str, ...], *, tenant: str | None = None) -> str:
    """A local account with the test password; returns its id."""
    async with server.engine() as database:
        user = await UserRepository(database, tenant or server.settings.tenant).add(
            username, hash_password(USER_PASSWORD), roles
        )
    return user.id


def console_url(server: RunningServer, path: str = "", *, tenant: str | None = None) -> str:
    """The console's URL under the tenant's issuer: /console for the default tenant, /t/T/console for T."""
    prefix = "" if tenant in (None, server.settings.tenant) else f"/t/{tenant}"
    return f"{server.base_url}{prefix}/console{path}"


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's headless Chromium under Playwright; skips (or fails in CI) when it is not installed."""
    require_browser(package="playwright")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """For a test module's fixture: `server = pytest.fixture(scope="module")(module_server)`."""
    with console_server(tmp_path_factory.mktemp("console")) as running:
        yield running


async def module_browser() -> AsyncIterator[Browser]:
    """For a test module's fixture: `browser = pytest.fixture(scope="module")(module_browser)`."""
    async with chromium() as launched:
        yield launched


@contextlib.asynccontextmanager
async def browser_context(browser: Browser, **options: Any) -> AsyncIterator[BrowserContext]:
    """A fresh profile (its own cookies); every wait bounded. Options as Playwright's new_context takes them."""
    context = await browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
    context.set_default_timeout(WAIT_MS)
    try:
        yield context
    finally:
        await context.close()


async def sign_in(
    context: BrowserContext, server: RunningServer, username: str, *, tenant: str | None = None, path: str = ""
) -> Page:
    """Opens the console page `path` in a new tab, signs in through the real /login form it sends the browser to,
    and returns the tab on that console page."""
    target = console_url(server, path, tenant=tenant)
    page = await context.new_page()
    await page.goto(target)
    assert re.search(r"/login(\?|$)", page.url), f"the console did not send a stranger to /login: {page.url}"
    await page.fill("#username", username)
    await page.fill("#password", USER_PASSWORD)
    async with page.expect_navigation():
        await page.click("form[action$='/login'] button[type=submit]")
    if page.url.split("#")[0] != target:
        # The login page's return parameter is the console's business; if it was not honoured, go there directly
        # (the session cookie is what this helper is about). Tests of the return path assert it themselves.
        await page.goto(target)
    return page


def answer_dialogs(page: Page, *, accept: bool) -> list[str]:
    """Answers every dialog the page opens (console.js asks `confirm()` before a destructive POST) and returns the
    list their messages are appended to: the XSS tests assert that it stays empty."""
    messages: list[str] = []
    answering: set[asyncio.Future[None]] = set()  # referenced until done, so that no answer is collected early

    def answer(dialog: Dialog) -> None:
        messages.append(dialog.message)
        future = asyncio.ensure_future(dialog.accept() if accept else dialog.dismiss())
        answering.add(future)
        future.add_done_callback(answering.discard)

    page.on("dialog", answer)
    return messages


async def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot kept as a test artifact (Playwright creates the directory)."""
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.asynccontextmanager
async def signed_in_http(
    server: RunningServer, username: str, *, tenant: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client (no redirects followed) holding the session cookie of `username`, signed in through the
    tenant's /login form: for reading the raw HTML and for requests a page's forms do not offer."""
    prefix = "" if tenant in (None, server.settings.tenant) else f"/t/{tenant}"
    async with HttpBrowser(server.base_url) as browser:
        response = await browser.submit(
            await browser.get(f"{prefix}/login"), {"username": username, "password": USER_PASSWORD}
        )
        assert response.status_code == 303, f"{username} could not sign in: {response.status_code}"
        yield browser.http


def post_actions(html: str) -> list[tuple[str, dict[str, str]]]:
    """The POST forms of a page: (action, hidden fields), as a browser would submit them."""
    return [(form.action, dict(form.fields)) for form in parse_forms(html) if form.method == "post"]
