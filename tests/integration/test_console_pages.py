"""The admin console through the real HTTP stack (issue 11): a uvicorn server, the real /login form, the session
cookie, and the pages' forms submitted as a browser would (tests/support/browser.py).

Who sees what (every page for an administrator, 403 everywhere for a developer, read-only pages for an auditor),
CSRF and same-origin checks on every POST, tenant isolation, and that the revocations really revoke: a revoked
session's cookie gets the login page, a revoked consent's refresh token fails at /token. The browser (Playwright),
XSS and bench tests are in test_console_browser.py and bench/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import orjson
import pytest

from chamberlain.cost.records import UsageRecord
from chamberlain.cost.usage import TokenUsage
from chamberlain.store.usage import append_usage, usage_row
from tests.integration import test_admin_api
from tests.integration.test_admin_api import (
    PASSWORD,
    admin_change_count,
    api_url,
    mint,
    new_user,
    sign_in,
    user_named,
    user_tokens,
)
from tests.support.browser import Browser, parse_forms
from tests.support.mcp_calls import MCP_HEADERS
from tests.support.oauth import refresh
from tests.support.server import RunningServer, random_name
from tests.support.tenants import access_token

# The admin API tests' fixtures: a server of this module's own (the tests change roles and add tenants), and the
# default tenant's admin API as its built-in administrator (to set up users and tenants).
server = test_admin_api.server
root = test_admin_api.root

PAGES = ("", "/users", "/groups", "/clients", "/servers", "/roles", "/roles/edit", "/audit", "/cost", "/vault", "/dlp")
READ_ONLY_PAGES = ("", "/audit", "/cost")
AUDITOR_ROLES = """
enterprise_roles:
  admin: {mcp_servers: "*", data_classification_access: "*", administrative_functions: true}
  developer: {mcp_servers: [demo], data_classification_access: [public, internal]}
  auditor: {mcp_servers: [], audit_access: read}
"""


async def signed_in_browser(server: RunningServer, username: str, prefix: str = "") -> Browser:
    browser = Browser(server.base_url)
    await sign_in(browser, username, PASSWORD if username != "admin" else server.admin_password, prefix)
    return browser


@pytest.fixture
async def admin(server: RunningServer, root: httpx.AsyncClient) -> AsyncIterator[Browser]:
    user = await new_user(root, ["admin"])
    async with await signed_in_browser(server, user["username"]) as browser:
        yield browser


def assert_console_page(response: httpx.Response, heading: str | None = None) -> None:
    assert response.status_code == 200, response.text[:500]
    text = response.text
    headings = re.findall(r"<h1[^>]*>(.*?)</h1>", text, re.DOTALL)
    assert len(headings) == 1, headings
    if heading is not None:
        assert headings[0].strip() == heading
    assert '<nav aria-label="Console">' in text
    assert '<main id="main"' in text
    assert 'href="#main"' in text  # the skip link
    assert "<script>" not in text
    assert "style=" not in text
    assert_console_headers(response)


def assert_console_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def post_forms(response: httpx.Response) -> list[str]:
    return [form.action for form in parse_forms(response.text) if form.method.lower() == "post"]


# -- signing in -------------------------------------------------------------------------------------------------------


async def test_signing_in_returns_to_the_console_page(server: RunningServer, root: httpx.AsyncClient) -> None:
    user = await new_user(root, ["admin"])
    async with Browser(server.base_url) as browser:
        sent = await browser.get("/console/audit?outcome=denied")
        assert sent.status_code == 303
        assert sent.headers["location"] == "/login?return_to=/console/audit%3Foutcome%3Ddenied"
        form = await browser.get(sent.headers["location"])
        wrong = await browser.submit(form, {"username": user["username"], "password": "not the password"})
        assert wrong.status_code == 401  # the form again, still returning to the console page
        assert parse_forms(wrong.text)[0].fields["return_to"] == "/console/audit?outcome=denied"
        done = await browser.submit(wrong, {"username": user["username"], "password": PASSWORD})
        assert done.status_code == 303
        assert done.headers["location"] == "/console/audit?outcome=denied"
        assert_console_page(await browser.get(done.headers["location"]), "Audit log")


@pytest.mark.parametrize(
    "return_to",
    ["https://evil.example/console", "//evil.example/console", "/console/../admin", "/consoleevil", "/t/x/console"],
)
async def test_the_login_page_returns_to_console_paths_only(
    server: RunningServer, root: httpx.AsyncClient, return_to: str
) -> None:
    user = await new_user(root, ["admin"])
    async with Browser(server.base_url) as browser:
        form = await browser.http.get("/login", params={"return_to": return_to})
        assert form.status_code == 200
        done = await browser.submit(form, {"username": user["username"], "password": PASSWORD})
        assert done.status_code == 303
        assert done.headers["location"] == "/login/done"


# -- who sees what ----------------------------------------------------------------------------------------------------


async def test_every_page_renders_for_an_administrator(admin: Browser) -> None:
    headings = {"": "Overview", "/users": "Users", "/groups": "Groups", "/clients": "OAuth clients"}
    headings |= {"/servers": "MCP servers", "/roles": "Roles", "/audit": "Audit log", "/cost": "Cost"}
    headings |= {"/vault": "Vault", "/dlp": "Data protection", "/roles/edit": "Edit roles"}
    for path in PAGES:
        page = await admin.get(f"/console{path}")
        assert_console_page(page, headings[path])
    overview = (await admin.get("/console")).text
    for figure in ("requests-today", "denials-today", "dlp-hits-today", "spend-today", "spend-month", "error-rate"):
        assert f'data-testid="{figure}"' in overview
    assert re.search(r'data-testid="audit-chain"[^>]*>not verified yet<', overview)
    cost = (await admin.get("/console/cost")).text
    assert '<svg data-testid="cost-chart" role="img" aria-labelledby="cost-chart-title"' in cost
    assert cost.count("<title>") >= 31  # the chart's title and one per day's bar
    for table in ("cost-by-model", "cost-by-user", "cost-by-team", "forecast"):
        assert f'data-testid="{table}"' in cost
    for query, found in (("ADMIN", True), ("no-such-user", False), ("%", False), ("_", False)):
        searched = await admin.http.get("/console/users", params={"q": query})
        assert ('data-testid="user-row"' in searched.text) is found, query  # any case; % and _ are not wildcards
    users = await admin.http.get("/console/users", params={"q": "admin"})
    assert 'data-testid="user-row"' in users.text
    assert 'label for="q">Search users<' in users.text
    assert "Not found" in (await admin.get("/console/no-such-page")).text


async def test_a_developer_gets_403_on_every_console_url(server: RunningServer, root: httpx.AsyncClient) -> None:
    developer = await new_user(root, ["developer"])
    target = await user_named(server, "admin")
    async with await signed_in_browser(server, developer["username"]) as browser:
        for path in (*PAGES, "/users/" + target.id, "/audit/" + "0" * 32, "/audit/export", "/no-such-page"):
            page = await browser.get(f"/console{path}")
            assert page.status_code == 403, path
            assert "Forbidden" in page.text
            assert target.id not in page.text
            assert_console_headers(page)
        for path in ("/audit/verify", "/roles", f"/users/{target.id}/sign-out", "/roles/preview"):
            assert (await browser.http.post(f"/console{path}", data={})).status_code == 403, path


async def test_an_auditor_reads_overview_audit_and_cost_only(server: RunningServer, admin: Browser) -> None:
    # The auditor role is added through the console's own role editor: preview, then confirm.
    editor = await admin.get("/console/roles/edit")
    preview = await admin.submit(editor, {"document": AUDITOR_ROLES})
    assert preview.status_code == 200, preview.text[:500]
    diff = re.search(r'<pre class="mono diff" data-testid="roles-diff">(.*?)</pre>', preview.text, re.DOTALL)
    assert diff is not None
    assert "+  auditor:" in diff.group(1)
    before = await admin_change_count(server)
    saved = await admin.submit(preview, {})
    assert saved.status_code == 303
    assert saved.headers["location"] == "/console/roles?done=roles-saved"
    assert await admin_change_count(server) == before + 1  # audited as the admin API audits PUT /roles
    assert "auditor" in (await admin.get("/console/roles")).text

    async with httpx.AsyncClient(base_url=api_url(server), timeout=30) as api:
        api.headers["Authorization"] = "Bearer " + mint(server, (await user_named(server, "admin")).id)
        auditor = await new_user(api, ["auditor"])
    async with await signed_in_browser(server, auditor["username"]) as browser:
        for path in READ_ONLY_PAGES:
            page = await browser.get(f"/console{path}")
            assert_console_page(page)
            assert post_forms(page) == [], path  # read-only: no forms that change anything
            nav = page.text.split('<nav aria-label="Console">', 1)[1].split("</nav>", 1)[0]
            assert "/console/users" not in nav
        assert (await browser.get("/console/audit/export")).status_code == 200
        for path in ("/users", "/clients", "/roles", "/vault", "/dlp", "/servers", "/groups"):
            assert (await browser.get(f"/console{path}")).status_code == 403, path
        token_page = await admin.get("/console/audit")
        token = parse_forms(token_page.text)[0].fields["csrf_token"]
        for path in ("/audit/verify", "/audit"):
            refused = await browser.http.post(f"/console{path}", data={"csrf_token": token})
            assert refused.status_code == 403, path


async def test_an_invalid_role_document_is_refused_and_nothing_is_saved(server: RunningServer, admin: Browser) -> None:
    before = (await admin.get("/console/roles")).text
    changes = await admin_change_count(server)
    editor = await admin.get("/console/roles/edit")
    for document, message in (
        ("enterprise_roles: {admin: {mcp_servers: 5}}", "enterprise_roles.admin"),
        ("enterprise_roles: {dev: {mcp_servers: []}}", "no longer have administrative functions"),
        ("{not yaml", "neither YAML nor JSON"),
    ):
        refused = await admin.submit(editor, {"document": document})
        assert refused.status_code == 422
        assert message in refused.text
        # Straight to the confirm step too: validated again there.
        token = parse_forms(editor.text)[0].fields["csrf_token"]
        direct = await admin.http.post("/console/roles", data={"csrf_token": token, "document": document})
        assert direct.status_code == 422
    assert (await admin.get("/console/roles")).text == before
    assert await admin_change_count(server) == changes


# -- CSRF -------------------------------------------------------------------------------------------------------------


async def test_posts_need_the_session_bound_token_and_this_origin(
    server: RunningServer, root: httpx.AsyncClient, admin: Browser
) -> None:
    victim = await new_user(root, ["developer"])
    async with await signed_in_browser(server, victim["username"]) as their_browser:
        page = await admin.get(f"/console/users/{victim['id']}")
        assert page.text.count('data-testid="session-row"') == 1
        revoke = next(action for action in post_forms(page) if action.endswith("/revoke"))
        token = parse_forms(page.text)[0].fields["csrf_token"]
        async with await signed_in_browser(server, (await new_user(root, ["admin"]))["username"]) as other_admin:
            other_token = parse_forms((await other_admin.get(f"/console/users/{victim['id']}")).text)[0].fields[
                "csrf_token"
            ]
        for data, headers in (
            ({}, {}),  # no token
            ({"csrf_token": "0" * 64}, {}),  # a made-up one
            ({"csrf_token": other_token}, {}),  # another session's
            ({"csrf_token": token}, {"Origin": "https://evil.example"}),  # the right token, from another site
            ({"csrf_token": token}, {"Sec-Fetch-Site": "cross-site"}),
            ({"csrf_token": token}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}),  # a sandboxed page
            ({"csrf_token": token}, {"Origin": "null"}),
        ):
            refused = await admin.http.post(revoke, data=data, headers=headers)
            assert refused.status_code == 403, (data, headers)
            assert_console_headers(refused)
        assert (await their_browser.get("/login/done")).status_code == 200
        assert (await admin.get(f"/console/users/{victim['id']}")).text.count('data-testid="session-row"') == 1


# -- revocations ------------------------------------------------------------------------------------------------------


async def test_revoking_a_session_ends_it(server: RunningServer, root: httpx.AsyncClient, admin: Browser) -> None:
    other = await new_user(root, ["admin"])
    async with await signed_in_browser(server, other["username"]) as their_browser:
        assert (await their_browser.get("/console")).status_code == 200
        page = await admin.get(f"/console/users/{other['id']}")
        assert "Revoke session" in page.text
        forms = parse_forms(page.text)
        index = next(i for i, form in enumerate(forms) if form.action.endswith("/revoke"))
        before = await admin_change_count(server)
        done = await admin.submit(page, {}, form_index=index)
        assert done.status_code == 303
        assert done.headers["location"] == f"/console/users/{other['id']}?done=session-revoked"
        assert "The session was revoked." in (await admin.get(done.headers["location"])).text
        assert await admin_change_count(server) == before + 1
        gone = await their_browser.get("/console")
        assert gone.status_code == 303
        assert gone.headers["location"].startswith("/login?return_to=/console")


async def test_signing_out_everywhere(server: RunningServer, root: httpx.AsyncClient, admin: Browser) -> None:
    other = await new_user(root, ["admin"])
    async with await signed_in_browser(server, other["username"]) as their_browser:
        page = await admin.get(f"/console/users/{other['id']}")
        form = next(form for form in parse_forms(page.text) if form.action.endswith("/sign-out"))
        # As a browser posts it under Referrer-Policy no-referrer: Origin null, and Sec-Fetch-Site says same-origin.
        headers = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        done = await admin.http.post(form.action, data=form.fields, headers=headers)
        assert done.status_code == 303
        assert done.headers["location"].endswith("?done=signed-out")
        assert (await their_browser.get("/console")).status_code == 303


async def test_revoking_a_consent_revokes_its_grants(
    server: RunningServer, root: httpx.AsyncClient, admin: Browser
) -> None:
    user = await new_user(root, ["developer"])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        client_id, tokens = await user_tokens(server, http, user["username"])
        clients = await admin.get("/console/clients")
        assert 'data-testid="client-row"' in clients.text
        assert client_id in clients.text
        page = await admin.get(f"/console/clients/{client_id}")
        assert_console_page(page, "OAuth client")
        assert page.text.count('data-testid="consent-row"') == 1
        assert "Revoke consent" in page.text
        done = await admin.submit(page, {})
        assert done.status_code == 303
        assert done.headers["location"].endswith("?done=consent-revoked")
        assert 'data-testid="consent-row"' not in (await admin.get(f"/console/clients/{client_id}")).text
        assert (await refresh(http, client_id, tokens["refresh_token"])).json()["error"] == "invalid_grant"
        # A consent id that is not this client's is not found.
        forged = await admin.http.post(
            f"/console/clients/{client_id}/consents/999999/revoke",
            data={"csrf_token": parse_forms(page.text)[0].fields["csrf_token"]},
        )
        assert forged.status_code == 404


# -- tenants ----------------------------------------------------------------------------------------------------------


async def test_a_tenant_administrator_sees_only_their_tenant(
    server: RunningServer, root: httpx.AsyncClient, admin: Browser
) -> None:
    tenant_id = random_name("t")
    created = await root.post(
        "/tenants",
        json={"id": tenant_id, "name": "Other", "initial_admin": {"username": "root", "password": PASSWORD}},
    )
    assert created.status_code == 201, created.text
    default_admin = await user_named(server, "admin")
    prefix = f"/t/{tenant_id}"
    headers = {"Authorization": "Bearer " + mint(server, created.json()["initial_admin_id"], tenant_id=tenant_id)}
    async with httpx.AsyncClient(base_url=api_url(server, tenant_id), headers=headers, timeout=30) as api:
        tenant_admin = await new_user(api, ["admin"])
    # The default tenant's session does not open the other tenant's console (each tenant has its own cookie).
    assert (await admin.get(f"{prefix}/console")).status_code == 303
    async with Browser(server.base_url) as browser:
        await sign_in(browser, tenant_admin["username"], PASSWORD, prefix)
        users = await browser.get(f"{prefix}/console/users")
        assert_console_page(users, "Users")
        assert users.text.count('data-testid="user-row"') == 2  # root and this administrator
        assert default_admin.id not in users.text
        assert f">{tenant_admin['username']}</a>" in users.text
        assert f'href="{prefix}/console/users"' in users.text
        for path in (f"/users/{default_admin.id}", "/clients/no-such-client", "/audit/" + "f" * 32):
            assert (await browser.get(f"{prefix}/console{path}")).status_code == 404, path
        # Nor can it act on the default tenant's objects, with a valid token of its own session.
        detail = await browser.get(f"{prefix}/console/users/{tenant_admin['id']}")
        token = parse_forms(detail.text)[-1].fields["csrf_token"]
        signed_out = await browser.http.post(
            f"{prefix}/console/users/{default_admin.id}/sign-out", data={"csrf_token": token}
        )
        assert signed_out.status_code == 404
    assert (await admin.get("/console")).status_code == 200  # the default tenant's sessions were untouched


# -- the audit log ----------------------------------------------------------------------------------------------------


async def test_the_audit_log_filters_pages_exports_and_verifies(server: RunningServer, admin: Browser) -> None:
    page = await admin.http.get("/console/audit", params={"action": "auth.sign_in", "outcome": "success"})
    assert_console_page(page, "Audit log")
    assert '<form role="search" aria-label="Filter audit events" method="get"' in page.text
    actions = re.findall(r'data-field="action">([^<]*)<', page.text)
    outcomes = re.findall(r'data-field="outcome">([^<]*)<', page.text)
    assert actions
    assert set(actions) == {"auth.sign_in"}
    assert set(outcomes) == {"success"}
    event_id = re.search(r'href="/console/audit/([0-9a-f]{32})"', page.text)
    assert event_id is not None
    detail = await admin.get(f"/console/audit/{event_id.group(1)}")
    assert_console_page(detail, "Audit event")
    exported = await admin.http.get("/console/audit/export", params={"action": "auth.sign_in", "outcome": "success"})
    assert exported.status_code == 200
    assert "attachment" in exported.headers["content-disposition"]
    lines = [orjson.loads(line) for line in exported.text.splitlines()]
    assert len(lines) >= len(actions)
    assert {line["action"] for line in lines} == {"auth.sign_in"}
    seqs = [line["seq"] for line in lines]
    assert seqs == sorted(seqs, reverse=True)
    assert (await admin.http.get("/console/audit", params={"from": "yesterday"})).status_code == 400
    assert (await admin.http.get("/console/audit", params={"outcome": "<script>"})).status_code == 400
    verified = await admin.submit(page, {}, form_index=0)
    assert verified.status_code == 303
    status = await admin.get("/console/audit")
    assert re.search(r'data-testid="chain-status"[^>]*>\s*<p>Chain: <strong>verified</strong>', status.text)
    assert re.search(r'data-testid="audit-chain"[^>]*>verified<', (await admin.get("/console")).text)


# -- cost -------------------------------------------------------------------------------------------------------------


async def test_the_cost_page_charts_and_tabulates_recorded_usage(server: RunningServer, admin: Browser) -> None:
    user = await user_named(server, "admin")
    now = datetime.now(UTC)
    earlier = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2, seconds=1)  # 3 days back
    rows = [
        usage_row(
            UsageRecord(
                server.settings.tenant,
                user.id,
                "payments",
                "claude-code",
                "claude-sonnet-4-5-20250929",
                None,
                TokenUsage(1_000, 500, 0, 0),
                Decimal("1.25"),
                100.0,
                at,
                "proxy",
            )
        )
        for at in (now - timedelta(seconds=1), now - timedelta(seconds=2), earlier)
    ]
    async with server.engine() as database, database.begin() as connection:
        await append_usage(connection, rows)
    page = await admin.get("/console/cost")
    assert_console_page(page, "Cost")
    chart = page.text.split('<svg data-testid="cost-chart"', 1)[1].split("</svg>", 1)[0]
    assert f"<title>{now:%m-%d}: $2.50</title>" in chart  # today's bar, with its value for screen readers
    assert f"<title>{earlier:%m-%d}: $1.25</title>" in chart  # the last second of the day three days back
    assert f"<title>{earlier + timedelta(days=1):%m-%d}: $0.00</title>" in chart
    by_user = page.text.split('data-testid="cost-by-user"', 1)[1].split("</table>", 1)[0]
    assert "<td>admin</td>" in by_user  # the user's name, not only the id
    by_team = page.text.split('data-testid="cost-by-team"', 1)[1].split("</table>", 1)[0]
    assert "<td>payments</td>" in by_team
    overview = (await admin.get("/console")).text
    assert re.search(r'data-testid="spend-today">\$2\.50<', overview)
    assert re.search(r'data-testid="requests-today">[1-9][0-9]*<', overview)  # the LLM requests count


async def test_the_servers_page_shows_what_the_gateway_saw_of_each_server(
    server: RunningServer, admin: Browser
) -> None:
    token = await access_token(server, server.settings.tenant, server.user, server.resource())
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        answer = await http.post("/mcp/demo", json=call, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    for _ in range(50):  # the page reads events delivered off the request path
        page = await admin.get("/console/servers")
        assert_console_page(page, "MCP servers")
        row = re.findall(r"<tr data-testid=\"server-row\">(.*?)</tr>", page.text, re.DOTALL)[0]
        if "add" in row:
            break
        await asyncio.sleep(0.1)
    assert re.search(r'data-testid="server-health">ok<', row), row
    assert '<td class="mono">add' in row
