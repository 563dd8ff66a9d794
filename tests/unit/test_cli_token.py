"""The CLI's OAuth client parts without a server: URL rules, PKCE, resources and keychain names, the access-token
cache's reuse rule, the refresh lock, and the loopback redirect receiver driven over real HTTP on 127.0.0.1."""

from __future__ import annotations

import re
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keyrings.cryptfile.cryptfile import CryptFileKeyring
from typer.testing import CliRunner, Result

from chamberlain.cli.main import app
from chamberlain.client.credentials import (
    CachedAccessToken,
    Credentials,
    StoredGrant,
    entry_suffix,
    refresh_lock,
)
from chamberlain.client.flows import new_code_verifier, resource_for, s256_challenge
from chamberlain.client.loopback import AuthorizationRefused, LoginTimedOut, LoopbackReceiver
from chamberlain.client.oauth import ClientError, OAuthFailure, check_url, metadata_url
from chamberlain.oauth import pkce
from chamberlain.oauth.errors import OAuthError
from chamberlain.vault.backend import check_name
from chamberlain.vault.keychain import KeychainStore

ISSUER = "https://gw.example.com"
STATE = "state-7Qk2"


# -- URLs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_url", "issuer"),
    [
        ("https://gw.example.com/", "https://gw.example.com"),
        ("https://gw.example.com/t/acme", "https://gw.example.com/t/acme"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080/t/acme/", "http://localhost:8080/t/acme"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_issuer_urls_are_https_or_loopback_without_a_trailing_slash(given_url: str, issuer: str) -> None:
    assert check_url(given_url, "the URL") == issuer


@pytest.mark.parametrize(
    "url",
    [
        "http://gw.example.com",  # tokens in the clear off the machine
        "http://127.0.0.1.example.com",
        "ftp://gw.example.com",
        "https://user@gw.example.com",
        "https://gw.example.com/?x=1",
        "https://gw.example.com/#top",
        "https://gw.example.com:99999",
        "https:///no-host",
        "gw.example.com",
        "https://gw.example .com",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ClientError):
        check_url(url, "the URL")


@given(st.text(max_size=60))
def test_check_url_returns_a_safe_issuer_or_refuses(url: str) -> None:
    try:
        issuer = check_url(url, "the URL")
    except ClientError:
        return
    assert issuer.startswith(("https://", "http://127.", "http://localhost", "http://[::1]"))
    assert not issuer.endswith("/")
    assert "?" not in issuer
    assert "#" not in issuer


def test_metadata_url_inserts_the_well_known_segment_before_the_path() -> None:
    # RFC 8414 §3.1
    assert metadata_url(ISSUER) == "https://gw.example.com/.well-known/oauth-authorization-server"
    assert metadata_url(f"{ISSUER}/t/acme") == "https://gw.example.com/.well-known/oauth-authorization-server/t/acme"


def test_error_descriptions_that_rfc_6749_does_not_allow_are_dropped() -> None:
    failure = OAuthFailure.from_params({"error": "access_denied", "error_description": "no\x1b[31m way"})
    assert failure.error == "access_denied"
    assert failure.description is None
    assert OAuthFailure.from_params({"error": "bad\nerror"}).error == "invalid_response"


# -- PKCE, resources, keychain names -----------------------------------------------------------------------------


def test_s256_matches_the_rfc_7636_example() -> None:
    # RFC 7636 Appendix B
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_verifiers_satisfy_the_server_and_differ() -> None:
    verifiers = {new_code_verifier() for _ in range(20)}
    assert len(verifiers) == 20
    for verifier in verifiers:
        assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier)
        pkce.verify(pkce.validate_challenge(s256_challenge(verifier), "S256"), verifier)
    with pytest.raises(OAuthError):
        pkce.verify(s256_challenge(verifiers.pop()), verifiers.pop())


@pytest.mark.parametrize(
    ("audience", "resource"),
    [
        ("llm", f"{ISSUER}/llm"),
        ("mcp/demo", f"{ISSUER}/mcp/demo"),
        ("/mcp/demo/", f"{ISSUER}/mcp/demo"),
        (f"{ISSUER}/mcp/demo", f"{ISSUER}/mcp/demo"),
    ],
)
def test_audiences_name_resources_of_the_issuer(audience: str, resource: str) -> None:
    assert resource_for(ISSUER, audience) == resource


@pytest.mark.parametrize(
    "audience",
    ["", "/", "../llm", "mcp//demo", "https://other.example.com/llm", f"{ISSUER}.evil.com/llm", f"{ISSUER}/llm?x=1"],
)
def test_other_audiences_are_refused(audience: str) -> None:
    with pytest.raises(ClientError):
        resource_for(ISSUER, audience)


def test_keychain_names_read_well_for_plain_paths() -> None:
    assert entry_suffix(ISSUER, f"{ISSUER}/llm") == "llm"
    assert entry_suffix(ISSUER, f"{ISSUER}/mcp/demo") == "mcp.demo"
    # A dot in the path could collide with a slash turned into one: such names are digests.
    assert entry_suffix(ISSUER, f"{ISSUER}/mcp/a.b") != entry_suffix(ISSUER, f"{ISSUER}/mcp.a/b")


_PATH_SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=50)


@given(st.lists(_PATH_SEGMENT, min_size=1, max_size=4), st.lists(_PATH_SEGMENT, min_size=1, max_size=4))
def test_distinct_resources_get_distinct_valid_keychain_names(first: list[str], second: list[str]) -> None:
    one, two = f"{ISSUER}/{'/'.join(first)}", f"{ISSUER}/{'/'.join(second)}"
    names = entry_suffix(ISSUER, one), entry_suffix(ISSUER, two)
    for name in names:
        check_name(f"grant.{name}", "entry")
    assert (names[0] == names[1]) == (one == two)


# -- the cache and the keychain entries ---------------------------------------------------------------------------


def test_a_cached_token_is_reused_while_it_outlives_claude_codes_five_minutes() -> None:
    now = 1_000_000.0
    ten_minutes = CachedAccessToken(f"{ISSUER}/llm", "token-canary", expires_at=now + 600, lifetime=600)
    assert ten_minutes.usable(now)
    assert ten_minutes.usable(now + 300)
    assert not ten_minutes.usable(now + 301)
    one_minute = CachedAccessToken(f"{ISSUER}/llm", "t", expires_at=now + 60, lifetime=60)
    assert one_minute.usable(now + 30)
    assert not one_minute.usable(now + 31)
    assert "token-canary" not in repr(ten_minutes)


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    ring = CryptFileKeyring()
    ring.file_path = str(tmp_path / "cryptfile.cfg")
    ring.time_cost, ring.memory_cost = 2, 2**12  # the same scheme, cheaper than the 1.5 s defaults
    ring.keyring_key = "test password"
    return Credentials(KeychainStore(ISSUER, backend=ring))


def _grant(resource: str, refresh_token: str = "refresh-1") -> StoredGrant:
    return StoredGrant(resource, "client-1", refresh_token, "offline_access", f"{ISSUER}/token", f"{ISSUER}/revoke")


def test_grants_and_tokens_are_kept_per_resource(credentials: Credentials) -> None:
    llm, demo = f"{ISSUER}/llm", f"{ISSUER}/mcp/demo"
    credentials.save_grant(_grant(llm))
    credentials.save_access_token(CachedAccessToken(llm, "access-1", 2e9, 600))
    assert credentials.grant(llm) == _grant(llm)
    assert credentials.access_token(llm) == CachedAccessToken(llm, "access-1", 2e9, 600)
    assert credentials.grant(demo) is None
    assert "refresh-1" not in repr(credentials.grant(llm))
    credentials.forget(llm)
    assert credentials.grant(llm) is None
    assert credentials.access_token(llm) is None


def test_an_entry_this_cli_did_not_write_is_reported(credentials: Credentials) -> None:
    resource = f"{ISSUER}/llm"
    credentials.store.set("grant.llm", "not json")
    with pytest.raises(ClientError, match="sign in again"):
        credentials.grant(resource)
    credentials.store.set("access.llm", '{"resource": "x", "access_token": "t", "expires_at": "soon", "lifetime": 1}')
    with pytest.raises(ClientError, match="sign in again"):
        credentials.access_token(resource)


def test_an_entry_for_another_resource_under_the_same_name_is_not_used(credentials: Credentials) -> None:
    credentials.save_grant(_grant(f"{ISSUER}/llm"))
    stored = credentials.store.get("grant.llm")
    assert stored is not None
    credentials.store.set("grant.mcp.demo", stored)
    assert credentials.grant(f"{ISSUER}/mcp/demo") is None


def test_the_refresh_lock_excludes_other_holders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    order: list[str] = []
    held = threading.Event()

    def other() -> None:
        held.wait()
        with refresh_lock(ISSUER):
            order.append("other")

    thread = threading.Thread(target=other)
    thread.start()
    with refresh_lock(ISSUER):
        held.set()
        time.sleep(0.3)  # the other thread is blocked on the lock meanwhile
        order.append("first")
    thread.join(5)
    assert order == ["first", "other"]
    assert (tmp_path / "chamberlain").stat().st_mode & 0o777 == 0o700


# -- the loopback receiver ---------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[LoopbackReceiver]:
    with LoopbackReceiver(state=STATE, issuer=ISSUER, iss_required=True) as listening:
        yield listening


def _callback(receiver: LoopbackReceiver, **params: str) -> httpx.Response:
    return httpx.get(receiver.redirect_uri, params=params, timeout=5)


def test_the_code_with_our_state_and_issuer_is_taken(receiver: LoopbackReceiver) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/callback", receiver.redirect_uri)
    page = _callback(receiver, code="code-1", state=STATE, iss=ISSUER)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "close this window" in page.text
    assert receiver.wait(1) == "code-1"


def test_responses_with_another_state_are_ignored(receiver: LoopbackReceiver) -> None:
    assert _callback(receiver, code="forged", state="other", iss=ISSUER).status_code == 400
    assert _callback(receiver, code="forged", iss=ISSUER).status_code == 400
    assert _callback(receiver, code="forged", state=STATE, iss=ISSUER, **{"x": "1"}).status_code == 200
    assert receiver.wait(1) == "forged"
    # Only the first response counts.
    assert _callback(receiver, code="late", state=STATE, iss=ISSUER).status_code == 400
    assert receiver.wait(1) == "forged"


def test_a_repeated_parameter_is_not_taken(receiver: LoopbackReceiver) -> None:
    url = f"{receiver.redirect_uri}?code=a&code=b&state={STATE}&iss={ISSUER}"
    assert httpx.get(url, timeout=5).status_code == 400
    with pytest.raises(LoginTimedOut):
        receiver.wait(0.2)


def test_an_error_response_ends_the_login(receiver: LoopbackReceiver) -> None:
    page = _callback(
        receiver, error="access_denied", error_description="the user denied the request", state=STATE, iss=ISSUER
    )
    assert page.status_code == 400
    assert "access_denied" in page.text
    with pytest.raises(AuthorizationRefused) as refused:
        receiver.wait(1)
    assert refused.value.error == "access_denied"
    assert refused.value.description == "the user denied the request"


@pytest.mark.parametrize("iss", [None, "https://evil.example.com"])
def test_a_response_from_another_issuer_is_refused(receiver: LoopbackReceiver, iss: str | None) -> None:
    # RFC 9207 §2.4: a server that announces iss must send it, and it must be the issuer the request went to.
    params = {"code": "code-1", "state": STATE, **({"iss": iss} if iss else {})}
    assert _callback(receiver, **params).status_code == 400
    with pytest.raises(ClientError, match="another issuer"):
        receiver.wait(1)


def test_iss_is_optional_when_the_server_does_not_announce_it() -> None:
    with LoopbackReceiver(state=STATE, issuer=ISSUER, iss_required=False) as receiver:
        _callback(receiver, code="code-1", state=STATE)
        assert receiver.wait(1) == "code-1"


def test_other_paths_are_not_found_and_nothing_is_logged(
    receiver: LoopbackReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    assert httpx.get(receiver.redirect_uri.replace("/callback", "/favicon.ico"), timeout=5).status_code == 404
    _callback(receiver, code="secret-code-canary", state=STATE, iss=ISSUER)
    assert receiver.wait(1) == "secret-code-canary"
    captured = capfd.readouterr()
    assert "secret-code-canary" not in captured.out + captured.err


def test_waiting_ends_after_the_timeout(receiver: LoopbackReceiver) -> None:
    with pytest.raises(LoginTimedOut, match=r"within 0\.2 seconds"):
        receiver.wait(0.2)


# -- the commands -------------------------------------------------------------------------------------------------

_NO_URL: dict[str, str | None] = {"CHAMBERLAIN_URL": None, "ANTHROPIC_BASE_URL": None}


def _token(*args: str, **env: str | None) -> Result:
    return CliRunner().invoke(app, ["token", *args], env={**_NO_URL, **env})


def test_token_without_a_url_says_how_to_give_one() -> None:
    result = _token()
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "chamberlain token: no Chamberlain URL: pass --url or set CHAMBERLAIN_URL\n"


def test_the_url_comes_from_chamberlain_url_then_claude_codes_base_url() -> None:
    # http off the machine is refused before any keychain or network use, naming the URL that was taken.
    result = _token(ANTHROPIC_BASE_URL="http://base.example.com")
    assert result.exit_code == 1
    assert "'http://base.example.com' must use https" in result.stderr
    result = _token(ANTHROPIC_BASE_URL="http://base.example.com", CHAMBERLAIN_URL="http://chamberlain.example.com")
    assert "'http://chamberlain.example.com' must use https" in result.stderr
    assert result.stdout == ""


def test_desktop_commands_start_without_the_servers_modules() -> None:
    # `chamberlain token` runs before Claude Code's requests: it must not pay for importing the server.
    probe = (
        "import sys\n"
        "from chamberlain.cli import entry\n"
        "sys.argv = ['chamberlain', 'token', '--help']\n"
        "try:\n    entry.main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('chamberlain.cli.main', 'chamberlain.state', 'chamberlain.oauth.errors', 'starlette', 'sqlalchemy')\n"
        "print(sorted(name for name in sys.modules if name.startswith(heavy)), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert "Usage: chamberlain token" in result.stdout
    assert result.stderr.strip() == "[]"
