"""`chamberlain login`, `token` and `logout` against a real server, the CLI run as a real subprocess the way Claude Code
runs its apiKeyHelper (issue 9 acceptance 4): on success only the token on stdout and exit 0; when a sign-in is
needed (never signed in, grant revoked) nothing on stdout, a one-line message on stderr and a non-zero exit.

Each test gets its own "desktop": a temporary HOME with keyrings.alt's file keyring selected by
PYTHON_KEYRING_BACKEND. That backend keeps secrets in plain text, which the CLI refuses unless told otherwise, so
every command here passes --allow-insecure-keychain explicitly (and one test shows the refusal without it). The
person at the browser is played by tests/support/browser.py against the URL the CLI prints, and the browser's last
redirect is delivered to the CLI's loopback receiver.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from keyrings.alt.file import PlaintextKeyring

from chamberlain.client import oauth
from chamberlain.client.credentials import Credentials, StoredGrant
from chamberlain.client.flows import resource_for, sign_in
from chamberlain.client.loopback import AuthorizationRefused
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.store.clients import ClientRepository
from chamberlain.store.grants import GrantRepository
from chamberlain.vault.keychain import ALLOW_FLAG, KeychainStore
from tests.support.browser import Browser
from tests.support.server import RunningServer, free_port, random_name
from tests.support.tenants import add_tenant

# The `chamberlain` executable's code path for desktop commands (cli/entry.py), without the console script's own
# start-up: the script itself is run once, in the first test.
CHAMBERLAIN = [sys.executable, "-c", "from chamberlain.cli.entry import main; main()"]
INSTALLED_SCRIPT = str(Path(sys.executable).parent / "chamberlain")
AUDIENCE = "llm"
PLAINTEXT_BACKEND = "keyrings.alt.file.PlaintextKeyring"
SQLITE_ONLY = pytest.mark.parametrize("server", ["sqlite"], indirect=True)  # CLI behaviour, not the store's


@dataclass
class Desktop:
    """One person's machine: HOME, the keyring file and the lock directory, and the environment the CLI runs in."""

    home: Path
    env: dict[str, str]

    @classmethod
    def at(cls, home: Path) -> Desktop:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("CHAMBERLAIN_", "ANTHROPIC_"))}
        env |= {
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "PYTHON_KEYRING_BACKEND": PLAINTEXT_BACKEND,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        return cls(home, env)

    @property
    def keyring_file(self) -> Path:
        return self.home / "data" / "python_keyring" / "keyring_pass.cfg"  # PlaintextKeyring.filename

    def run(self, *args: str, allow: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*CHAMBERLAIN, *args, *([ALLOW_FLAG] if allow else [])]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120, check=False)

    def token(self, server: RunningServer, **kwargs: bool) -> subprocess.CompletedProcess[str]:
        return self.run("token", "--url", server.base_url, "--audience", AUDIENCE, **kwargs)

    def credentials(self, issuer: str) -> Credentials:
        """The CLI's entries, read and written from the test (the same file)."""
        ring = PlaintextKeyring()
        ring.file_path = str(self.keyring_file)
        return Credentials(KeychainStore(issuer, allow_insecure=True, backend=ring))

    def expire_cached_token(self, issuer: str, resource: str) -> None:
        """As if the cached access token had grown old: the next `chamberlain token` must refresh."""
        credentials = self.credentials(issuer)
        cached = credentials.access_token(resource)
        assert cached is not None
        credentials.save_access_token(replace(cached, expires_at=time.time() - 1))


@pytest.fixture
def desktop(tmp_path: Path) -> Desktop:
    return Desktop.at(tmp_path / "home")


def _lines(stream: str) -> list[str]:
    """stderr without keyring's warning about the explicitly allowed plain-text backend."""
    return [line for line in stream.splitlines() if line and "explicitly allowed" not in line]


def assert_login_needed(result: subprocess.CompletedProcess[str], server: RunningServer) -> str:
    """Claude Code's contract when a sign-in is needed: non-zero, nothing on stdout, one line saying what to do."""
    assert result.returncode != 0
    assert result.stdout == ""
    lines = _lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert f"chamberlain login --url {server.base_url}" in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


async def _person_signs_in(server: RunningServer, url: str, *, username: str, decision: str) -> str:
    async with Browser(server.base_url) as browser:
        redirect = await browser.authorize(url, username=username, password=server.user_password, decision=decision)
    assert redirect.status_code == 302, redirect.text[:300]
    return redirect.headers["location"]


def person_at_the_browser(
    server: RunningServer, *, username: str | None = None, decision: str = "allow"
) -> Callable[[str], None]:
    """The `open_browser` hook: signs in (and consents) over HTTP, then delivers the redirect to the loopback."""

    def open_browser(url: str) -> None:
        location = asyncio.run(_person_signs_in(server, url, username=username or server.user, decision=decision))
        assert location.startswith("http://127.0.0.1:")
        httpx.get(location, timeout=10)

    return open_browser


def login_in_process(server: RunningServer, credentials: Credentials, audience: str = AUDIENCE) -> str:
    resource = resource_for(credentials.issuer, audience)
    with oauth.http_client() as http:
        return sign_in(http, credentials, resource, open_browser=person_at_the_browser(server))


def claims_of(server: RunningServer, token: str, resource: str, tenant: str | None = None) -> AccessTokenClaims:
    realm = server.state.tenant(tenant or server.settings.tenant)
    assert realm is not None
    return realm.token_verifier.verify(token, audience=resource)


def revoke_grant_at_the_server(server: RunningServer, grant_id: str | None) -> None:
    """What an administrator's revocation does to this one grant (its refresh tokens and access tokens)."""
    assert grant_id is not None

    async def revoke() -> None:
        async with server.engine() as database:
            await GrantRepository(database, server.settings.tenant).revoke_grant(grant_id, "revoked_by_admin")

    asyncio.run(revoke())


def refresh_is_refused(server: RunningServer, grant: StoredGrant) -> bool:
    form = {"grant_type": "refresh_token", "client_id": grant.client_id, "refresh_token": grant.refresh_token}
    response = httpx.post(f"{server.base_url}/token", data=form, timeout=10)
    return response.status_code == 400 and response.json()["error"] == "invalid_grant"


# -- acceptance 4: the apiKeyHelper contract ----------------------------------------------------------------------


def test_token_keeps_claude_codes_api_key_helper_contract(server: RunningServer, desktop: Desktop) -> None:
    issuer, resource = server.base_url, f"{server.base_url}/{AUDIENCE}"
    outputs: list[str] = []

    argv = [INSTALLED_SCRIPT, "token", "--url", issuer, "--audience", AUDIENCE, ALLOW_FLAG]
    before = subprocess.run(argv, env=desktop.env, capture_output=True, text=True, timeout=120, check=False)
    assert "not signed in" in assert_login_needed(before, server)

    login = subprocess.Popen(
        [*CHAMBERLAIN, "login", "--url", issuer, "--audience", AUDIENCE, "--no-browser", ALLOW_FLAG],
        env=desktop.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert login.stderr is not None
    url = next(line.strip() for line in login.stderr if line.strip().startswith("http"))
    assert url.startswith(f"{issuer}/authorize?")
    location = asyncio.run(_person_signs_in(server, url, username=server.user, decision="allow"))
    page = httpx.get(location, timeout=10)
    assert page.status_code == 200
    assert "Signed in" in page.text
    stdout, stderr = login.communicate(timeout=60)
    assert login.returncode == 0, stderr
    assert stdout == f"Signed in to {issuer} for {resource}.\n"
    outputs += [stdout, stderr]

    first = desktop.token(server)
    assert first.returncode == 0, first.stderr
    token = first.stdout.removesuffix("\n")
    assert first.stdout == token + "\n"
    assert "\n" not in token
    assert " " not in token
    claims = claims_of(server, token, resource)
    assert claims.audience == (resource,)
    assert claims.roles == ("developer",)  # alice's
    outputs += [first.stderr]

    # Cached: a second process gets the same token without a refresh.
    grant = desktop.credentials(issuer).grant(resource)
    assert grant is not None
    again = desktop.token(server)
    assert again.returncode == 0
    assert again.stdout == first.stdout
    assert desktop.credentials(issuer).grant(resource) == grant

    # Near expiry: refreshed, and the rotated refresh token is what the keychain now holds.
    desktop.expire_cached_token(issuer, resource)
    refreshed = desktop.token(server)
    assert refreshed.returncode == 0, refreshed.stderr
    new_token = refreshed.stdout.removesuffix("\n")
    assert new_token != token
    assert claims_of(server, new_token, resource).grant_id == claims.grant_id
    rotated = desktop.credentials(issuer).grant(resource)
    assert rotated is not None
    assert rotated.refresh_token != grant.refresh_token
    outputs += [refreshed.stderr]

    # The grant revoked at the server: once the cached token is due, a sign-in is needed, and the entries go.
    revoke_grant_at_the_server(server, claims.grant_id)
    desktop.expire_cached_token(issuer, resource)
    revoked = desktop.token(server)
    assert "has ended (invalid_grant)" in assert_login_needed(revoked, server)
    assert desktop.credentials(issuer).grant(resource) is None
    assert desktop.credentials(issuer).access_token(resource) is None
    outputs += [revoked.stderr]

    for secret in (grant.refresh_token, rotated.refresh_token, token, new_token):
        assert all(secret not in output for output in outputs)


def test_a_plaintext_keyring_is_refused_without_the_explicit_allow(server: RunningServer, desktop: Desktop) -> None:
    for command in (["token"], ["login", "--no-browser"], ["logout"]):
        result = desktop.run(*command, "--url", server.base_url, allow=False)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        lines = _lines(result.stderr)
        assert len(lines) == 1
        assert "plain-text file" in lines[0]
        assert ALLOW_FLAG in lines[0]
    assert not desktop.keyring_file.exists()


def test_concurrent_token_processes_refresh_once_and_keep_the_grant(server: RunningServer, desktop: Desktop) -> None:
    # Refresh tokens rotate, and presenting a rotated one revokes the grant (reuse detection): helpers started
    # together by several Claude Code sessions must not trip it.
    issuer, resource = server.base_url, f"{server.base_url}/{AUDIENCE}"
    login_in_process(server, desktop.credentials(issuer))
    for _ in range(2):
        desktop.expire_cached_token(issuer, resource)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: desktop.token(server), range(4)))
        assert [result.returncode for result in results] == [0, 0, 0, 0], [result.stderr for result in results]
        assert len({result.stdout for result in results}) == 1


# -- sign-in and sign-out -----------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_logout_revokes_the_grant_and_forgets_it(server: RunningServer, desktop: Desktop) -> None:
    issuer, resource = server.base_url, f"{server.base_url}/{AUDIENCE}"
    login_in_process(server, desktop.credentials(issuer))
    grant = desktop.credentials(issuer).grant(resource)
    assert grant is not None

    result = desktop.run("logout", "--url", issuer, "--audience", AUDIENCE)
    assert result.returncode == 0, result.stderr
    assert "revoked" in result.stdout
    assert refresh_is_refused(server, grant)
    assert desktop.credentials(issuer).grant(resource) is None
    assert_login_needed(desktop.token(server), server)
    assert "Not signed in" in desktop.run("logout", "--url", issuer, "--audience", AUDIENCE).stdout


@SQLITE_ONLY
def test_an_unreachable_server_is_one_line_and_nothing_on_stdout(server: RunningServer, desktop: Desktop) -> None:
    issuer, resource = server.base_url, f"{server.base_url}/{AUDIENCE}"
    closed = f"http://127.0.0.1:{free_port()}"
    desktop.credentials(issuer).save_grant(
        StoredGrant(resource, "client", "refresh-token", None, f"{closed}/token", f"{closed}/revoke")
    )
    result = desktop.token(server)
    assert "cannot reach" in assert_login_needed(result, server)
    assert desktop.credentials(issuer).grant(resource) is not None  # kept: the server may come back


@SQLITE_ONLY
def test_the_client_is_registered_once_and_again_when_the_server_forgot_it(
    server: RunningServer, desktop: Desktop
) -> None:
    issuer, resource = server.base_url, f"{server.base_url}/{AUDIENCE}"
    credentials = desktop.credentials(issuer)
    client_id = login_in_process(server, credentials)
    first_grant = credentials.grant(resource)
    assert first_grant is not None

    assert login_in_process(server, credentials) == client_id
    # Signing in again replaces the grant, and the one it replaces is revoked rather than left alive.
    assert refresh_is_refused(server, first_grant)

    async def revoke_client() -> None:
        async with server.engine() as database:
            await ClientRepository(database, server.settings.tenant).revoke(client_id)
            await GrantRepository(database, server.settings.tenant).revoke_client_tokens(
                client_id, longest_token_lifetime=server.settings.tokens.access_token_ttl
            )

    asyncio.run(revoke_client())
    deadline = time.monotonic() + 10
    with oauth.http_client() as http:
        server_metadata = oauth.discover(http, issuer)
        while oauth.client_is_known(http, server_metadata, client_id):  # the server's revocation feed: ~1 s
            assert time.monotonic() < deadline
            time.sleep(0.1)
    desktop.expire_cached_token(issuer, resource)
    assert "has ended (invalid_client)" in assert_login_needed(desktop.token(server), server)
    assert login_in_process(server, credentials) != client_id


@SQLITE_ONLY
def test_refusing_consent_ends_the_login_and_stores_nothing(server: RunningServer, desktop: Desktop) -> None:
    issuer = server.base_url
    credentials = desktop.credentials(issuer)
    resource = resource_for(issuer, AUDIENCE)
    with oauth.http_client() as http, pytest.raises(AuthorizationRefused) as refused:
        sign_in(http, credentials, resource, open_browser=person_at_the_browser(server, decision="deny"))
    assert refused.value.error == "access_denied"
    assert credentials.grant(resource) is None


@SQLITE_ONLY
def test_a_resource_the_server_does_not_have_is_refused(server: RunningServer, desktop: Desktop) -> None:
    credentials = desktop.credentials(server.base_url)
    with pytest.raises(AuthorizationRefused) as refused:
        login_in_process(server, credentials, audience="mcp/no-such-server")
    assert refused.value.error == "invalid_target"


@SQLITE_ONLY
def test_a_forged_callback_does_not_end_the_login(server: RunningServer, desktop: Desktop) -> None:
    credentials = desktop.credentials(server.base_url)
    resource = resource_for(server.base_url, AUDIENCE)
    person = person_at_the_browser(server)
    forged: list[int] = []

    def open_browser(url: str) -> None:
        redirect_uri = dict(httpx.URL(url).params)["redirect_uri"]
        # Another local process guesses the port and sends a code of its own, without our state.
        forged.append(httpx.get(redirect_uri, params={"code": "attacker", "iss": server.base_url}).status_code)
        person(url)

    with oauth.http_client() as http:
        sign_in(http, credentials, resource, open_browser=open_browser)
    assert forged == [400]
    assert credentials.grant(resource) is not None


@SQLITE_ONLY
async def test_a_tenant_issuer_is_discovered_at_its_inserted_well_known_path(
    server: RunningServer, desktop: Desktop
) -> None:
    tenant = random_name("desk")
    await add_tenant(server, tenant, users={"dana": ("developer",)})
    issuer = f"{server.base_url}/t/{tenant}"
    resource = f"{issuer}/{AUDIENCE}"
    credentials = desktop.credentials(issuer)

    def sign_in_as_dana() -> None:
        with oauth.http_client() as http:
            sign_in(http, credentials, resource, open_browser=person_at_the_browser(server, username="dana"))

    await asyncio.to_thread(sign_in_as_dana)
    result = await asyncio.to_thread(desktop.run, "token", "--url", issuer, "--audience", AUDIENCE)
    assert result.returncode == 0, result.stderr
    claims = claims_of(server, result.stdout.strip(), resource, tenant)
    assert claims.tenant == tenant
    # The default tenant's entries are another service in the keychain.
    assert desktop.credentials(server.base_url).grant(f"{server.base_url}/{AUDIENCE}") is None
