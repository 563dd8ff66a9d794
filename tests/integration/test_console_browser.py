"""The admin console in Debian's headless Chromium under Playwright (issue 11 acceptance 1).

An administrator signs in through the real /login page and uses the console the way a person would: revokes another
administrator's browser session (whose cookie then gets the login page), revokes a user's consent to a client
(whose refresh token then fails at /token), filters the audit log (every row shown matches), and opens the cost
chart after LLM usage is recorded. Then the page is driven by keyboard alone, and screenshots are taken at 1280 px,
at 390 px and in dark mode (test-artifacts/console/). Runs on SQLite: the store's own tests cover PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from chamberlain.audit.events import Action
from chamberlain.cost.recorder import UsageRecorder
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.usage import TokenUsage
from tests.support.audit_events import recorded
from tests.support.console import (
    PAGES,
    add_user,
    answer_dialogs,
    browser_context,
    console_url,
    module_browser,
    module_server,
    screenshot,
    sign_in,
)
from tests.support.oauth import refresh, register, tokens_for
from tests.support.server import RunningServer, random_name

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

pytestmark = pytest.mark.interop


server = pytest.fixture(scope="module")(module_server)
browser = pytest.fixture(scope="module")(module_browser)


@pytest.fixture(scope="module")
async def admin(server: RunningServer) -> str:
    name = random_name("admin")
    await add_user(server, name, ("admin",))
    return name


async def h1(page: Page) -> str:
    headings = page.locator("h1")
    assert await headings.count() == 1, "a console page has exactly one <h1>"
    return (await headings.inner_text()).strip()


async def test_signing_in_leads_back_to_the_console(server: RunningServer, browser: Browser, admin: str) -> None:
    async with browser_context(browser) as context:
        page = await context.new_page()
        await page.goto(console_url(server, "/audit"))
        assert "/login" in page.url, page.url
        assert "return_to" in page.url, page.url
        await page.fill("#username", admin)
        await page.fill("#password", server.user_password)
        async with page.expect_navigation():
            await page.click("form[action$='/login'] button[type=submit]")
        assert page.url == console_url(server, "/audit"), "the sign-in returns to the console page it began at"
        assert await h1(page) == "Audit log"
        await page.goto(console_url(server))
        assert await h1(page) == "Overview"
        for figure in ("requests-today", "denials-today", "dlp-hits-today", "spend-today", "spend-month", "error-rate"):
            assert (await page.get_by_test_id(figure).inner_text()).strip(), f"the overview shows {figure}"
        status = (await page.get_by_test_id("audit-chain").inner_text()).strip().lower()
        assert status in {"verified", "failed", "not verified yet"}, status
        assert status != "failed"
        await screenshot(page, "overview-1280")


async def test_an_administrator_revokes_a_session(server: RunningServer, browser: Browser, admin: str) -> None:
    victim = random_name("other-admin")
    victim_id = await add_user(server, victim, ("admin",))
    async with browser_context(browser) as theirs, browser_context(browser) as ours:
        their_page = await sign_in(theirs, server, victim)
        assert await h1(their_page) == "Overview"

        page = await sign_in(ours, server, admin, path=f"/users/{victim_id}")
        asked = answer_dialogs(page, accept=True)
        assert await h1(page) == victim
        rows = page.get_by_test_id("session-row")
        assert await rows.count() == 1, "the victim has exactly one session"
        async with page.expect_navigation() as navigation:
            await rows.first.get_by_role("button", name="Revoke session").click()
        assert (await navigation.value).status == 200, await page.locator("main").inner_text()
        assert page.url.split("?")[0] == console_url(server, f"/users/{victim_id}"), "POST, then back to the page"
        assert len(asked) == 1, "console.js asks before revoking"
        assert await page.get_by_test_id("session-row").count() == 0
        await screenshot(page, "user-session-revoked")

        # The revoked session's cookie no longer signs anyone in: the console sends it to the login page.
        await their_page.goto(console_url(server))
        assert "/login" in their_page.url, their_page.url
        assert await their_page.locator("#password").count() == 1
        # ...while the administrator's own session is untouched.
        await page.goto(console_url(server))
        assert await h1(page) == "Overview"


async def test_an_administrator_revokes_a_consent(server: RunningServer, browser: Browser, admin: str) -> None:
    name = random_name("client")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        client_id = str((await register(http, client_name=name))["client_id"])
        tokens = await tokens_for(server, http, client_id)  # the test user signs in and consents
        rotated = await refresh(http, client_id, tokens["refresh_token"])
        assert rotated.status_code == 200, "the refresh token works before the revocation"

        async with browser_context(browser) as context:
            page = await sign_in(context, server, admin, path="/clients")
            answer_dialogs(page, accept=True)
            row = page.get_by_test_id("client-row").filter(has_text=name)
            assert await row.count() == 1
            async with page.expect_navigation():
                await row.get_by_role("link").first.click()
            assert client_id in page.url
            consents = page.get_by_test_id("consent-row")
            assert await consents.count() == 1
            async with page.expect_navigation() as navigation:
                await consents.first.get_by_role("button", name="Revoke consent").click()
            assert (await navigation.value).status == 200, await page.locator("main").inner_text()
            assert client_id in page.url, "POST, then back to the client's page"
            assert await page.get_by_test_id("consent-row").count() == 0
            await screenshot(page, "client-consent-revoked")

        # Revoking the consent revoked its grants: the refresh token is dead (RFC 6749 §5.2 invalid_grant).
        refused = await refresh(http, client_id, rotated.json()["refresh_token"])
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_grant"


async def set_field(form: Locator, label: str, value: str) -> None:
    """Types into a text field, or picks the option of a select: the contract leaves the control's kind open."""
    field = form.get_by_label(label, exact=True)
    if await field.evaluate("e => e.tagName.toLowerCase()") == "select":
        await field.select_option(value)
    else:
        await field.fill(value)


async def test_filtering_the_audit_log(server: RunningServer, browser: Browser, admin: str) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        login = await http.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token is not None
        failed = await http.post(
            "/login", data={"csrf_token": token[1], "username": admin, "password": "wrong password"}
        )
        assert await recorded(server, failed.headers["x-request-id"], Action.SIGN_IN), "the failure is audited"

    async with browser_context(browser) as context:
        page = await sign_in(context, server, admin, path="/audit")
        everything = await page.get_by_test_id("audit-row").count()
        assert everything > 1
        form = page.get_by_role("search", name="Filter audit events")
        await set_field(form, "Action", "auth.sign_in")
        await set_field(form, "Outcome", "failure")
        async with page.expect_navigation():
            await form.get_by_role("button", name="Filter").click()
        assert "action=auth.sign_in" in page.url
        assert "outcome=failure" in page.url
        rows = page.get_by_test_id("audit-row")
        shown = await rows.all_inner_texts()
        assert shown, "the failed sign-in above matches the filter"
        assert len(shown) < everything
        for row in shown:
            assert "auth.sign_in" in row, row
            assert "failure" in row, row
        await screenshot(page, "audit-filtered")

        # The event detail opens from a row.
        await rows.first.get_by_role("link").first.click()
        await page.wait_for_load_state()
        assert await h1(page) == "Audit event"
        assert "auth.sign_in" in await page.locator("main").inner_text()


async def test_the_cost_chart_shows_recorded_usage(server: RunningServer, browser: Browser, admin: str) -> None:
    now = datetime.now(UTC)
    async with server.engine() as database:
        recorder = UsageRecorder(database, commit_delay=0)
        await recorder.start()
        for day in range(3):
            usage = TokenUsage(1_000, 500, 0, 0)
            recorder.record(
                UsageRecord(
                    server.settings.tenant,
                    "u-1",
                    "payments",
                    "claude-code",
                    "claude-sonnet-4-5-20250929",
                    None,
                    usage,
                    Decimal("0.5") * (day + 1),
                    120.0,
                    now - timedelta(days=day, minutes=5),
                    "proxy",
                )
            )
        await recorder.aclose()

    async with browser_context(browser) as context:
        page = await sign_in(context, server, admin, path="/cost")
        assert await h1(page) == "Cost"
        chart = page.get_by_test_id("cost-chart")
        await chart.wait_for(state="visible")
        assert await chart.get_attribute("role") == "img"
        title_id = await chart.get_attribute("aria-labelledby")
        assert title_id
        assert ((await page.locator(f"#{title_id}").text_content()) or "").strip()
        bars = chart.locator("rect, path")
        assert await bars.count() >= 3, "one bar (at least) for each of the three days with spend"
        box = await chart.bounding_box()
        assert box is not None
        assert box["width"] > 100
        assert box["height"] > 50
        assert "claude-sonnet-4-5-20250929" in await page.get_by_test_id("cost-by-model").inner_text()
        await screenshot(page, "cost-1280")


async def focus_trail(page: Page, presses: int) -> list[dict[str, Any]]:
    """What Tab reaches, in order: the focused element's tag, text, href, and whether its focus is visible."""
    trail = []
    for _ in range(presses):
        await page.keyboard.press("Tab")
        trail.append(
            await page.evaluate(
                """() => {
                    const e = document.activeElement;
                    const style = getComputedStyle(e);
                    const visible = e.matches(':focus-visible') && (
                        (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0)
                        || style.boxShadow !== 'none');
                    return {tag: e.tagName.toLowerCase(), type: e.type || '',
                            text: (e.innerText || e.value || '').trim(),
                            href: e.getAttribute('href') || '', nav: !!e.closest('nav[aria-label="Console"]'),
                            visible: visible};
                }"""
            )
        )
    return trail


async def test_keyboard_only(server: RunningServer, browser: Browser, admin: str) -> None:
    async with browser_context(browser) as context:
        page = await sign_in(context, server, admin, path="/audit")
        trail = await focus_trail(page, 40)
        first = trail[0]
        assert first["tag"] == "a", f"the skip link comes first: {first}"
        assert first["href"].endswith("#main"), f"the skip link comes first: {first}"
        nav_links = {step["href"] for step in trail if step["nav"]}
        for path in ("/console/users", "/console/audit", "/console/cost"):
            assert any(href.endswith(path) for href in nav_links), f"Tab never reached {path}: {trail}"
        assert any(step["tag"] == "button" and step["text"] == "Filter" for step in trail), trail
        # A date-time input's last tab stop is the picker button inside Chromium's own shadow tree, which draws its
        # own focus ring (the input itself then does not match :focus): only its other stops are ours to style.
        ours = [step for step in trail if step["tag"] in ("a", "button", "input", "select", "textarea")]
        unstyled = [step for step in ours if not step["visible"] and step["type"] != "datetime-local"]
        assert unstyled == [], unstyled
        assert any(step["visible"] for step in ours if step["type"] == "datetime-local")
        # The skip link moves the focus to the main content.
        await page.goto(console_url(server, "/audit"))
        await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        assert page.url.endswith("#main")


async def test_screenshots_wide_narrow_and_dark(server: RunningServer, browser: Browser, admin: str) -> None:
    shots: list[Path] = []
    async with browser_context(browser) as context:
        page = await sign_in(context, server, admin)
        for path in PAGES:
            await page.goto(console_url(server, path))
            assert (await page.title()).strip()
            shots.append(await screenshot(page, f"wide{path.replace('/', '-') or '-overview'}"))
        light = await page.evaluate("getComputedStyle(document.body).backgroundColor")

    async with browser_context(browser, viewport={"width": 390, "height": 844}, is_mobile=True) as context:
        page = await sign_in(context, server, admin)
        for path in ("", "/users", "/audit", "/cost"):
            await page.goto(console_url(server, path))
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path or '/'} scrolls sideways by {overflow} px at 390 px"
            shots.append(await screenshot(page, f"narrow{path.replace('/', '-') or '-overview'}"))

    async with browser_context(browser, color_scheme="dark") as context:
        page = await sign_in(context, server, admin)
        dark = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert dark != light, "the console follows prefers-color-scheme: dark"
        shots.append(await screenshot(page, "dark-overview"))
        await page.goto(console_url(server, "/cost"))
        shots.append(await screenshot(page, "dark-cost"))
    assert all(shot.stat().st_size > 1000 for shot in shots)
