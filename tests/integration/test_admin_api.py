"""The admin API through the real HTTP stack, on SQLite and PostgreSQL: who may use it (tokens, sessions with CSRF,
roles read from the store on each request), every resource's operations, RFC 9457 problems for every error,
secrets never returned, changes audited first (and refused when they cannot be), and tenant isolation: an
administrator of one tenant gets 404 for every object of another."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from chamberlain.audit.events import Action
from chamberlain.audit.log import AuditUnavailable
from chamberlain.crypto.tokens import digest
from chamberlain.store.browser_sessions import BrowserSessionRepository, NewSession
from chamberlain.store.consents import ConsentRepository
from chamberlain.store.schema import audit_events
from chamberlain.store.users import User, UserRepository
from chamberlain.tenancy.tenant import Tenant
from tests.conftest import require_postgres
from tests.support.browser import Browser
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, refresh, register
from tests.support.server import RunningServer, postgres_database, random_name, running_server

PROBLEM = "application/problem+json"
PASSWORD = "a long enough password"


# -- the server -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of this module's own: the tests change roles, tenants and quotas, which others must not see."""
    data_dir: Path = tmp_path_factory.mktemp(f"admin-{request.param}")
    if request.param == "sqlite":
        with running_server(data_dir) as running:
            yield running
        return
    require_postgres()
    with postgres_database() as url, running_server(data_dir, url) as running:
        yield running


def tenant(server: RunningServer, tenant_id: str | None = None) -> Tenant:
    found = server.state.tenant(tenant_id or server.settings.tenant)
    assert found is not None
    return found


def mint(
    server: RunningServer,
    subject: str,
    *,
    tenant_id: str | None = None,
    audience: str | None = None,
    issuer_tenant: str | None = None,
) -> str:
    """An access token of `issuer_tenant` (default: `tenant_id`) for the admin API of `tenant_id`."""
    target = tenant(server, tenant_id)
    issuer = tenant(server, issuer_tenant or tenant_id)
    return issuer.token_issuer.issue(
        subject=subject,
        client_id="test",
        audience=audience or target.admin_resource,
        scopes=frozenset(),
        tenant=issuer.id,
        grant_id=None,
        auth_time=None,
    ).token


async def user_named(server: RunningServer, username: str) -> User:
    """Read through an engine of the test's own: the server's is bound to the server thread's event loop."""
    async with server.engine() as database:
        user = await UserRepository(database, server.settings.tenant).get_by_username(username)
    assert user is not None
    return user


def api_url(server: RunningServer, tenant_id: str | None = None) -> str:
    return server.base_url + (f"/t/{tenant_id}" if tenant_id else "") + "/admin/api"


@pytest.fixture
async def root(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """The default tenant's API as its built-in administrator (a platform administrator)."""
    admin = await user_named(server, "admin")
    headers = {"Authorization": f"Bearer {mint(server, admin.id)}"}
    async with httpx.AsyncClient(base_url=api_url(server), headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
async def anonymous(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url(server), timeout=30) as client:
        yield client


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert "Traceback" not in response.text
    return body


async def new_user(
    client: httpx.AsyncClient, roles: list[str], *, name: str | None = None, must_change: bool = False
) -> dict[str, Any]:
    response = await client.post(
        "/users",
        json={
            "username": name or random_name("user"),
            "password": PASSWORD,
            "roles": roles,
            "must_change_password": must_change,
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def admin_change_count(server: RunningServer) -> int:
    async with server.engine() as database, database.connect() as connection:
        count = await connection.scalar(
            select(func.count()).select_from(audit_events).where(audit_events.c.action == str(Action.ADMIN_CHANGE))
        )
    return int(count or 0)


async def sign_in(browser: Browser, username: str, password: str, prefix: str = "") -> None:
    page = await browser.get(f"{prefix}/login")
    assert page.status_code == 200, page.text[:300]
    done = await browser.submit(page, {"username": username, "password": password})
    assert done.status_code == 303, done.text[:300]


async def user_tokens(server: RunningServer, http: httpx.AsyncClient, username: str) -> tuple[str, dict[str, Any]]:
    """A client registered, `username` signed in and consented; the client id and its token response."""
    client_id = (await register(http))["client_id"]
    pkce = Pkce.new()
    async with Browser(server.base_url) as browser:
        redirect = await browser.authorize(
            authorization_url(client_id, server.resource(), pkce), username=username, password=PASSWORD
        )
    response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
    assert response.status_code == 200, response.text
    return client_id, dict(response.json())


# -- authentication and authorisation -------------------------------------------------------------------------------


async def test_no_credentials_is_401_with_a_bearer_challenge(anonymous: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/users"), ("POST", "/users"), ("GET", "/tenants"), ("DELETE", "/sessions/00")):
        response = await anonymous.request(method, path)
        body = assert_problem(response, 401)
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert "error=" not in challenge  # RFC 6750 §3.1: no error code when no credential was sent
        assert "detail" in body


async def test_a_body_is_not_read_before_authentication(anonymous: httpx.AsyncClient) -> None:
    # Not a validation error (422) or a JSON error: the caller is not known, so nothing about the body is said.
    response = await anonymous.post("/users", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(response, 401)


async def test_malformed_and_invalid_tokens_are_401(server: RunningServer, anonymous: httpx.AsyncClient) -> None:
    basic = await anonymous.get("/users", headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert_problem(basic, 401)
    assert 'error="invalid_request"' in basic.headers["www-authenticate"]
    garbage = await anonymous.get("/users", headers={"Authorization": "Bearer not-a-jwt"})
    assert_problem(garbage, 401)
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]
    admin = await user_named(server, "admin")
    # A token for an MCP server (another audience) does not open the admin API.
    for_demo = mint(server, admin.id, audience=server.resource("demo"))
    response = await anonymous.get("/users", headers={"Authorization": f"Bearer {for_demo}"})
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_user_without_administrative_functions_is_403(
    server: RunningServer, anonymous: httpx.AsyncClient
) -> None:
    alice = await user_named(server, server.user)
    headers = {"Authorization": f"Bearer {mint(server, alice.id)}"}
    for method, path in (("GET", "/users"), ("GET", "/me"), ("POST", "/users"), ("PUT", "/roles")):
        assert_problem(await anonymous.request(method, path, headers=headers, json={}), 403)
    # A token whose subject is no user (client credentials) authorises nobody.
    client_token = mint(server, "some-client")
    assert_problem(await anonymous.get("/users", headers={"Authorization": f"Bearer {client_token}"}), 403)


async def test_roles_are_read_from_the_store_on_every_request(
    server: RunningServer, root: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    second = await new_user(root, ["admin"])
    headers = {"Authorization": f"Bearer {mint(server, second['id'])}"}
    assert (await anonymous.get("/me", headers=headers)).status_code == 200
    # Demoted: the same (unexpired) token no longer administers anything.
    assert (await root.patch(f"/users/{second['id']}", json={"roles": ["developer"]})).status_code == 200
    assert_problem(await anonymous.get("/me", headers=headers), 403)
    # Disabled: the token is refused outright.
    await root.patch(f"/users/{second['id']}", json={"roles": ["admin"], "disabled": True})
    response = await anonymous.get("/me", headers=headers)
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_the_session_cookie_needs_a_csrf_token_for_unsafe_methods(
    server: RunningServer, root: httpx.AsyncClient
) -> None:
    admin = await new_user(root, ["admin"])
    group = random_name("console-group")
    async with Browser(server.base_url) as browser:
        await sign_in(browser, admin["username"], PASSWORD)
        me = await browser.http.get("/admin/api/me")
        assert me.status_code == 200, me.text
        assert me.json()["authenticated_by"] == "session"
        token = me.json()["csrf_token"]
        assert token
        # Reading needs no token.
        assert (await browser.http.get("/admin/api/groups")).status_code == 200
        url = f"/admin/api/groups/{group}"
        body = {"roles": ["developer"]}
        assert_problem(await browser.http.put(url, json=body), 403)
        assert_problem(await browser.http.put(url, json=body, headers={"X-CSRF-Token": "0" * len(token)}), 403)
        foreign = {"X-CSRF-Token": token, "Origin": "https://attacker.example"}
        assert_problem(await browser.http.put(url, json=body, headers=foreign), 403)
        assert (await root.get(f"/groups/{group}")).status_code == 404  # none of those changed anything
        same_origin = {"X-CSRF-Token": token, "Origin": server.base_url}
        accepted = await browser.http.put(url, json=body, headers=same_origin)
        assert accepted.status_code == 200, accepted.text
        assert (await browser.http.delete(url, headers={"X-CSRF-Token": token})).status_code == 204
    # Another browser session's token does not fit this one.
    async with Browser(server.base_url) as other:
        await sign_in(other, admin["username"], PASSWORD)
        response = await other.http.put(f"/admin/api/groups/{group}", json=body, headers={"X-CSRF-Token": token})
        assert_problem(response, 403)


async def test_a_non_administrator_session_is_403(server: RunningServer) -> None:
    async with Browser(server.base_url) as browser:
        await sign_in(browser, server.user, server.user_password)
        assert_problem(await browser.http.get("/admin/api/users"), 403)


# -- problems for every error -----------------------------------------------------------------------------------------


async def test_unknown_paths_methods_and_tenants_are_problems(server: RunningServer, root: httpx.AsyncClient) -> None:
    assert_problem(await root.get("/no-such-resource"), 404)
    not_allowed = await root.delete("/roles")
    assert_problem(not_allowed, 405)
    assert "GET" in not_allowed.headers["allow"]
    async with httpx.AsyncClient(timeout=30) as http:
        assert_problem(await http.get(api_url(server, "no-such-tenant") + "/users"), 404)
        assert_problem(await http.get(api_url(server, "no-such-tenant") + "/openapi.json"), 404)
        # The default tenant has one URL: not also /t/default.
        assert_problem(await http.get(api_url(server, server.settings.tenant) + "/users"), 404)


async def test_invalid_input_is_422_naming_every_member_without_echoing_it(root: httpx.AsyncClient) -> None:
    secret = "pw-" + secrets.token_hex(8)
    response = await root.post(
        "/users",
        json={"username": " padded ", "password": secret, "roles": ["bad role!"], "surprise": True},
    )
    body = assert_problem(response, 422)
    pointers = {error["pointer"] for error in body["errors"]}
    assert {"/username", "/roles/0", "/surprise"} <= pointers
    assert secret not in response.text
    malformed = await root.post("/users", content=b"{", headers={"content-type": "application/json"})
    assert_problem(malformed, 422)
    short = await root.post("/users", json={"username": random_name("u"), "password": "short", "roles": []})
    assert [error["pointer"] for error in assert_problem(short, 422)["errors"]] == ["/password"]
    assert "short" not in short.text


async def test_a_large_body_is_refused_before_it_is_read(root: httpx.AsyncClient) -> None:
    response = await root.put("/roles", content=b"x" * (1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert_problem(response, 413)


async def test_the_openapi_document_is_public_and_names_its_mount_point(server: RunningServer) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        document = (await http.get(api_url(server) + "/openapi.json")).json()
        assert document["servers"] == [{"url": "/admin/api"}]
        assert "/users/{user_id}" in document["paths"]
        responses = document["paths"]["/users"]["post"]["responses"]
        assert set(responses["422"]["content"]) == {PROBLEM}
        assert "HTTPValidationError" not in document["components"]["schemas"]


async def test_answers_are_not_cached(root: httpx.AsyncClient) -> None:
    response = await root.get("/users")
    assert response.headers["cache-control"] == "no-store"


# -- users ------------------------------------------------------------------------------------------------------------


async def test_users_are_created_read_paged_changed_and_deleted(server: RunningServer, root: httpx.AsyncClient) -> None:
    prefix = random_name("page")
    made = [await new_user(root, ["developer"], name=f"{prefix}-{index}") for index in range(5)]
    assert all(user["roles"] == ["developer"] and not user["must_change_password"] for user in made)
    assert PASSWORD not in str(made)
    seen: list[str] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"page_size": 2, **({"page_token": token} if token else {})}
        page = (await root.get("/users", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [user["username"] for user in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == sorted(seen)
    assert [f"{prefix}-{index}" for index in range(5)] == [name for name in seen if name.startswith(prefix)]
    by_name = (await root.get("/users", params={"username": f"{prefix}-3"})).json()["items"]
    assert [user["id"] for user in by_name] == [made[3]["id"]]
    assert_problem(await root.get("/users", params={"page_token": "bm90LWEtdG9rZW4"}), 400)

    user = made[0]
    created = await root.post("/users", json={"username": user["username"], "password": PASSWORD})
    assert_problem(created, 409)
    assert (await root.get(f"/users/{user['id']}")).json() == user
    changed = await root.patch(f"/users/{user['id']}", json={"roles": ["admin", "developer"], "disabled": True})
    assert changed.status_code == 200
    assert changed.json()["roles"] == ["admin", "developer"]
    assert changed.json()["disabled"] is True
    unknown_role = await root.patch(f"/users/{user['id']}", json={"roles": ["developer", "no-such-role"]})
    assert [error["pointer"] for error in assert_problem(unknown_role, 422)["errors"]] == ["/roles/1"]
    assert (await root.delete(f"/users/{user['id']}")).status_code == 204
    assert_problem(await root.get(f"/users/{user['id']}"), 404)
    assert_problem(await root.delete(f"/users/{user['id']}"), 404)
    async with server.engine() as database:
        assert await UserRepository(database, server.settings.tenant).get(user["id"]) is None


async def test_administrators_cannot_lock_themselves_out(server: RunningServer, root: httpx.AsyncClient) -> None:
    me = (await root.get("/me")).json()
    for change in ({"disabled": True}, {"roles": ["developer"]}):
        assert_problem(await root.patch(f"/users/{me['user_id']}", json=change), 409)
    assert_problem(await root.delete(f"/users/{me['user_id']}"), 409)
    assert (await root.get("/me")).status_code == 200


async def test_a_role_change_revokes_the_users_grants(server: RunningServer, root: httpx.AsyncClient) -> None:
    user = await new_user(root, ["developer"])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        client_id, tokens = await user_tokens(server, http, user["username"])
        first = await refresh(http, client_id, tokens["refresh_token"])
        assert first.status_code == 200, first.text
        await root.patch(f"/users/{user['id']}", json={"roles": ["developer", "admin"]})
        response = await refresh(http, client_id, first.json()["refresh_token"])
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"


async def test_signing_a_user_out_everywhere(server: RunningServer, root: httpx.AsyncClient) -> None:
    user = await new_user(root, ["developer"])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        client_id, tokens = await user_tokens(server, http, user["username"])
        async with Browser(server.base_url) as browser:
            await sign_in(browser, user["username"], PASSWORD)
            listed = (await root.get("/sessions", params={"user_id": user["id"]})).json()["items"]
            assert len(listed) == 2  # the consent browser's and this one's
            assert all(session["user_id"] == user["id"] and len(session["handle"]) == 32 for session in listed)
            result = await root.delete(f"/users/{user['id']}/sessions")
            assert result.status_code == 200, result.text
            assert result.json() == {"sessions_revoked": 2, "grants_revoked": 1, "consents_withdrawn": 1}
            assert (await root.get("/sessions", params={"user_id": user["id"]})).json()["items"] == []
        assert (await refresh(http, client_id, tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_one_session_is_ended_by_its_handle(server: RunningServer, root: httpx.AsyncClient) -> None:
    user = await new_user(root, ["developer"])
    async with Browser(server.base_url) as first, Browser(server.base_url) as second:
        await sign_in(first, user["username"], PASSWORD)
        await sign_in(second, user["username"], PASSWORD)
        listed = (await root.get("/sessions", params={"user_id": user["id"], "page_size": 1})).json()
        assert len(listed["items"]) == 1
        assert listed["next_page_token"]
        newest = listed["items"][0]["handle"]
        assert (await root.delete(f"/sessions/{newest}")).status_code == 204
        assert_problem(await root.delete(f"/sessions/{newest}"), 404)
        remaining = (await root.get("/sessions", params={"user_id": user["id"]})).json()["items"]
        assert [session["handle"] for session in remaining] != [newest]
        assert len(remaining) == 1


# -- roles and groups -------------------------------------------------------------------------------------------------


async def test_the_role_document_is_validated_stored_and_applied(
    server: RunningServer, root: httpx.AsyncClient
) -> None:
    original = (await root.get("/roles")).json()
    assert original["editable"] is True
    assert "admin" in original["administrative_roles"]
    document = {
        "enterprise_roles": {
            "admin": {"mcp_servers": "*", "data_classification_access": "*", "administrative_functions": True},
            "developer": {"mcp_servers": ["demo", "github"], "session_duration": 240},
            "auditor": {"mcp_servers": [], "audit_access": "read"},
        }
    }
    try:
        response = await root.put("/roles", json=document)
        assert response.status_code == 200, response.text
        stored = response.json()
        assert stored["source"] == "stored"
        assert any("'github'" in warning for warning in stored["warnings"])  # reported, not fatal
        assert set(tenant(server).roles.enterprise_roles) == {"admin", "developer", "auditor"}  # applied at once
        assert (await root.get("/roles")).json()["document"]["enterprise_roles"]["developer"]["session_duration"] == 240
        unknown_key = {"enterprise_roles": {"admin": {**document["enterprise_roles"]["admin"], "colour": "red"}}}
        assert [e["pointer"] for e in assert_problem(await root.put("/roles", json=unknown_key), 422)["errors"]] == [
            "/enterprise_roles/admin/colour"
        ]
        lockout = {"enterprise_roles": {"admin": {"mcp_servers": "*"}}}
        assert_problem(await root.put("/roles", json=lockout), 409)
    finally:
        restored = await root.put("/roles", json=original["document"])
        assert restored.status_code == 200, restored.text


async def test_group_mappings(root: httpx.AsyncClient) -> None:
    group = "CN=Platform Engineers,OU=Groups/Europe,DC=example,DC=com"
    url = "/groups/" + group.replace("/", "%2F")
    assert_problem(await root.get(url), 404)
    created = await root.put(url, json={"roles": ["developer", "admin", "developer"]})
    assert created.status_code == 200, created.text
    assert created.json()["group"] == group
    assert created.json()["roles"] == ["admin", "developer"]
    assert (await root.put(url, json={"roles": ["developer"]})).json()["roles"] == ["developer"]
    assert group in [item["group"] for item in (await root.get("/groups")).json()["items"]]
    assert_problem(await root.put(url, json={"roles": ["no-such-role"]}), 422)
    assert_problem(await root.put(url, json={"roles": []}), 422)
    assert (await root.delete(url)).status_code == 204
    assert_problem(await root.delete(url), 404)


# -- clients and consents ---------------------------------------------------------------------------------------------


async def test_clients_are_listed_and_revoked_with_their_grants_and_consents(
    server: RunningServer, root: httpx.AsyncClient
) -> None:
    user = await new_user(root, ["developer"])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        client_id, tokens = await user_tokens(server, http, user["username"])
        client = (await root.get(f"/clients/{client_id}")).json()
        assert client["client_name"] == "test client"
        assert client["revoked_at"] is None
        assert not any("secret" in key for key in client["metadata"] if not key.endswith("_expires_at"))
        listed: list[str] = []
        token: str | None = None
        while True:
            page = (
                await root.get("/clients", params={"page_size": 1, **({"page_token": token} if token else {})})
            ).json()
            listed += [item["client_id"] for item in page["items"]]
            if (token := page["next_page_token"]) is None:
                break
        assert client_id in listed
        consents = (await root.get("/consents", params={"client_id": client_id})).json()["items"]
        assert [consent["user_id"] for consent in consents] == [user["id"]]

        revoked = await root.post(f"/clients/{client_id}/revoke")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["grants_revoked"] == 1
        assert revoked.json()["client"]["revoked_at"] is not None
        assert_problem(await root.post(f"/clients/{client_id}/revoke"), 409)
        assert (await root.get("/consents", params={"client_id": client_id})).json()["items"] == []
        assert (await refresh(http, client_id, tokens["refresh_token"])).status_code in (400, 401)
    assert_problem(await root.get("/clients/no-such-client"), 404)


async def test_withdrawing_a_consent_revokes_what_it_allowed(server: RunningServer, root: httpx.AsyncClient) -> None:
    user = await new_user(root, ["developer"])
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        client_id, tokens = await user_tokens(server, http, user["username"])
        consents = (await root.get("/consents", params={"user_id": user["id"]})).json()["items"]
        assert len(consents) == 1
        consent = consents[0]
        assert consent["client_id"] == client_id
        assert consent["resource"] == server.resource()
        assert (await root.get(f"/consents/{consent['id']}")).json() == consent
        assert (await root.delete(f"/consents/{consent['id']}")).status_code == 204
        assert_problem(await root.get(f"/consents/{consent['id']}"), 404)
        assert (await refresh(http, client_id, tokens["refresh_token"])).json()["error"] == "invalid_grant"
    assert_problem(await root.get("/consents", params={"page_token": "WyJzdHJpbmciXQ"}), 400)  # ["string"]


# -- servers ----------------------------------------------------------------------------------------------------------


async def test_servers_are_registered_without_ever_returning_their_secrets(
    server: RunningServer, root: httpx.AsyncClient
) -> None:
    secret = "upstream-secret-" + secrets.token_hex(8)
    name = random_name("srv").replace("-", "_")
    body = {
        "name": name,
        "url": "https://mcp.example.com/mcp",
        "scopes": ["mcp:tools", "repo"],
        "external": True,
        "credential": {
            "type": "client_credentials",
            "token_endpoint": "https://auth.example.com/token",
            "client_id": "gateway",
            "client_secret": secret,
        },
    }
    created = await root.post("/servers", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/admin/api/servers/{name}"
    shown = created.json()
    assert shown["credential"] == {
        "type": "client_credentials",
        "header": None,
        "token_endpoint": "https://auth.example.com/token",
        "client_id": "gateway",
        "audience": None,
        "resource": None,
        "scope": None,
        "secret_set": True,
        "vault": None,
        "client_secret_vault": None,
        "per_user": None,
    }
    assert shown["resource"] == server.resource(name)
    assert name in tenant(server).resources  # served at once
    texts = [created.text, (await root.get("/servers")).text, (await root.get(f"/servers/{name}")).text]
    assert all(secret not in text for text in texts)
    assert_problem(await root.post("/servers", json=body), 409)
    async with server.engine() as database, database.connect() as connection:
        bodies = (await connection.execute(select(audit_events.c.body))).scalars().all()
    assert bodies
    assert all(secret.encode() not in (row or b"") for row in bodies)
    assert (await root.delete(f"/servers/{name}")).status_code == 204
    assert_problem(await root.get(f"/servers/{name}"), 404)
    assert_problem(await root.delete(f"/servers/{name}"), 404)


async def test_server_configurations_are_validated_like_the_cli(root: httpx.AsyncClient) -> None:
    cases = [
        ({"url": "ftp://example.com"}, "/url"),
        ({"url": "https://user:pw@example.com/mcp"}, "/url"),
        ({"credential": {"type": "header", "header": "Host", "value": "x"}}, "/credential/header"),
        ({"credential": {"type": "header", "value": "line\nbreak"}}, "/credential/value"),
        (
            {
                "credential": {
                    "type": "client_credentials",
                    "token_endpoint": "http://auth.example.com/token",
                    "client_id": "c",
                    "client_secret": "s",
                }
            },
            "/credential/token_endpoint",
        ),
        ({"name": "Bad Name"}, "/name"),
        ({"command": ["/bin/sh"]}, "/command"),  # stdio servers are not registered over the API
    ]
    for change, pointer in cases:
        body = {"name": "valid", "url": "https://mcp.example.com/mcp", **change}
        problem = assert_problem(await root.post("/servers", json=body), 422)
        assert pointer in [error["pointer"] for error in problem["errors"]], (change, problem)
        assert "line\nbreak" not in str(problem)


# -- quotas and tenants -----------------------------------------------------------------------------------------------


@dataclass
class OtherTenant:
    id: str
    admin_id: str
    client: httpx.AsyncClient  # its own API, as its administrator


@pytest.fixture
async def other(server: RunningServer, root: httpx.AsyncClient) -> AsyncIterator[OtherTenant]:
    tenant_id = random_name("t")
    created = await root.post(
        "/tenants",
        json={
            "id": tenant_id,
            "name": "Other",
            "initial_admin": {"username": "root", "password": PASSWORD},
        },
    )
    assert created.status_code == 201, created.text
    admin_id = created.json()["initial_admin_id"]
    headers = {"Authorization": f"Bearer {mint(server, admin_id, tenant_id=tenant_id)}"}
    async with httpx.AsyncClient(base_url=api_url(server, tenant_id), headers=headers, timeout=30) as client:
        yield OtherTenant(tenant_id, admin_id, client)


async def test_tenants_are_managed_by_the_platform_only(
    server: RunningServer, root: httpx.AsyncClient, other: OtherTenant
) -> None:
    listed = [item["id"] for item in (await root.get("/tenants")).json()["items"]]
    assert {server.settings.tenant, other.id} <= set(listed)
    got = (await root.get(f"/tenants/{other.id}")).json()
    assert got["issuer"] == f"{server.base_url}/t/{other.id}"
    assert got["admin_api"] == f"{server.base_url}/t/{other.id}/admin/api"
    renamed = await root.patch(f"/tenants/{other.id}", json={"name": "Renamed"})
    assert renamed.json()["name"] == "Renamed"
    assert_problem(await root.post("/tenants", json={"id": other.id}), 409)
    assert_problem(await root.post("/tenants", json={"id": server.settings.tenant}), 409)
    assert_problem(await root.post("/tenants", json={"id": "Not Valid"}), 422)
    not_admin = {
        "id": random_name("t"),
        "initial_admin": {"username": "x", "password": PASSWORD, "roles": ["developer"]},
    }
    assert [e["pointer"] for e in assert_problem(await root.post("/tenants", json=not_admin), 422)["errors"]] == [
        "/initial_admin/roles"
    ]
    assert_problem(await root.get("/tenants/no-such-tenant"), 404)
    # The other tenant's administrator administers that tenant, not the platform.
    me = (await other.client.get("/me")).json()
    assert me["tenant"] == other.id
    assert me["platform"] is False
    for method, path in (("GET", "/tenants"), ("GET", f"/tenants/{other.id}"), ("PATCH", f"/tenants/{other.id}")):
        assert_problem(await other.client.request(method, path, json={"name": "mine"}), 404)


async def test_tokens_of_one_tenant_are_refused_by_another(
    server: RunningServer, root: httpx.AsyncClient, other: OtherTenant
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        root_token = root.headers["authorization"]
        response = await http.get(api_url(server, other.id) + "/users", headers={"Authorization": root_token})
        assert_problem(response, 401)
        other_token = other.client.headers["authorization"]
        assert_problem(await http.get(api_url(server) + "/users", headers={"Authorization": other_token}), 401)
        # Signed by the other tenant's issuer for this tenant's admin API: still the wrong issuer.
        forged = mint(server, other.admin_id, tenant_id=None, issuer_tenant=other.id)
        assert_problem(await http.get(api_url(server) + "/users", headers={"Authorization": f"Bearer {forged}"}), 401)


async def test_quotas_are_read_by_tenants_and_set_by_the_platform(
    server: RunningServer, root: httpx.AsyncClient, other: OtherTenant
) -> None:
    mine = (await other.client.get("/quotas")).json()
    assert mine["editable"] is False
    assert mine["usage"] == {"users": 1, "clients": 0, "servers": 0}
    body = {"quotas": {"users": 5}, "rate_limits": {"per_user": "100/minute"}}
    assert_problem(await other.client.put("/quotas", json=body), 403)
    # The platform sets another tenant's quotas on the tenant itself.
    patched = await root.patch(f"/tenants/{other.id}", json={"config": {"quotas": {"users": 2}}})
    assert patched.status_code == 200, patched.text
    assert (await other.client.get("/quotas")).json()["quotas"]["users"] == 2
    await new_user(other.client, ["developer"])
    refused = await other.client.post("/users", json={"username": "third", "password": PASSWORD})
    assert assert_problem(refused, 409)["type"] == "urn:chamberlain:problem:quota-exceeded"
    # And its own on its own API.
    try:
        response = await root.put("/quotas", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["rate_limits"]["per_user"] == "100/minute"
        assert tenant(server).config.rate_limits.per_user == "100/minute"
        assert_problem(await root.put("/quotas", json={"quotas": {}, "rate_limits": {"per_user": "lots"}}), 422)
    finally:
        await root.put("/quotas", json={"quotas": {}, "rate_limits": {}})


# -- tenant isolation -------------------------------------------------------------------------------------------------


async def test_every_object_of_another_tenant_is_404(
    server: RunningServer, root: httpx.AsyncClient, other: OtherTenant
) -> None:
    b = other.client
    b_user = await new_user(b, ["developer"])
    group = random_name("b-group")
    assert (await b.put(f"/groups/{group}", json={"roles": ["developer"]})).status_code == 200
    b_server = random_name("bsrv").replace("-", "_")
    assert (await b.post("/servers", json={"name": b_server, "url": "https://b.example.com/mcp"})).status_code == 201
    async with httpx.AsyncClient(base_url=f"{server.base_url}/t/{other.id}", timeout=30) as public:
        b_client = (await register(public))["client_id"]
    async with server.engine() as database:
        await ConsentRepository(database, other.id).record(
            user_id=b_user["id"],
            client_id=b_client,
            redirect_uri="http://127.0.0.1/cb",
            scope="mcp:tools",
            resource="x",
        )
        session_id = await BrowserSessionRepository(database, other.id).create(
            NewSession(
                user_id=b_user["id"],
                mfa=False,
                roles=("developer",),
                idle_timeout=600,
                absolute_timeout=3600,
                user_agent="test",
            )
        )
    handle = digest(session_id)[:16].hex()
    b_consent = (await b.get("/consents", params={"user_id": b_user["id"]})).json()["items"][0]["id"]
    assert [s["handle"] for s in (await b.get("/sessions")).json()["items"]] == [handle]
    assert (await b.get(f"/clients/{b_client}")).status_code == 200

    # Tenant A's administrator, on A's API, with B's ids: not found, and nothing changes.
    for method, path, body in (
        ("GET", f"/users/{b_user['id']}", None),
        ("PATCH", f"/users/{b_user['id']}", {"disabled": True}),
        ("DELETE", f"/users/{b_user['id']}", None),
        ("DELETE", f"/users/{b_user['id']}/sessions", None),
        ("GET", f"/groups/{group}", None),
        ("DELETE", f"/groups/{group}", None),
        ("GET", f"/clients/{b_client}", None),
        ("POST", f"/clients/{b_client}/revoke", None),
        ("GET", f"/consents/{b_consent}", None),
        ("DELETE", f"/consents/{b_consent}", None),
        ("GET", f"/servers/{b_server}", None),
        ("DELETE", f"/servers/{b_server}", None),
        ("DELETE", f"/sessions/{handle}", None),
    ):
        assert_problem(await root.request(method, path, json=body), 404)
    for path, params in (
        ("/consents", {"user_id": b_user["id"]}),
        ("/consents", {"client_id": b_client}),
        ("/sessions", {"user_id": b_user["id"]}),
    ):
        assert (await root.get(path, params=params)).json()["items"] == []
    assert b_user["id"] not in (await root.get("/users", params={"page_size": 500})).text
    assert b_server not in (await root.get("/servers")).text
    assert group not in (await root.get("/groups")).text

    # All of B's objects are as they were.
    assert (await b.get(f"/users/{b_user['id']}")).json()["disabled"] is False
    assert (await b.get(f"/groups/{group}")).status_code == 200
    assert (await b.get(f"/clients/{b_client}")).json()["revoked_at"] is None
    assert (await b.get(f"/consents/{b_consent}")).status_code == 200
    assert (await b.get(f"/servers/{b_server}")).status_code == 200
    assert [s["handle"] for s in (await b.get("/sessions")).json()["items"]] == [handle]


# -- the audit log ----------------------------------------------------------------------------------------------------


async def test_changes_are_audited_and_refused_when_the_audit_log_cannot_record_them(
    server: RunningServer, root: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await admin_change_count(server)
    group = random_name("audited")
    assert (await root.put(f"/groups/{group}", json={"roles": ["developer"]})).status_code == 200
    assert await admin_change_count(server) == before + 1

    async def unavailable(event: object) -> None:
        raise AuditUnavailable("test")

    monkeypatch.setattr(server.state.audit.log, "record_durably", unavailable)
    refused = await root.put(f"/groups/{group}-2", json={"roles": ["developer"]})
    problem = assert_problem(refused, 503)
    assert problem["type"] == "urn:chamberlain:problem:audit-unavailable"
    assert refused.headers["retry-after"]
    user = await root.post("/users", json={"username": random_name("unaudited"), "password": PASSWORD})
    assert_problem(user, 503)
    monkeypatch.undo()
    assert_problem(await root.get(f"/groups/{group}-2"), 404)
    assert json_items(await root.get("/users", params={"page_size": 500}), "username", "unaudited-") == []


def json_items(response: httpx.Response, key: str, prefix: str) -> list[str]:
    return [item[key] for item in response.json()["items"] if str(item[key]).startswith(prefix)]


async def test_an_admin_token_from_the_authorization_code_flow(server: RunningServer, root: httpx.AsyncClient) -> None:
    admin = await new_user(root, ["admin"])
    admin_api = api_url(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        client_id = (await register(http))["client_id"]
        pkce = Pkce.new()
        async with Browser(server.base_url) as browser:
            redirect = await browser.authorize(
                authorization_url(client_id, admin_api, pkce, scope=""),
                username=admin["username"],
                password=PASSWORD,
            )
        response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        me = await http.get(admin_api + "/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json()["user_id"] == admin["id"]
        # The same flow for the MCP server gives a token the admin API refuses.
        _, tokens = await user_tokens(server, http, admin["username"])
        refused = await http.get(admin_api + "/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert_problem(refused, 401)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5432/mcp",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/mcp",
        "http://[::1]:8080/mcp",
        "http://localhost:9000/mcp",
    ],
)
async def test_a_tenant_admin_cannot_point_an_upstream_inward(other: OtherTenant, url: str) -> None:
    # SSRF: validated without any connection or name lookup; the platform's own tenant may (tests rely on it).
    refused = await other.client.post("/servers", json={"name": "inward", "url": url})
    assert assert_problem(refused, 422)["type"] == "urn:chamberlain:problem:internal-address"


async def test_an_id_with_a_newline_is_still_an_admin_api_problem(root: httpx.AsyncClient) -> None:
    # Found by schemathesis: Starlette's mount pattern stops at a newline, so the root app answered in its format.
    for path in ("/users/%0Aabc", "/users/x%0A"):
        response = await root.patch(path, json={"disabled": False})
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
