"""SCIM 2.0 through a real gateway: Okta's and Microsoft Entra's documented provisioning sequences, with the
request bodies as their documentation shows them; deprovisioning ends every way the person was signed in (the
refresh token fails at once, the access token within seconds); the bearer token is per tenant."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from chamberlain.audit.events import Action
from chamberlain.cli.scim import app as scim_cli
from chamberlain.identity.passwords import hash_password
from chamberlain.scim.app import SCIM_PATH
from chamberlain.store.group_mappings import GroupMappingRepository
from chamberlain.store.schema import scim_tokens
from chamberlain.store.users import UserRepository
from tests.support.audit_events import recorded
from tests.support.browser import Browser
from tests.support.mcp_calls import call_mcp
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, refresh, register
from tests.support.server import USER_PASSWORD, RunningServer
from tests.support.tenants import add_tenant

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCIM_JSON = "application/scim+json"
runner = CliRunner()


def cli_token(server: RunningServer, *tenant: str) -> Result:
    arguments = ["token", *tenant, "--data-dir", str(server.settings.data_dir)]
    return runner.invoke(scim_cli, arguments, env={"CHAMBERLAIN_DATABASE_URL": server.database_url})


async def new_token(server: RunningServer, tenant: str) -> str:
    """`chamberlain scim token --tenant TENANT` (off the event loop: the command runs its own)."""
    created = await asyncio.to_thread(cli_token, server, "--tenant", tenant)
    assert created.exit_code == 0, created.output
    return created.output.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def token(server: RunningServer) -> str:
    created = cli_token(server)
    assert created.exit_code == 0, created.output
    assert f"{SCIM_PATH}." in created.output  # where the IdP is to send its requests
    return created.output.strip().splitlines()[-1]


@contextlib.asynccontextmanager
async def scim_client(server: RunningServer, token: str | None, prefix: str = "") -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Content-Type": SCIM_JSON, "Accept": SCIM_JSON}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=f"{server.base_url}{prefix}{SCIM_PATH}", headers=headers, timeout=30) as http:
        yield http


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(SCIM_JSON)
    return dict(response.json())


def scim_error(response: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    body = ok(response, status)
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert body["status"] == str(status)  # RFC 7644 §3.12: a string
    assert body.get("scimType") == scim_type
    return body


async def signed_in_tokens(server: RunningServer, username: str) -> tuple[str, str, str]:
    """(client_id, access token, refresh token) for `username` after a sign-in and consent. A provisioned user has
    no local password; one is set here to stand for their IdP sign-in, which is not what this test is about."""
    async with server.engine() as database:
        users = UserRepository(database, server.settings.tenant)
        user = await users.get_by_username(username)
        assert user is not None
        await users.set_password(user.id, hash_password(USER_PASSWORD), must_change_password=False)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        client_id = (await register(http))["client_id"]
        pkce = Pkce.new()
        async with Browser(server.base_url) as browser:
            redirect = await browser.authorize(
                authorization_url(client_id, server.resource(), pkce), username=username, password=USER_PASSWORD
            )
        response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
        assert response.status_code == 200, response.text
        tokens = response.json()
        return client_id, tokens["access_token"], tokens["refresh_token"]


async def map_group(server: RunningServer, group: str, roles: list[str]) -> None:
    async with server.engine() as database:
        await GroupMappingRepository(database, server.settings.tenant).set_roles(group, roles)


async def roles_of(server: RunningServer, user_id: str) -> tuple[str, ...] | None:
    async with server.engine() as database:
        user = await UserRepository(database, server.settings.tenant).get(user_id)
    return user.roles if user is not None else None


async def assert_signed_out(server: RunningServer, client_id: str, access: str, refresh_token: str) -> None:
    """The refresh token fails at once; the access token at the MCP endpoint within the revocation feed's refresh."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        refused = await refresh(http, client_id, refresh_token)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_grant"
        for _ in range(100):
            answer = await call_mcp(http, access)
            if answer.status_code == 401:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the access token still works: {answer.status_code}")


async def test_okta_provisioning_sequence(server: RunningServer, token: str) -> None:
    username = "isabella.lopez@example.com"
    await map_group(server, "Engineering", ["developer"])
    async with scim_client(server, token) as scim:
        # 1. Okta asks whether the user exists (developer.okta.com "SCIM 2.0 protocol reference", Create Users).
        found = ok(
            await scim.get("/Users", params={"filter": f'userName eq "{username}"', "startIndex": 1, "count": 100})
        )
        assert found["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
        assert (found["totalResults"], found["Resources"]) == (0, [])
        # 2. It creates the user, with its own id as externalId and a password this server never keeps.
        created = ok(
            await scim.post(
                "/Users",
                json={
                    "schemas": [USER_SCHEMA],
                    "userName": username,
                    "name": {"givenName": "Isabella", "familyName": "Lopez"},
                    "emails": [{"primary": True, "value": username, "type": "work"}],
                    "displayName": "Isabella Lopez",
                    "locale": "en-US",
                    "externalId": "00ujl29u0le5T6Aj10h7",
                    "groups": [],
                    "password": "1mz050nq",
                    "active": True,
                },
            ),
            201,
        )
        user_id = created["id"]
        assert created["userName"] == username
        assert created["active"] is True
        assert "password" not in created
        assert created["meta"]["location"] == f"{server.base_url}{SCIM_PATH}/Users/{user_id}"
        # 3. It reads the user back.
        fetched = await scim.get(f"/Users/{user_id}")
        assert ok(fetched)["emails"] == [{"primary": True, "value": username, "type": "work"}]
        assert fetched.headers["etag"] == created["meta"]["version"]
        again = ok(await scim.get("/Users", params={"filter": f'userName eq "{username.upper()}"'}))
        assert [resource["id"] for resource in again["Resources"]] == [user_id]
        async with server.engine() as database:
            stored = await UserRepository(database, server.settings.tenant).get(user_id)
        assert stored is not None
        assert stored.password_hash is None  # no local password
        # 4. Group push: the group, then its members (Okta's "Update Group" PATCH bodies).
        group = ok(
            await scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "Engineering", "members": []}),
            201,
        )
        assert await roles_of(server, user_id) == ()
        ok(
            await scim.patch(
                f"/Groups/{group['id']}",
                json={
                    "schemas": [PATCH_OP],
                    "Operations": [
                        {"op": "add", "path": "members", "value": [{"value": user_id, "display": username}]}
                    ],
                },
            )
        )
        assert await roles_of(server, user_id) == ("developer",)
        client_id, access, refresh_token = await signed_in_tokens(server, username)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            assert (await call_mcp(http, access)).status_code == 200
        # 5. Deactivation, as Okta sends it: no path, the attributes as the value.
        deactivation = await scim.patch(
            f"/Users/{user_id}",
            json={"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": False}}]},
        )
        assert ok(deactivation)["active"] is False
        (change,) = await recorded(server, deactivation.headers["x-request-id"], Action.ADMIN_CHANGE)
        assert change.public["actor"] == {"type": "service", "id": "scim"}
        assert change.public["target"] == f"user:{user_id}"
        assert change.public["details"] == {"before": {"active": True}, "after": {"active": False}, "via": "scim"}
        await assert_signed_out(server, client_id, access, refresh_token)
        listed = ok(await scim.get("/Users", params={"filter": f'userName eq "{username}"'}))
        assert listed["Resources"][0]["active"] is False  # still there, deactivated
        # Removing the member recomputes the roles from the remaining groups.
        removed = ok(
            await scim.patch(
                f"/Groups/{group['id']}",
                json={
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "remove", "path": f'members[value eq "{user_id}"]'}],
                },
            )
        )
        assert removed["members"] == []
        assert await roles_of(server, user_id) == ()


async def test_entra_provisioning_sequence(server: RunningServer, token: str) -> None:
    username = "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1@testuser.com"
    await map_group(server, "Entra Developers", ["developer"])
    async with scim_client(server, token) as scim:
        # learn.microsoft.com "Tutorial: Develop a sample SCIM endpoint" / "SCIM protocol request examples".
        found = ok(await scim.get("/Users", params={"filter": f'userName eq "{username}"'}))
        assert found["totalResults"] == 0
        created = ok(
            await scim.post(
                "/Users",
                json={
                    "schemas": [USER_SCHEMA, ENTERPRISE],
                    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                    "userName": username,
                    "active": True,
                    "emails": [{"primary": True, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
                    "meta": {"resourceType": "User"},
                    "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
                    "roles": [],
                },
            ),
            201,
        )
        user_id = created["id"]
        assert created["externalId"] == "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"
        by_external_id = ok(
            await scim.get("/Users", params={"filter": 'externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"'})
        )
        assert [resource["id"] for resource in by_external_id["Resources"]] == [user_id]
        by_email = ok(
            await scim.get(
                "/Users", params={"filter": 'emails[type eq "work"].value eq "Test_User_fd0ea19b@testuser.com"'}
            )
        )
        assert by_email["totalResults"] == 1
        # A duplicate is a uniqueness conflict (§3.3).
        scim_error(await scim.post("/Users", json={"schemas": [USER_SCHEMA], "userName": username}), 409, "uniqueness")
        updated = ok(
            await scim.patch(
                f"/Users/{user_id}",
                json={
                    "schemas": [PATCH_OP],
                    "Operations": [
                        {
                            "op": "Replace",
                            "path": 'emails[type eq "work"].value',
                            "value": "updatedEmail@microsoft.com",
                        },
                        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
                        {"op": "Add", "path": f"{ENTERPRISE}:department", "value": "Finance"},
                    ],
                },
            )
        )
        assert updated["emails"][0]["value"] == "updatedEmail@microsoft.com"
        assert updated["name"]["familyName"] == "updatedFamilyName"
        assert updated[ENTERPRISE] == {"department": "Finance"}
        assert ENTERPRISE in updated["schemas"]
        # Entra's groups: created without members, looked up excluding them, members added with null $ref.
        group = ok(
            await scim.post(
                "/Groups",
                json={
                    "schemas": [GROUP_SCHEMA],
                    "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
                    "displayName": "Entra Developers",
                    "meta": {"resourceType": "Group"},
                },
            ),
            201,
        )
        looked_up = ok(
            await scim.get(
                "/Groups", params={"excludedAttributes": "members", "filter": 'displayName eq "Entra Developers"'}
            )
        )
        assert looked_up["Resources"] == [{key: value for key, value in group.items() if key != "members"}]
        add = {"op": "Add", "path": "members", "value": [{"$ref": None, "value": user_id}]}
        ok(await scim.patch(f"/Groups/{group['id']}", json={"schemas": [PATCH_OP], "Operations": [add]}))
        assert await roles_of(server, user_id) == ("developer",)
        client_id, access, refresh_token = await signed_in_tokens(server, username)
        # Entra's disable with the string "False" (its non-compliant default for `active`).
        disabled = ok(
            await scim.patch(
                f"/Users/{user_id}",
                json={"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]},
            )
        )
        assert disabled["active"] is False
        await assert_signed_out(server, client_id, access, refresh_token)
        # Hard delete: gone (§3.6), and its memberships with it.
        deleted = await scim.delete(f"/Users/{user_id}")
        assert deleted.status_code == 204
        scim_error(await scim.get(f"/Users/{user_id}"), 404)
        assert await roles_of(server, user_id) is None
        assert ok(await scim.get(f"/Groups/{group['id']}"))["members"] == []
        remove = {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": user_id}]}
        ok(await scim.patch(f"/Groups/{group['id']}", json={"schemas": [PATCH_OP], "Operations": [remove]}))
        assert (await scim.delete(f"/Groups/{group['id']}")).status_code == 204
        scim_error(await scim.get(f"/Groups/{group['id']}"), 404)


async def test_deleting_an_active_user_signs_them_out(server: RunningServer, token: str) -> None:
    username = "leaver@example.com"
    await map_group(server, "Leavers", ["developer"])
    async with scim_client(server, token) as scim:
        user_id = ok(await scim.post("/Users", json={"schemas": [USER_SCHEMA], "userName": username}), 201)["id"]
        body = {"schemas": [GROUP_SCHEMA], "displayName": "Leavers", "members": [{"value": user_id}]}
        ok(await scim.post("/Groups", json=body), 201)
        client_id, access, refresh_token = await signed_in_tokens(server, username)
        assert (await scim.delete(f"/Users/{user_id}")).status_code == 204
        await assert_signed_out(server, client_id, access, refresh_token)


async def test_without_the_tenants_token_nothing_is_served(server: RunningServer, token: str) -> None:
    await add_tenant(server, "scim-beta")
    async with scim_client(server, None) as anonymous:
        response = await anonymous.get("/Users")
        scim_error(response, 401)
        assert response.headers["www-authenticate"] == 'Bearer realm="scim"'
    async with scim_client(server, token[:-2] + "xx") as wrong:
        response = await wrong.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "intruder"})
        scim_error(response, 401)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    async with scim_client(server, None) as basic:
        scim_error(await basic.get("/Users", headers={"Authorization": f"Basic {token}"}), 401)
    # A tenant without a token refuses every token; the default tenant's token is useless at another tenant.
    async with scim_client(server, token, "/t/scim-beta") as elsewhere:
        scim_error(await elsewhere.get("/Users"), 401)
    beta_token = await new_token(server, "scim-beta")
    assert beta_token != token
    async with scim_client(server, beta_token, "/t/scim-beta") as beta:
        ok(await beta.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "only-in-beta"}), 201)
    async with scim_client(server, beta_token) as wrong_tenant:
        scim_error(await wrong_tenant.get("/Users"), 401)
    async with scim_client(server, token) as default:
        names = [user["userName"] for user in ok(await default.get("/Users"))["Resources"]]
        assert "only-in-beta" not in names
    # Only a keyed digest is stored, never the token.
    async with server.engine() as database, database.connect() as connection:
        tenants = (server.settings.tenant, "scim-beta")
        digests = (
            await connection.scalars(select(scim_tokens.c.digest).where(scim_tokens.c.tenant_id.in_(tenants)))
        ).all()
    assert len(digests) == 2
    assert all(token.encode() not in digest and len(digest) == 32 for digest in digests)


async def test_a_rotated_token_replaces_the_previous_one(server: RunningServer, token: str) -> None:
    await add_tenant(server, "scim-gamma")
    first = await new_token(server, "scim-gamma")
    second = await new_token(server, "scim-gamma")
    async with scim_client(server, first, "/t/scim-gamma") as old:
        scim_error(await old.get("/Users"), 401)
    async with scim_client(server, second, "/t/scim-gamma") as new:
        ok(await new.get("/Users"))


async def test_filters_are_data_not_code(server: RunningServer, token: str) -> None:
    async with scim_client(server, token) as scim:
        ok(await scim.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "bobby@example.com"}), 201)
        for injection in (
            'userName eq "x" or "1"="1"',
            'userName eq "x\') OR 1=1 --"',
            'userName eq "x"; DROP TABLE users',
        ):
            response = await scim.get("/Users", params={"filter": injection})
            if response.status_code == 200:
                assert response.json()["totalResults"] == 0
            else:
                scim_error(response, 400, "invalidFilter")
        # The table is intact and the quote is a character of a value like any other.
        assert ok(await scim.get("/Users", params={"filter": 'userName eq "bobby@example.com"'}))["totalResults"] == 1
        scim_error(await scim.get("/Users", params={"filter": "userName eq"}), 400, "invalidFilter")
        scim_error(await scim.get("/Users", params={"filter": "active gt true"}), 400, "invalidFilter")


async def test_paging_and_discovery(server: RunningServer, token: str) -> None:
    async with scim_client(server, token) as scim:
        for index in range(3):
            ok(await scim.post("/Users", json={"schemas": [USER_SCHEMA], "userName": f"pager{index}@example.com"}), 201)
        every = ok(await scim.get("/Users", params={"filter": 'userName sw "pager"'}))
        assert every["totalResults"] == 3
        page = ok(await scim.get("/Users", params={"filter": 'userName sw "pager"', "startIndex": 2, "count": 1}))
        assert (page["startIndex"], page["itemsPerPage"], page["totalResults"]) == (2, 1, 3)
        assert page["Resources"][0]["id"] == every["Resources"][1]["id"]
        # §3.4.2.4: below 1 counts as 1, a negative count as 0.
        assert ok(await scim.get("/Users", params={"startIndex": -5, "count": -1}))["Resources"] == []
        scim_error(await scim.get("/Users", params={"count": "many"}), 400, "invalidValue")
        config = ok(await scim.get("/ServiceProviderConfig"))
        assert config["patch"]["supported"] is True
        assert config["filter"]["supported"] is True
        assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"
        types = ok(await scim.get("/ResourceTypes"))
        assert {item["endpoint"] for item in types["Resources"]} == {"/Users", "/Groups"}
        schemas = ok(await scim.get("/Schemas"))
        assert {item["id"] for item in schemas["Resources"]} == {USER_SCHEMA, GROUP_SCHEMA}
        assert ok(await scim.get(f"/Schemas/{USER_SCHEMA}"))["name"] == "User"
        scim_error(await scim.get("/Nothing"), 404)
        scim_error(await scim.get("/Users/no-such-id"), 404)


async def test_bad_requests_are_scim_errors(server: RunningServer, token: str) -> None:
    async with scim_client(server, token) as scim:
        scim_error(await scim.post("/Users", content=b"{not json"), 400, "invalidSyntax")
        scim_error(await scim.post("/Users", content=b"[" * 100_000 + b"]" * 100_000), 400, "invalidSyntax")
        deep: Any = "x"
        for _ in range(40):
            deep = [deep]
        scim_error(await scim.post("/Users", json={"userName": "deep", "x": deep}), 400, "invalidSyntax")
        scim_error(await scim.post("/Users", content=b"x" * 300_000), 413)
        scim_error(await scim.post("/Users", json={"schemas": [USER_SCHEMA]}), 400, "invalidValue")
        scim_error(await scim.post("/Users", json={"userName": "x", "active": "maybe"}), 400, "invalidValue")
        user = ok(await scim.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "versioned@example.com"}), 201)
        patch = {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "displayName", "value": "V"}]}
        stale = await scim.patch(f"/Users/{user['id']}", json=patch, headers={"If-Match": 'W/"999"'})
        scim_error(stale, 412)
        current = await scim.patch(f"/Users/{user['id']}", json=patch, headers={"If-Match": user["meta"]["version"]})
        assert ok(current)["meta"]["version"] != user["meta"]["version"]
        scim_error(await scim.patch(f"/Users/{user['id']}", json={"Operations": []}), 400, "invalidSyntax")
        body = {"schemas": [GROUP_SCHEMA], "displayName": "Ghosts", "members": [{"value": "not-a-user"}]}
        scim_error(await scim.post("/Groups", json=body), 400, "invalidValue")
        # A user who signs in locally (not provisioned) cannot be made a member either.
        async with server.engine() as database:
            alice = await UserRepository(database, server.settings.tenant).get_by_username(server.user)
        assert alice is not None
        body = {"schemas": [GROUP_SCHEMA], "displayName": "Ghosts", "members": [{"value": alice.id}]}
        scim_error(await scim.post("/Groups", json=body), 400, "invalidValue")
