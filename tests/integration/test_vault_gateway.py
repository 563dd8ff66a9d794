"""The gateway takes its upstream credentials from the vault (issue 6): real gateway, real upstream (its `whoami`
tool echoes the Authorization header it got), a stand-in of the upstream's own authorization server for refresh
grants, and the vault's own records and audit events.

What must hold: a vault header value reaches the upstream, recorded with the user and the request id; a secret
bound to another server is refused; a hundred requests at token expiry cost one refresh; a revoked upstream grant
tells the user to re-consent and marks the credential unhealthy; a user's own refresh token is used on that user's
requests only; a vault reference never resolves in another tenant.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import hvac.exceptions
import pytest
from pydantic import SecretStr, ValidationError

from chamberlain.audit.events import Action
from chamberlain.audit.log import AuditLog, AuditUnavailable
from chamberlain.crypto.master_key import load_master_key
from chamberlain.gateway.jsonrpc import AUDIT_UNAVAILABLE, UPSTREAM_FAILED
from chamberlain.gateway.server_config import (
    ClientCredentialsCredential,
    HeaderCredential,
    RefreshTokenCredential,
    ServerConfig,
    per_user_secret_name,
)
from chamberlain.gateway.upstream import UpstreamError
from chamberlain.gateway.upstream_credentials import (
    NO_USABLE_CREDENTIAL,
    SubjectTokenMinter,
    VaultAccess,
    credentials_for,
)
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.store.servers import ServerRepository
from chamberlain.store.users import UserRepository
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.openbao import OpenBaoBackend, OpenBaoConnection, OpenBaoSettings
from chamberlain.vault.service import Vault
from chamberlain.vault.settings import CredentialKind
from tests.support.audit_events import events_of, recorded
from tests.support.browser import Browser
from tests.support.canary import CANARY
from tests.support.gateway import (
    ADMIN,
    API_KEY_SECRET,
    AS_SOURCE,
    CLIENT_SECRET,
    EXCHANGE_CLIENT,
    EXCHANGE_SECRET,
    GATEWAY_GRANT,
    GUEST,
    PASSWORDS,
    PUBLIC_CLIENT,
    REFRESH_SCOPE,
    USER_GRANT,
    VAULT_SOURCE,
    Gateway,
    gateway_with_upstreams,
    vault_of,
)
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register
from tests.support.openbao import running_openbao
from tests.support.server import RunningServer, running_server
from tests.support.tenants import access_token, add_tenant, served
from tests.support.upstream_authorization_server import RefreshGrant, UpstreamAuthorizationServer
from tests.support.upstreams import http_upstream

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
# Seconds the stand-in's access tokens live here: expiry is reached by waiting a little, and a burst of a hundred
# calls on a loaded 2-core machine still ends well within one token's life (renewed at 90% of it).
LIFETIME = 6
WHOAMI = {"name": "whoami_hex", "arguments": {}}  # what the upstream saw, past the leak guard
BAO_TOKEN_VARIABLE = "CHAMBERLAIN_TEST_BAO_TOKEN"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_with_upstreams(tmp_path_factory.mktemp("vault-gateway")) as running:
        running.authorization_server.expires_in = LIFETIME
        yield running


@pytest.fixture(scope="module")
def gateway(stack: Gateway) -> RunningServer:
    return stack.server


@pytest.fixture(scope="module")
def stand_in(stack: Gateway) -> UpstreamAuthorizationServer:
    return stack.authorization_server


@pytest.fixture
async def client(gateway: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http:
        yield http


_tokens: dict[tuple[str, str], str] = {}


async def token(gateway: RunningServer, http: httpx.AsyncClient, server_name: str, user: str = "alice") -> str:
    """An access token for `user` and /mcp/{server_name}, through sign-in, consent and the code grant."""
    key = (user, server_name)
    if key not in _tokens:
        client_id = (await register(http))["client_id"]
        pkce = Pkce.new()
        async with Browser(gateway.base_url) as browser:
            redirect = await browser.authorize(
                authorization_url(client_id, gateway.resource(server_name), pkce),
                username=user,
                password=PASSWORDS.get(user, gateway.user_password),
            )
        response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
        assert response.status_code == 200, response.text
        _tokens[key] = response.json()["access_token"]
    return _tokens[key]


async def whoami(http: httpx.AsyncClient, bearer: str, path: str, request_id: str | None = None) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": WHOAMI}
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {bearer}", "X-Request-Id": request_id or new_request_id()}
    return await http.post(path, json=body, headers=headers)


def new_request_id() -> str:
    return f"vault-test-{uuid.uuid4().hex}"


def seen(response: httpx.Response) -> str:
    """What the upstream's whoami saw in Authorization."""
    assert response.status_code == 200, response.text
    document = response.json()
    assert "result" in document, document
    return bytes.fromhex(document["result"]["content"][0]["text"]).decode("latin-1")


def error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text  # the client's request reached us: a JSON-RPC error
    document = response.json()
    assert "error" in document, document
    return dict(document["error"])


async def user_id(gateway: RunningServer, username: str, tenant: str | None = None) -> str:
    async with gateway.engine() as database:
        user = await UserRepository(database, tenant or gateway.settings.tenant).get_by_username(username)
    assert user is not None
    return user.id


def ref(gateway: RunningServer, source: str, name: str) -> SecretRef:
    return SecretRef(gateway.settings.tenant, source, name)


async def store(
    gateway: RunningServer,
    secret: SecretRef,
    value: str,
    kind: CredentialKind,
    bindings: tuple[str, ...],
    user: str | None = None,
) -> None:
    async with vault_of(gateway) as vault:
        await vault.store(secret, value.encode(), kind=kind, bindings=bindings, user_id=user)


async def past_expiry() -> None:
    """Long enough for any access token the stand-in issued before to have expired."""
    await asyncio.sleep(LIFETIME + 0.2)


# -- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "key"),
    [
        ({"type": "header", "value": "k", "vault": "src/key"}, "'value' or 'vault'"),
        (
            {
                "type": "client_credentials",
                "token_endpoint": "https://as.example.com/token",
                "client_id": "c",
                "client_secret": "s",
                "client_secret_vault": "src/secret",
            },
            "'client_secret' or 'client_secret_vault'",
        ),
        (
            {
                "type": "refresh_token",
                "token_endpoint": "https://as.example.com/token",
                "client_id": "c",
                "client_secret": "s",
                "client_secret_vault": "src/secret",
                "vault": "src/grant",
            },
            "'client_secret' or 'client_secret_vault'",
        ),
        ({"type": "header", "vault": "tenant/src/key"}, "SOURCE/NAME"),
        ({"type": "header", "vault": "../key"}, "vault source"),
        ({"type": "header"}, "'vault'"),
        (
            {"type": "client_credentials", "token_endpoint": "https://as.example.com/token", "client_id": "c"},
            "'client_secret_vault'",
        ),
    ],
)
def test_an_inline_secret_and_a_vault_reference_together_or_neither_is_refused(
    credential: dict[str, Any], key: str
) -> None:
    # As the settings, the CLI and the admin API validate it: the message names the keys, never a value.
    with pytest.raises(ValidationError, match=key) as refused:
        ServerConfig.model_validate({"url": "https://wiki.example.com/mcp", "credential": credential})
    assert "'k'" not in str(refused.value)
    assert "'s'" not in str(refused.value)


def test_vault_references_are_stored_in_the_clear_and_inline_secrets_are_not(tmp_path: Any) -> None:
    """A reference is not a secret: it round-trips through the server store's clear-text column; the inline secret
    fields stay `SecretStr`, which is how the store finds what to encrypt."""
    config = ServerConfig(
        url="https://wiki.example.com/mcp",
        credential=RefreshTokenCredential(
            token_endpoint="https://as.example.com/token", client_id="gw", vault="wiki/grant", per_user=True
        ),
    )
    dumped = config.model_dump(mode="json")
    assert dumped["credential"]["vault"] == "wiki/grant"
    assert dumped["credential"]["per_user"] is True
    assert RefreshTokenCredential.model_fields["client_secret"].annotation is SecretStr
    assert HeaderCredential.model_fields["value"].annotation is SecretStr


def test_per_user_secret_names_keep_users_apart_and_stay_valid() -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    assert per_user_secret_name("grant", alice) == f"grant.{alice}"
    assert per_user_secret_name("grant", alice) != per_user_secret_name("grant", bob)
    odd = per_user_secret_name("grant", "CN=Alice Example/O=Corp")  # an id outside the name alphabet
    assert odd.startswith("grant.u-")
    assert "/" not in odd
    with pytest.raises(ValidationError, match="at most"):
        RefreshTokenCredential(
            token_endpoint="https://as.example.com/token", client_id="gw", vault="s/" + "n" * 100, per_user=True
        )


# -- a header value from the vault -------------------------------------------------------------------------------


async def test_a_header_credential_from_the_vault_reaches_the_upstream_and_its_read_is_recorded(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    value = "Bearer " + CANARY  # searched for in everything the run logs, audits and answers (tests/support/canary.py)
    secret = ref(gateway, VAULT_SOURCE, API_KEY_SECRET)
    await store(gateway, secret, value, CredentialKind.HEADER, ("vaulted",))
    bearer = await token(gateway, client, "vaulted")
    request_id = new_request_id()
    assert seen(await whoami(client, bearer, "/mcp/vaulted", request_id)) == value

    (read,) = [event for event in await events_of(gateway, request_id) if event.action == Action.CREDENTIAL_READ]
    assert read.outcome == "success"
    assert read.public["target"] == str(secret)
    assert read.public["actor"] == {"type": "user", "id": await user_id(gateway, "alice")}
    assert read.public["details"]["upstream"] == "vaulted"
    assert value not in json.dumps(read.public)
    # Reused from memory afterwards: no read, and no event, per request.
    again = new_request_id()
    assert seen(await whoami(client, bearer, "/mcp/vaulted", again)) == value
    assert [event for event in await events_of(gateway, again) if event.action.startswith("credential.")] == []


async def test_a_vault_secret_bound_to_another_server_is_refused_and_the_refusal_recorded(
    gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    value = f"Bearer vault-api-key-{uuid.uuid4().hex}"
    secret = ref(gateway, VAULT_SOURCE, API_KEY_SECRET)
    await store(gateway, secret, value, CredentialKind.HEADER, ("vaulted",))  # not bound to "misbound"
    request_id = new_request_id()
    response = await whoami(client, await token(gateway, client, "misbound"), "/mcp/misbound", request_id)
    refused = error(response)
    assert refused == {"code": UPSTREAM_FAILED, "message": NO_USABLE_CREDENTIAL}
    assert value not in response.text
    (refusal,) = await recorded(gateway, request_id, Action.CREDENTIAL_REFUSED)
    assert refusal.public["target"] == str(secret)
    assert "not bound to upstream 'misbound'" in refusal.public["reason"]


# -- refresh tokens -----------------------------------------------------------------------------------------------


async def gateway_grant(gateway: RunningServer, stand_in: UpstreamAuthorizationServer) -> RefreshGrant:
    """A fresh grant of the gateway's own at the stand-in, its refresh token and client secret in the vault."""
    grant = stand_in.grant("gateway-service", client_id=EXCHANGE_CLIENT, scope=REFRESH_SCOPE)
    await store(
        gateway, ref(gateway, AS_SOURCE, CLIENT_SECRET), EXCHANGE_SECRET, CredentialKind.CLIENT_SECRET, ("refreshed",)
    )
    await store(
        gateway, ref(gateway, AS_SOURCE, GATEWAY_GRANT), grant.current, CredentialKind.REFRESH_TOKEN, ("refreshed",)
    )
    return grant


def refreshes(stand_in: UpstreamAuthorizationServer, client_id: str = EXCHANGE_CLIENT) -> int:
    return sum(
        1 for served in stand_in.served if served.grant_type == "refresh_token" and served.client_id == client_id
    )


async def latest_value(gateway: RunningServer, secret: SecretRef) -> str:
    async with vault_of(gateway) as vault:
        return (await vault.backend.get(secret)).decode()


async def test_a_hundred_concurrent_calls_at_token_expiry_cost_one_refresh(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer, client: httpx.AsyncClient
) -> None:
    """Issue 6 acceptance 3: single flight per credential; the rotated refresh token goes back into the vault."""
    grant = await gateway_grant(gateway, stand_in)
    bearer = await token(gateway, client, "refreshed")
    secret = ref(gateway, AS_SOURCE, GATEWAY_GRANT)
    await past_expiry()  # whatever an earlier test left cached
    before = refreshes(stand_in)
    first = seen(await whoami(client, bearer, "/mcp/refreshed")).removeprefix("Bearer ")
    claims = stand_in.verify(first)
    assert (claims["sub"], claims["grant"], claims["scope"]) == ("gateway-service", grant.id, REFRESH_SCOPE)
    assert refreshes(stand_in) == before + 1
    assert stand_in.served[-1].form["refresh_token"] in grant.spent  # the one the vault held, now spent
    assert await latest_value(gateway, secret) == grant.current  # the rotated one, stored back
    assert "client_secret" not in stand_in.served[-1].form  # client_secret_basic, the secret read from the vault

    await past_expiry()
    stand_in.delay = 0.5  # the refresh takes a while: the other requests arrive while it is under way
    try:
        responses = await asyncio.gather(*(whoami(client, bearer, "/mcp/refreshed") for _ in range(100)))
    finally:
        stand_in.delay = 0.0
    presented = {seen(response) for response in responses}
    assert refreshes(stand_in) == before + 2  # one refresh for the hundred
    assert len(presented) == 1
    assert presented != {"Bearer " + first}
    assert await latest_value(gateway, secret) == grant.current
    async with vault_of(gateway) as vault:
        assert len(await vault.backend.versions(secret)) >= 3  # the stored one and two rotations, kept for rollback


async def test_a_revoked_upstream_grant_asks_the_user_to_re_consent_and_marks_the_credential_unhealthy(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer, client: httpx.AsyncClient
) -> None:
    grant = await gateway_grant(gateway, stand_in)
    secret = ref(gateway, AS_SOURCE, GATEWAY_GRANT)
    bearer = await token(gateway, client, "refreshed")
    await past_expiry()
    assert stand_in.verify(seen(await whoami(client, bearer, "/mcp/refreshed")).removeprefix("Bearer "))["grant"] == (
        grant.id
    )
    stand_in.revoke(grant)  # the upstream grant is withdrawn
    await past_expiry()
    failed_before = sum(1 for served in stand_in.served if served.status != 200)
    request_id = new_request_id()
    response = await whoami(client, bearer, "/mcp/refreshed", request_id)
    message = error(response)["message"]
    assert error(response)["code"] == UPSTREAM_FAILED
    assert "re-consent" in message
    assert f"'{AS_SOURCE}'" in message
    assert grant.current not in response.text
    assert all(spent not in response.text for spent in grant.spent)
    # One refused refresh: the vault held nothing newer to try.
    assert sum(1 for served in stand_in.served if served.status != 200) == failed_before + 1
    async with vault_of(gateway) as vault:
        record = await vault.record(secret)
    assert record is not None
    assert record.health == "unhealthy"

    # Later requests are refused by the vault itself, without asking the upstream again, and recorded.
    asked = len(stand_in.served)
    again = new_request_id()
    assert "re-consent" in error(await whoami(client, bearer, "/mcp/refreshed", again))["message"]
    assert len(stand_in.served) == asked
    refusals = await recorded(gateway, again, Action.CREDENTIAL_REFUSED)
    assert refusals
    assert refusals[0].public["reason"].startswith("unhealthy")

    # Consent again: a new refresh token makes the credential healthy, and the upstream is reached.
    renewed = await gateway_grant(gateway, stand_in)
    assert stand_in.verify(seen(await whoami(client, bearer, "/mcp/refreshed")).removeprefix("Bearer "))["grant"] == (
        renewed.id
    )


async def test_a_users_own_refresh_token_is_used_on_that_users_requests_only(
    gateway: RunningServer, stand_in: UpstreamAuthorizationServer, client: httpx.AsyncClient
) -> None:
    alice, bob = await user_id(gateway, "alice"), await user_id(gateway, GUEST)
    alices = stand_in.grant(alice, client_id=PUBLIC_CLIENT)
    alices_secret = ref(gateway, AS_SOURCE, per_user_secret_name(USER_GRANT, alice))
    await store(gateway, alices_secret, alices.current, CredentialKind.REFRESH_TOKEN, ("personal",), user=alice)
    alice_bearer = await token(gateway, client, "personal")
    bob_bearer = await token(gateway, client, "personal", user=GUEST)
    before = refreshes(stand_in, PUBLIC_CLIENT)

    # Bob has no grant of his own: no credential, and nothing of alice's.
    response = await whoami(client, bob_bearer, "/mcp/personal")
    assert error(response) == {"code": UPSTREAM_FAILED, "message": NO_USABLE_CREDENTIAL}
    assert refreshes(stand_in, PUBLIC_CLIENT) == before

    presented = seen(await whoami(client, alice_bearer, "/mcp/personal")).removeprefix("Bearer ")
    assert stand_in.verify(presented)["sub"] == alice
    assert stand_in.served[-1].form["client_id"] == PUBLIC_CLIENT  # a public client: no secret anywhere
    assert refreshes(stand_in, PUBLIC_CLIENT) == before + 1

    # Even a secret filed under bob's name, if it is alice's (bound to her), is refused on bob's request.
    misfiled = ref(gateway, AS_SOURCE, per_user_secret_name(USER_GRANT, bob))
    other = stand_in.grant(alice, client_id=PUBLIC_CLIENT)
    await store(gateway, misfiled, other.current, CredentialKind.REFRESH_TOKEN, ("personal",), user=alice)
    request_id = new_request_id()
    response = await whoami(client, bob_bearer, "/mcp/personal", request_id)
    assert error(response) == {"code": UPSTREAM_FAILED, "message": NO_USABLE_CREDENTIAL}
    assert presented not in response.text
    (refusal,) = await recorded(gateway, request_id, Action.CREDENTIAL_REFUSED)
    assert refusal.public["reason"] == "a per-user credential of another user"
    assert refusal.public["actor"] == {"type": "user", "id": bob}
    assert refreshes(stand_in, PUBLIC_CLIENT) == before + 1  # nothing was refreshed for bob

    # Alice keeps her cached token; bob's failures left no token of hers behind for him.
    assert seen(await whoami(client, alice_bearer, "/mcp/personal")) == "Bearer " + presented


async def test_a_vault_reference_never_resolves_in_another_tenant(
    stack: Gateway, gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    """Tenant acme's server "vaulted" names upstream/api-key, as the default tenant's does: acme's request looks in
    acme's namespace only, finds nothing, then finds acme's own secret once it has one, never the default's."""
    default_value = f"Bearer default-{uuid.uuid4().hex}"
    await store(gateway, ref(gateway, VAULT_SOURCE, API_KEY_SECRET), default_value, CredentialKind.HEADER, ("vaulted",))
    tenant = f"acme{uuid.uuid4().hex[:6]}"
    await add_tenant(gateway, tenant, users={"dave": ("admin",)}, servers=())
    async with gateway.engine() as database:
        servers = ServerRepository(database, tenant, load_master_key(gateway.settings.data_dir, environ={}))
        config = ServerConfig(
            url=stack.plain.url, credential=HeaderCredential(vault=f"{VAULT_SOURCE}/{API_KEY_SECRET}")
        )
        await servers.add("vaulted", config)
    await served(gateway, tenant, ("vaulted",))
    path = f"/t/{tenant}/mcp/vaulted"
    bearer = await access_token(gateway, tenant, "dave", gateway.base_url + path)

    request_id = new_request_id()
    response = await whoami(client, bearer, path, request_id)
    assert error(response) == {"code": UPSTREAM_FAILED, "message": NO_USABLE_CREDENTIAL}
    assert default_value not in response.text
    (refusal,) = await recorded(gateway, request_id, Action.CREDENTIAL_REFUSED, tenant)
    assert refusal.public["reason"] == "no such credential"
    assert await events_of(gateway, request_id) == []  # nothing about it in the default tenant's log

    acme_value = f"Bearer acme-{uuid.uuid4().hex}"
    await store(
        gateway, SecretRef(tenant, VAULT_SOURCE, API_KEY_SECRET), acme_value, CredentialKind.HEADER, ("vaulted",)
    )
    assert seen(await whoami(client, bearer, path)) == acme_value
    # And the default tenant's server never gets acme's (its own value may be an earlier one, cached for
    # VAULT_VALUE_TTL seconds).
    default_seen = seen(await whoami(client, await token(gateway, client, "vaulted"), "/mcp/vaulted"))
    assert default_seen != acme_value
    assert default_seen.startswith("Bearer ")


async def test_a_credential_read_that_cannot_be_recorded_is_refused_with_503(
    stack: Gateway, gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    """credential.read is fail-closed: when the vault cannot record the read, no value is used and nothing is sent
    upstream, answered as the proxy answers an MCP request the audit log cannot record."""
    state = gateway.state
    real = state.vault

    class AuditDown:
        async def record(self, ref: SecretRef) -> None:
            return None

        async def use(self, *args: object, **kwargs: object) -> bytes:
            raise AuditUnavailable("the audit log is down")

    name = f"audited-{uuid.uuid4().hex[:6]}"
    async with gateway.engine() as database:
        servers = ServerRepository(database, gateway.settings.tenant, load_master_key(gateway.settings.data_dir, {}))
        config = ServerConfig(
            url=stack.plain.url, credential=HeaderCredential(vault=f"{VAULT_SOURCE}/{API_KEY_SECRET}")
        )
        await servers.add(name, config)
    await served(gateway, gateway.settings.tenant, (name,))
    bearer = await token(gateway, client, name, user=ADMIN)  # the admin role reaches every server
    state.vault = AuditDown()  # type: ignore[assignment]  # the upstream's credentials are built on first use
    try:
        response = await whoami(client, bearer, f"/mcp/{name}")
    finally:
        state.vault = real
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == AUDIT_UNAVAILABLE


async def test_an_inline_secret_whose_use_cannot_be_recorded_is_not_used_and_answered_503(
    stack: Gateway, gateway: RunningServer, client: httpx.AsyncClient
) -> None:
    """The same rule for a client secret written in the server's config (the vault records its own reads)."""
    name = f"inline-{uuid.uuid4().hex[:6]}"
    async with gateway.engine() as database:
        servers = ServerRepository(database, gateway.settings.tenant, load_master_key(gateway.settings.data_dir, {}))
        credential = ClientCredentialsCredential(
            token_endpoint=stack.authorization_server.token_endpoint,
            client_id=EXCHANGE_CLIENT,
            client_secret=SecretStr(EXCHANGE_SECRET),
        )
        await servers.add(name, ServerConfig(url=stack.plain.url, credential=credential))
    await served(gateway, gateway.settings.tenant, (name,))
    bearer = await token(gateway, client, name, user=ADMIN)
    fetched = stack.authorization_server.count("client_credentials")
    log = gateway.state.audit.log

    async def audit_down(event: object) -> None:
        raise AuditUnavailable("the audit log is down")

    log.record_as_configured = audit_down  # type: ignore[method-assign]
    try:
        response = await whoami(client, bearer, f"/mcp/{name}")
    finally:
        del log.record_as_configured
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == AUDIT_UNAVAILABLE
    assert stack.authorization_server.count("client_credentials") == fetched  # the secret never left


# -- registering servers with vault references ----------------------------------------------------------------------


async def test_the_admin_api_accepts_and_echoes_vault_references(gateway: RunningServer) -> None:
    """References are not secrets: they come back as written; `secret_set` says no inline secret is stored."""
    default = gateway.state.default_tenant
    async with gateway.engine() as database:
        admin = await UserRepository(database, gateway.settings.tenant).get_by_username("admin")
    assert admin is not None
    bearer = default.token_issuer.issue(
        subject=admin.id,
        client_id="test",
        audience=default.admin_resource,
        scopes=frozenset(),
        tenant=default.id,
        grant_id=None,
        auth_time=None,
    ).token
    name = f"wiki_{uuid.uuid4().hex[:8]}"
    credential = {
        "type": "refresh_token",
        "token_endpoint": "https://auth.example.com/token",
        "client_id": "gateway",
        "client_secret_vault": "wiki/client-secret",
        "vault": "wiki/user-grant",
        "per_user": True,
    }
    async with httpx.AsyncClient(
        base_url=default.admin_resource, headers={"Authorization": f"Bearer {bearer}"}, timeout=30
    ) as admin_api:
        created = await admin_api.post(
            "/servers", json={"name": name, "url": "https://wiki.example.com/mcp", "credential": credential}
        )
        assert created.status_code == 201, created.text
        shown = created.json()["credential"]
        assert shown["type"] == "refresh_token"
        assert shown["vault"] == "wiki/user-grant"
        assert shown["client_secret_vault"] == "wiki/client-secret"
        assert shown["per_user"] is True
        assert shown["secret_set"] is False
        assert (await admin_api.get(f"/servers/{name}")).json()["credential"] == shown

        both = {"type": "header", "value": "inline-secret-value", "vault": "wiki/api-key"}
        refused = await admin_api.post(
            "/servers", json={"name": f"{name}x", "url": "https://wiki.example.com/mcp", "credential": both}
        )
        assert refused.status_code == 422, refused.text
        assert "'value' or 'vault'" in refused.text
        assert "inline-secret-value" not in refused.text
        assert (await admin_api.delete(f"/servers/{name}")).status_code == 204


async def test_a_per_user_credential_gives_a_client_acting_for_itself_nothing(gateway: RunningServer) -> None:
    """A client-credentials token names no user: there is no per-user secret to look up, and nothing is read."""
    config = RefreshTokenCredential(
        token_endpoint="https://auth.example.com/token", client_id="gw", vault="wiki/user-grant", per_user=True
    )
    now = int(time.time())
    machine = AccessTokenClaims(
        subject="a-client",
        client_id="a-client",
        audience=(gateway.resource("personal"),),
        scopes=frozenset(),
        expires_at=now + 60,
        issued_at=now,
        jti="j",
        grant_id=None,
        tenant=gateway.settings.tenant,
        auth_time=None,
        roles=(),
        raw={},
    )
    async with vault_of(gateway) as vault:
        credentials = credentials_for(
            config,
            subject_tokens=SubjectTokenMinter(gateway.base_url, lambda: gateway.state.keyring),
            vault=VaultAccess(vault, gateway.settings.tenant, "personal"),
        )
        try:
            with pytest.raises(UpstreamError, match=NO_USABLE_CREDENTIAL):
                await credentials.headers(machine)
        finally:
            await credentials.aclose()


# -- the gateway on OpenBao ------------------------------------------------------------------------------------------


def test_with_vault_openbao_the_gateway_reads_credentials_from_kv_and_revokes_its_token_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vault.openbao` set: the secrets live in OpenBao's KV v2 (the store keeps only the records), the transit key
    is the current key-encryption key, and stopping the gateway revokes its token."""
    (tmp_path / "openbao").mkdir()
    with running_openbao(tmp_path / "openbao") as bao, http_upstream("--stateless", "--json-response") as plain:
        token = bao.child_token(ttl="1h")
        monkeypatch.setenv(BAO_TOKEN_VARIABLE, token)
        openbao_settings = {"url": bao.url, "token_env": BAO_TOKEN_VARIABLE, "create_transit_key": True}
        servers = {"vaulted": {"url": plain.url, "credential": {"type": "header", "vault": "upstream/api-key"}}}
        roles = {"enterprise_roles": {"developer": {"mcp_servers": ["vaulted"]}}}
        value = f"Bearer in-openbao-{uuid.uuid4().hex}"
        with running_server(
            tmp_path / "gateway", servers=servers, roles=roles, vault={"openbao": openbao_settings}
        ) as running:
            state = running.state
            assert isinstance(state.vault.backend, OpenBaoBackend)
            assert state.vault_keks.current.key_id.startswith("openbao-transit:")

            async def scenario() -> str:
                settings = OpenBaoSettings.model_validate({**openbao_settings, "token_env": "T"})
                connection = await OpenBaoConnection.open(settings, {"T": bao.child_token(ttl="1h")})
                try:
                    async with running.engine() as database:
                        log = AuditLog(
                            database, load_master_key(running.settings.data_dir, environ={}), running.settings.audit
                        )
                        vault = Vault(database, OpenBaoBackend(connection), log)
                        await vault.store(
                            SecretRef(running.settings.tenant, "upstream", "api-key"),
                            value.encode(),
                            kind=CredentialKind.HEADER,
                            bindings=("vaulted",),
                        )
                finally:
                    await connection.close()
                async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
                    return seen(await whoami(http, await token_for(running, http, "vaulted"), "/mcp/vaulted"))

            assert asyncio.run(scenario()) == value
            stored = b"".join(path.read_bytes() for path in (tmp_path / "gateway").glob("chamberlain.db*"))
            assert value.encode() not in stored  # the value is in OpenBao, not in the database
        client = bao.client(token)
        try:
            with pytest.raises(hvac.exceptions.Forbidden):
                client.auth.token.lookup_self()  # revoked when the gateway stopped
        finally:
            client.adapter.close()


async def token_for(gateway: RunningServer, http: httpx.AsyncClient, server_name: str) -> str:
    client_id = (await register(http))["client_id"]
    pkce = Pkce.new()
    async with Browser(gateway.base_url) as browser:
        redirect = await browser.authorize(
            authorization_url(client_id, gateway.resource(server_name), pkce),
            username=gateway.user,
            password=gateway.user_password,
        )
    response = await exchange_code(http, client_id, redirect_params(redirect)["code"], pkce.verifier)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
