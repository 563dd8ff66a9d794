"""The admin console's security rules (issue 11 acceptance 2), against a real gateway on loopback.

- Every value is escaped: hostile client names, user names, tool names and audit values (script tags, attribute
  breakouts, `javascript:` URLs in client_uri and logo_uri) render as text. Checked twice: in Chromium (no dialog
  fires, no injected element exists, no javascript: link) and in the raw HTML (escaped, never raw).
- The headers: a CSP without 'unsafe-inline' (no inline script or style either), no-store, nosniff, no referrer.
- Authorisation on the server: a developer gets 403 on every console URL (every page, every detail page, every POST
  action the administrator's pages offer) and changes nothing; an auditor reads Overview, Audit and Cost without a
  form and gets 403 elsewhere; a stranger is sent to /login; a tenant administrator sees only their tenant (another
  tenant's objects are 404 under /t/T/console, and the session of one tenant is no session in another).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from chamberlain.store.clients import ClientRepository
from chamberlain.store.users import UserRepository
from tests.support.console import (
    PAGES,
    READ_ONLY_PAGES,
    add_user,
    answer_dialogs,
    browser_context,
    console_url,
    module_browser,
    module_server,
    post_actions,
    screenshot,
    sign_in,
    signed_in_http,
)
from tests.support.mcp_calls import MCP_HEADERS
from tests.support.oauth import REDIRECT_URI, register
from tests.support.server import RunningServer, random_name
from tests.support.tenants import access_token, add_tenant

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = pytest.mark.interop

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(1)>'
HOSTILE = SCRIPT + BREAKOUT
JAVASCRIPT_URL = "javascript:alert(document.domain)"
TENANT = "acme"
CSP = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}


@dataclass
class World:
    """What the module's gateway holds: accounts of each kind and hostile objects to render."""

    server: RunningServer
    admin: str = field(default_factory=lambda: random_name("admin"))
    auditor: str = field(default_factory=lambda: random_name("auditor"))
    developer: str = field(default_factory=lambda: random_name("developer"))
    victim_id: str = ""  # an administrator with a live session, which nobody but an administrator may revoke
    victim: str = field(default_factory=lambda: random_name("victim"))
    hostile_user_id: str = ""
    hostile_client_id: str = ""  # registered through DCR with a hostile name
    javascript_client_id: str = ""  # stored with javascript: URLs, as a hand-edited or imported record could be
    tenant_admin: str = field(default_factory=lambda: random_name("acme-admin"))
    tenant_user: str = field(default_factory=lambda: random_name("acme-user"))
    tenant_user_id: str = ""


server = pytest.fixture(scope="module")(module_server)
browser = pytest.fixture(scope="module")(module_browser)


@pytest.fixture(scope="module")
async def world(server: RunningServer) -> World:
    world = World(server)
    await add_user(server, world.admin, ("admin",))
    await add_user(server, world.auditor, ("auditor",))
    await add_user(server, world.developer, ("developer",))
    world.victim_id = await add_user(server, world.victim, ("admin",))
    world.hostile_user_id = await add_user(server, f"{HOSTILE}@example.com", ("developer",))

    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        world.hostile_client_id = str((await register(http, client_name=HOSTILE))["client_id"])
        refused = await http.post(
            "/register",
            json={"client_name": "javascript uris", "redirect_uris": [REDIRECT_URI], "client_uri": JAVASCRIPT_URL},
        )
        assert refused.status_code == 400, "registration itself refuses a javascript: client_uri"
        # A hostile tool name reaches the audit log through a real MCP call (allowed or not, it is recorded).
        token = await access_token(server, server.settings.tenant, server.user, server.resource())
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": HOSTILE, "arguments": {}}}
        await http.post("/mcp/demo", json=call, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})

    world.javascript_client_id = f"js-{secrets.token_hex(4)}"
    metadata = {
        "client_name": f"{HOSTILE} js",
        "client_uri": JAVASCRIPT_URL,
        "logo_uri": JAVASCRIPT_URL,
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code"],
    }
    async with server.engine() as database:
        await ClientRepository(database, server.settings.tenant).add(
            world.javascript_client_id, "static", metadata, None
        )

    await add_tenant(server, TENANT, users={world.tenant_admin: ("admin",), world.tenant_user: ("developer",)})
    async with server.engine() as database:
        tenant_user = await UserRepository(database, TENANT).get_by_username(world.tenant_user)
    assert tenant_user is not None
    world.tenant_user_id = tenant_user.id
    return world


@pytest.fixture(scope="module")
async def victim_http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """The victim, signed in: their session is there to be (not) revoked."""
    async with signed_in_http(world.server, world.victim) as http:
        yield http


@pytest.fixture(scope="module")
async def admin_http(world: World, victim_http: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    async with signed_in_http(world.server, world.admin) as http:
        yield http


def hostile_pages(world: World) -> list[str]:
    return [
        "/users",
        "/users?" + urlencode({"q": SCRIPT}),
        f"/users/{world.hostile_user_id}",
        "/clients",
        f"/clients/{world.hostile_client_id}",
        f"/clients/{world.javascript_client_id}",
        "/servers",
        "/audit",
        "/audit?action=mcp.request",
        "",
        "/dlp",
    ]


async def detail_pages(world: World, http: httpx.AsyncClient) -> list[str]:
    """Console URLs of objects: the detail pages, found from the administrator's list pages."""
    found = [f"/users/{world.victim_id}", f"/clients/{world.hostile_client_id}"]
    audit = await http.get(console_url(world.server, "/audit"))
    assert audit.status_code == 200
    event = re.search(r'href="(?:[^"]*)/console(/audit/[0-9a-f]{32})"', audit.text)
    assert event is not None, "the audit page links its events"
    return [*found, event[1]]


# -- escaping ------------------------------------------------------------------------------------------------------


class _Markup(HTMLParser):
    """What the page's markup (not its text) holds that could run script or carry inline style."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("an inline <script>")
        if tag == "style":
            self.found.append("a <style> element")
        if tag == "img" and dict(attrs).get("src") == "x":
            self.found.append("the injected <img>")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"an event handler attribute {name} on <{tag}>")
            if name == "style":
                self.found.append(f"a style attribute on <{tag}>")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"a javascript: URL in {name} on <{tag}>")


def assert_escaped(html: str, where: str) -> None:
    assert SCRIPT not in html, f"{where}: a raw script tag"
    assert "<img src=x" not in html, f"{where}: a raw img tag"
    markup = _Markup()
    markup.feed(html)
    assert markup.found == [], f"{where}: {markup.found}"


async def test_hostile_values_are_escaped_in_the_html(world: World, admin_http: httpx.AsyncClient) -> None:
    shown = 0
    for path in hostile_pages(world):
        response = await admin_http.get(console_url(world.server, path))
        assert response.status_code == 200, f"{path}: {response.status_code}"
        assert_escaped(response.text, path)
        shown += "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert shown >= 5, "the hostile names appear (escaped) on the users, clients and audit pages"
    user = await admin_http.get(console_url(world.server, f"/users/{world.hostile_user_id}"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in user.text or (
        "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in user.text
    )
    audit = await admin_http.get(console_url(world.server, "/audit?action=mcp.request"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in audit.text, "the hostile tool name is in the audit log, escaped"


async def test_hostile_values_render_as_text_in_chromium(world: World, browser: Browser) -> None:
    async with browser_context(browser) as context:
        page = await sign_in(context, world.server, world.admin)
        dialogs = answer_dialogs(page, accept=False)
        for path in hostile_pages(world):
            await page.goto(console_url(world.server, path))
            await page.wait_for_load_state("load")
            injected = await page.evaluate(
                """() => ({
                    scripts: [...document.scripts].filter(s => !s.src).length,
                    images: document.querySelectorAll('img[src="x"], [onerror], [onload]').length,
                    links: [...document.querySelectorAll('[href], [src], [action]')].filter(e =>
                        /^\\s*javascript:/i.test(e.getAttribute('href') || e.getAttribute('src')
                                               || e.getAttribute('action') || '')).length,
                })"""
            )
            assert injected == {"scripts": 0, "images": 0, "links": 0}, f"{path}: {injected}"
        await page.goto(console_url(world.server, f"/users/{world.hostile_user_id}"))
        assert SCRIPT in await page.locator("h1").inner_text(), "the name shows as the text it is"
        await screenshot(page, "xss-hostile-user")
        await page.goto(console_url(world.server, f"/clients/{world.javascript_client_id}"))
        await screenshot(page, "xss-javascript-client")
        # Every page above was loaded to its `load` event, after which an injected handler would have run.
        assert dialogs == []


# -- headers -------------------------------------------------------------------------------------------------------


def csp_directives(header: str) -> dict[str, str]:
    directives = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition(" ")
        if name:
            directives[name] = value.strip()
    return directives


async def test_every_page_sends_the_security_headers(world: World, admin_http: httpx.AsyncClient) -> None:
    for path in [*PAGES, *await detail_pages(world, admin_http)]:
        response = await admin_http.get(console_url(world.server, path))
        assert response.status_code == 200, f"{path}: {response.status_code}"
        csp = response.headers["content-security-policy"]
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        directives = csp_directives(csp)
        for name, value in CSP.items():
            assert directives.get(name) == value, f"{path}: {name} is {directives.get(name)!r} in {csp!r}"
        assert response.headers["cache-control"] == "no-store", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "no-referrer", path
        assert_escaped(response.text, path)


# -- authorisation ---------------------------------------------------------------------------------------------------


async def every_console_url(
    world: World, admin_http: httpx.AsyncClient
) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """Every page (list and detail) and every POST action the administrator's pages offer, with their fields."""
    pages = [console_url(world.server, path) for path in [*PAGES, *await detail_pages(world, admin_http)]]
    pages.append(console_url(world.server, "/audit/export"))
    actions: dict[str, dict[str, str]] = {}
    for url in pages[:-1]:
        response = await admin_http.get(url)
        for action, fields in post_actions(response.text):
            absolute = httpx.URL(url).join(action)
            assert absolute.host == "127.0.0.1", f"a form posts elsewhere: {action}"
            actions.setdefault(str(absolute), fields)
    # The contract's actions, whether or not a page showed them (the roles form needs a document).
    for path in ("/roles/preview", "/roles"):
        actions.setdefault(console_url(world.server, path), {"document": "enterprise_roles: {}"})
    paths = {urlsplit(action).path for action in actions}
    assert any(re.search(r"/console/users/[^/]+/sessions/[^/]+/revoke$", path) for path in paths), paths
    return pages, list(actions.items())


async def test_a_developer_gets_403_on_every_console_url(
    world: World, admin_http: httpx.AsyncClient, victim_http: httpx.AsyncClient
) -> None:
    pages, actions = await every_console_url(world, admin_http)
    assert len(actions) >= 3
    async with signed_in_http(world.server, world.developer) as developer:
        for url in pages:
            response = await developer.get(url)
            assert response.status_code == 403, f"GET {url}: {response.status_code}"
            assert "text/html" in response.headers["content-type"]
            assert world.victim not in response.text
        origin = {"Origin": world.server.base_url}
        for url, fields in actions:
            response = await developer.post(url, data=fields, headers=origin)
            assert response.status_code == 403, f"POST {url}: {response.status_code}"
    # Nothing the developer posted took effect: the victim's session still opens the console.
    still = await victim_http.get(console_url(world.server))
    assert still.status_code == 200, "a refused revocation revoked nothing"


async def test_an_auditor_reads_overview_audit_and_cost_only(world: World, admin_http: httpx.AsyncClient) -> None:
    pages, actions = await every_console_url(world, admin_http)
    readable = {console_url(world.server, path) for path in READ_ONLY_PAGES}
    async with signed_in_http(world.server, world.auditor) as auditor:
        for url in pages:
            response = await auditor.get(url)
            path = urlsplit(url).path
            if url in readable or re.search(r"/console/audit/[0-9a-f]{32}$", path) or path.endswith("/export"):
                assert response.status_code == 200, f"GET {url}: {response.status_code}"
                assert post_actions(response.text) == [], f"{url} offers an auditor a form"
                nav = re.search(r'<nav aria-label="Console">(.*?)</nav>', response.text, re.DOTALL)
                if nav is not None:
                    linked = set(re.findall(r'href="[^"]*/console(/[a-z]*)?"', nav[1]))
                    assert linked <= {"", "/audit", "/cost"}, (
                        f"the auditor's nav links pages they may not see: {linked}"
                    )
            else:
                assert response.status_code == 403, f"GET {url}: {response.status_code}"
        for url, fields in actions:
            response = await auditor.post(url, data=fields, headers={"Origin": world.server.base_url})
            assert response.status_code == 403, f"POST {url}: {response.status_code}"


async def test_a_stranger_is_sent_to_sign_in(world: World, admin_http: httpx.AsyncClient) -> None:
    pages, actions = await every_console_url(world, admin_http)
    async with httpx.AsyncClient(timeout=30) as stranger:
        for url in pages:
            response = await stranger.get(url)
            assert response.status_code == 303, f"GET {url}: {response.status_code}"
            location = response.headers["location"]
            assert urlsplit(location).path == "/login", location
        for url, fields in actions:
            response = await stranger.post(url, data=fields, headers={"Origin": world.server.base_url})
            assert response.status_code in (303, 403), f"POST {url}: {response.status_code}"
            assert response.status_code == 403 or urlsplit(response.headers["location"]).path == "/login"


async def test_a_cross_site_post_is_refused(world: World, admin_http: httpx.AsyncClient) -> None:
    """An administrator's own session, but the POST comes from another origin or without the CSRF token."""
    _, actions = await every_console_url(world, admin_http)
    revoke = next((url, fields) for url, fields in actions if re.search(r"/sessions/[^/]+/revoke$", urlsplit(url).path))
    url, fields = revoke
    foreign = await admin_http.post(url, data=fields, headers={"Origin": "http://127.0.0.2:9"})
    assert foreign.status_code == 403, foreign.status_code
    tokenless = {name: value for name, value in fields.items() if name != "csrf_token"}
    missing = await admin_http.post(url, data=tokenless, headers={"Origin": world.server.base_url})
    assert missing.status_code == 403, missing.status_code
    forged = await admin_http.post(
        url, data={**fields, "csrf_token": "0" * 64}, headers={"Origin": world.server.base_url}
    )
    assert forged.status_code == 403, forged.status_code


# -- tenants -------------------------------------------------------------------------------------------------------


async def test_a_tenant_administrator_sees_only_their_tenant(world: World, admin_http: httpx.AsyncClient) -> None:
    server = world.server
    default_session_action = next(
        url
        for url, _ in (await every_console_url(world, admin_http))[1]
        if re.search(r"/sessions/[^/]+/revoke$", urlsplit(url).path)
    )
    async with signed_in_http(server, world.tenant_admin, tenant=TENANT) as http:
        users = await http.get(console_url(server, "/users", tenant=TENANT))
        assert users.status_code == 200, users.status_code
        assert world.tenant_user in users.text
        for name in (world.admin, world.developer, world.victim, "alice"):
            assert name not in users.text, f"the default tenant's {name} is listed in {TENANT}"
        clients = await http.get(console_url(server, "/clients", tenant=TENANT))
        assert world.hostile_client_id not in clients.text

        for path in (
            f"/users/{world.victim_id}",
            f"/users/{world.hostile_user_id}",
            f"/clients/{world.hostile_client_id}",
            f"/clients/{world.javascript_client_id}",
        ):
            response = await http.get(console_url(server, path, tenant=TENANT))
            assert response.status_code == 404, f"{path} under /t/{TENANT}: {response.status_code}"
        audit = await http.get(console_url(server, "/audit", tenant=TENANT))
        assert world.admin not in audit.text

        # The default tenant's session, revoked from tenant T's console: not found, and not revoked.
        tenant_path = urlsplit(default_session_action).path.replace("/console/", f"/t/{TENANT}/console/", 1)
        own = await http.get(console_url(server, f"/users/{world.tenant_user_id}", tenant=TENANT))
        assert own.status_code == 200, "the tenant's own user opens"
        forms = post_actions(own.text)
        fields = forms[0][1] if forms else {}  # a CSRF token valid in T, so that only the tenant check refuses
        refused = await http.post(server.base_url + tenant_path, data=fields, headers={"Origin": server.base_url})
        assert refused.status_code == 404, refused.status_code
        assert (await admin_http.get(console_url(server, f"/users/{world.victim_id}"))).text.count(
            'data-testid="session-row"'
        ) >= 1, "the default tenant's session was not revoked"

        # A session of tenant T is no session in the default tenant.
        default = await http.get(console_url(server))
        assert default.status_code == 303, default.status_code
        assert urlsplit(default.headers["location"]).path == "/login"

    # Nor is the default tenant's administrator anyone in T.
    elsewhere = await admin_http.get(console_url(server, tenant=TENANT))
    assert elsewhere.status_code == 303, elsewhere.status_code
    assert urlsplit(elsewhere.headers["location"]).path == f"/t/{TENANT}/login"
