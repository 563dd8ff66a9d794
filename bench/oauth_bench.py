"""Token endpoint throughput and access-token verification cost, measured on this machine.

    .venv/bin/python bench/oauth_bench.py                    # SQLite (the default store), about a minute
    .venv/bin/python bench/oauth_bench.py --quick            # a short smoke run (~30 s)
    .venv/bin/python bench/oauth_bench.py --postgres         # a fresh PostgreSQL database, dropped afterwards
    .venv/bin/python bench/oauth_bench.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/NAME
    .venv/bin/python bench/oauth_bench.py --profile          # also py-spy the refresh_token path (pip install py-spy)

What it does:
  1. In process: AccessTokenVerifier.verify on tokens it has never seen (full ES256 check) and on one it has (its
     cache), against the floor every ES256 verifier pays: one `cryptography` P-256 verify of the same bytes, in the
     same run. Issuing (AccessTokenIssuer.issue) is measured against one P-256 sign the same way.
  2. A real gateway (`chamberlain init` + `chamberlain serve`) as a separate process, set up through its public
     API: a confidential client (client_secret_basic) and, through the HTML login and consent pages, several
     authorization-code grants whose refresh tokens start independent refresh chains (rotation makes each chain
     sequential, so several chains run at once to load the server).
  3. Load phases over loopback keep-alive connections, each after a warm-up and bounded by a request count and a
     deadline: GET /healthz (the direct path: HTTP stack only), client_credentials, refresh_token (concurrent
     chains, then a single chain), and an authenticated MCP `ping` on /mcp/demo.
  4. With the gateway stopped, the parts of a refresh measured alone in process (client lookup, rotation) against
     the same SQL on the bare driver (sqlite3 / asyncpg), so the report says where a refresh's CPU goes.

The yardstick is the gateway's CPU time per request (utime+stime of its process, every thread, from /proc):
"req/s per core" = requests / gateway CPU seconds. On PostgreSQL the database's own CPU is reported next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import linecache
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

import httpx
from bench._common import (
    Gateway,
    PhaseResult,
    RawConnection,
    Request,
    StopWorker,
    fresh_postgres_url,
    http_request,
    idle_cpu_rate,
    num,
    postgres_database,
    run_phase,
    table,
)

REFRESH_TARGET_PER_CORE = 500.0  # the acceptance target
# Keycloak's high-availability guide, "Concepts for sizing CPU and memory resources": one vCPU per 120 refresh token
# requests/s and per 120 client credential grants/s (there each grant also opens a new TLS connection). Published
# figures, not measured here.
KEYCLOAK_REFRESH_PER_VCPU = 120.0
KEYCLOAK_CLIENT_CREDENTIALS_PER_VCPU = 120.0
VERIFY_TARGET_US = 100.0
REDIRECT_URI = "http://127.0.0.1:9/cb"
USER, USER_PASSWORD = "bench", "bench password, long enough"
PING = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()


@dataclass(frozen=True)
class Budget:
    requests: int
    seconds: float
    warmup: int
    warmup_seconds: float
    component_calls: int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--database-url", help="PostgreSQL URL; that database is created fresh and dropped afterwards")
    store.add_argument("--postgres", action="store_true", help="use a fresh database on postgres@127.0.0.1:5432")
    parser.add_argument("--quick", action="store_true", help="a fifth of the requests and time")
    parser.add_argument("--concurrency", type=int, default=16, help="connections, and refresh chains [16]")
    parser.add_argument("--requests", type=int, default=6000, help="max requests per phase [6000]")
    parser.add_argument("--seconds", type=float, default=10.0, help="max seconds per token phase [10]")
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway during an extra refresh phase")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--uvicorn-loop", choices=["asyncio", "uvloop"], help="serve with this loop (comparison)")
    parser.add_argument("--uvicorn-http", choices=["h11", "httptools"], help="serve with this parser (comparison)")
    parser.add_argument("--extra-pythonpath", help="prepended to the gateway's PYTHONPATH (uvloop installed aside)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server log, profile)")
    args = parser.parse_args()
    if args.postgres:
        args.database_url = fresh_postgres_url()
    if args.database_url and not args.database_url.startswith(("postgresql://", "postgresql+asyncpg://")):
        parser.error("--database-url must be a postgresql:// or postgresql+asyncpg:// URL (SQLite is the default)")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


# -- 1. verification and issuing cost, in process ---------------------------------------------------------------------


@dataclass
class TokenCrypto:
    cold_us: float  # AccessTokenVerifier.verify, a token never seen: full ES256 check
    warm_us: float  # the same token again: the verifier's cache
    joserfc_decode_us: float  # joserfc jwt.decode alone: the library's share of the cold path
    raw_verify_us: float  # cryptography ECDSA P-256 verify of the same bytes: the floor
    issue_us: float  # AccessTokenIssuer.issue
    raw_sign_us: float  # cryptography ECDSA P-256 sign of the same bytes: the floor
    ed25519_verify_us: float  # cryptography Ed25519 verify of the same bytes (tokens.signing_algorithm: EdDSA)


def measure_token_crypto(tokens_per_round: int, rounds: int = 3) -> TokenCrypto:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from joserfc import jwt
    from joserfc.jwk import ECKey

    from chamberlain.crypto.signing_keys import KeyRing, SigningKey
    from chamberlain.oauth.access_tokens import AccessTokenIssuer, AccessTokenVerifier
    from chamberlain.oauth.revocation_list import RevocationList

    issuer_url = "http://127.0.0.1:8080"
    audience = f"{issuer_url}/mcp/demo"
    key = ECKey.generate_key("P-256")
    kid = key.thumbprint()
    public_jwk = {**key.as_dict(private=False), "kid": kid, "alg": "ES256"}
    ring = KeyRing([SigningKey(kid, "ES256", key, public_jwk, time.time())])
    issuer = AccessTokenIssuer(issuer_url, lambda: ring, 600)
    ecdsa = ec.ECDSA(hashes.SHA256())
    private = key.private_key
    assert private is not None
    edwards = ed25519.Ed25519PrivateKey.generate()
    edwards_public = edwards.public_key()

    def issue() -> str:
        return issuer.issue(
            subject="5f1c2b9e-8a4d-4e0f-9a57-1b2c3d4e5f60",
            client_id="0b8e8f0c-3c1a-4d7e-8f7d-6a5b4c3d2e1f",
            audience=audience,
            scopes=frozenset({"mcp:tools"}),
            tenant="default",
            grant_id="1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
            auth_time=time.time(),
        ).token

    def per_call_us(run: Callable[[], int]) -> float:
        started = time.perf_counter_ns()
        calls = run()
        return (time.perf_counter_ns() - started) / calls / 1000

    figures: dict[str, list[float]] = {name: [] for name in TokenCrypto.__dataclass_fields__}
    for _ in range(rounds):
        tokens: list[str] = []
        verifier = AccessTokenVerifier(issuer_url, lambda: ring, RevocationList())

        def issue_all(tokens: list[str] = tokens) -> int:
            for _ in range(tokens_per_round):
                tokens.append(issue())
            return tokens_per_round

        def verify_each(verifier: AccessTokenVerifier = verifier, tokens: list[str] = tokens) -> int:
            for token in tokens:
                verifier.verify(token, audience=audience)
            return len(tokens)

        def verify_same(verifier: AccessTokenVerifier = verifier, tokens: list[str] = tokens) -> int:
            repeats = 50 * len(tokens)
            token = tokens[0]
            for _ in range(repeats):
                verifier.verify(token, audience=audience)
            return repeats

        def decode_each(tokens: list[str] = tokens) -> int:
            for token in tokens:
                jwt.decode(token, ring.resolver(lambda: ValueError("unknown key")), algorithms=ring.algorithms)
            return len(tokens)

        figures["issue_us"].append(per_call_us(issue_all))
        figures["cold_us"].append(per_call_us(verify_each))
        figures["warm_us"].append(per_call_us(verify_same))
        figures["joserfc_decode_us"].append(per_call_us(decode_each))

        prepared = []
        for token in tokens:
            header, payload, signature = token.split(".")
            raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            signing_input = f"{header}.{payload}".encode()
            prepared.append((der, signing_input, edwards.sign(signing_input)))

        def raw_verify_each(prepared: list[tuple[bytes, bytes, bytes]] = prepared) -> int:
            for der, signing_input, _ in prepared:
                key.public_key.verify(der, signing_input, ecdsa)
            return len(prepared)

        def raw_sign_each(prepared: list[tuple[bytes, bytes, bytes]] = prepared) -> int:
            for _, signing_input, _ in prepared:
                private.sign(signing_input, ecdsa)
            return len(prepared)

        def ed25519_verify_each(prepared: list[tuple[bytes, bytes, bytes]] = prepared) -> int:
            for _, signing_input, signature in prepared:
                edwards_public.verify(signature, signing_input)
            return len(prepared)

        figures["raw_verify_us"].append(per_call_us(raw_verify_each))
        figures["raw_sign_us"].append(per_call_us(raw_sign_each))
        figures["ed25519_verify_us"].append(per_call_us(ed25519_verify_each))
    # Best of the rounds: the one least disturbed by the rest of the machine.
    return TokenCrypto(**{name: min(values) for name, values in figures.items()})


# -- 2. setup through the public API ----------------------------------------------------------------------------------


@dataclass
class Setup:
    client_id: str
    basic: str  # the Authorization header value
    resource: str
    refresh_tokens: list[str]
    access_token: str


def basic_header(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: both parts are form-urlencoded before they are joined and base64-encoded.
    joined = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(joined).decode()


async def set_up(base_url: str, chains: int) -> Setup:
    from tests.support.browser import Browser
    from tests.support.oauth import Pkce

    resource = f"{base_url}/mcp/demo"
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        registered = await http.post(
            "/register",
            json={
                "client_name": "oauth bench",
                "redirect_uris": [REDIRECT_URI],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
            },
        )
        if registered.status_code != 201:
            raise RuntimeError(f"registration failed: {registered.status_code} {registered.text}")
        client = registered.json()
        basic = basic_header(client["client_id"], client["client_secret"])

        refresh_tokens = []
        user_access_token = ""
        async with Browser(base_url) as browser:  # signs in once; its session cookie serves every authorization
            for _ in range(chains):
                pkce = Pkce.new()
                query = {
                    "response_type": "code",
                    "client_id": client["client_id"],
                    "redirect_uri": REDIRECT_URI,
                    "state": secrets.token_urlsafe(8),
                    "resource": resource,
                    "scope": "mcp:tools",
                    "code_challenge": pkce.challenge,
                    "code_challenge_method": "S256",
                }
                url = "/authorize?" + urlencode(query)
                redirect = await browser.authorize(url, username=USER, password=USER_PASSWORD)
                location = redirect.headers.get("location", "")
                if redirect.status_code != 302 or not location.startswith(REDIRECT_URI):
                    raise RuntimeError(f"authorization failed: {redirect.status_code} {redirect.text[:300]}")
                code = parse_qs(urlsplit(location).query)["code"][0]
                exchanged = await http.post(
                    "/token",
                    data={
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": REDIRECT_URI,
                        "code_verifier": pkce.verifier,
                    },
                    headers={"Authorization": basic},
                )
                if exchanged.status_code != 200 or "refresh_token" not in exchanged.json():
                    raise RuntimeError(f"code exchange failed: {exchanged.status_code} {exchanged.text}")
                refresh_tokens.append(exchanged.json()["refresh_token"])
                # A user's token: it carries the user's roles, which the gateway's policy needs (a
                # client-credentials token has none and gets 403 at /mcp).
                user_access_token = exchanged.json()["access_token"]

        return Setup(client["client_id"], basic, resource, refresh_tokens, user_access_token)


# -- 3. the load phases -----------------------------------------------------------------------------------------------


def fixed_request(connection: RawConnection, request: bytes, expect: bytes | None = None) -> Request:
    async def one() -> bool:
        status, body = await connection.send(request)
        return status == 200 and (expect is None or expect in body)

    return one


class RefreshChain:
    """One rotation chain: each call presents the current refresh token and keeps the successor it gets back."""

    def __init__(self, connection: RawConnection, host: str, basic: str, first_token: str) -> None:
        self.connection, self.host, self.token = connection, host, first_token
        self.headers = {"Authorization": basic, "Content-Type": "application/x-www-form-urlencoded"}

    async def __call__(self) -> bool:
        body = f"grant_type=refresh_token&refresh_token={quote(self.token, safe='')}".encode()
        status, answer = await self.connection.send(http_request("POST", "/token", self.host, self.headers, body))
        if status != 200:
            # Rotation: without the successor this chain cannot go on.
            raise StopWorker(f"refresh failed ({status}): {answer[:200]!r}")
        self.token = json.loads(answer)["refresh_token"]
        return True


@dataclass
class Load:
    results: list[PhaseResult]
    single_chain: RefreshChain  # its token is current: the in-process breakdown continues this chain
    profile: ProfileSummary | None


async def run_load(gateway: Gateway, setup: Setup, args: argparse.Namespace, budget: Budget) -> Load:
    host = f"127.0.0.1:{gateway.port}"
    connections = [RawConnection("127.0.0.1", gateway.port) for _ in range(args.concurrency)]

    def phase(name: str, workers: list[Request], *, short: bool = False) -> Awaitable[PhaseResult]:
        return run_phase(
            name,
            workers,
            gateway=gateway,
            max_requests=budget.requests,
            max_seconds=budget.seconds / 2 if short else budget.seconds,
            warmup=budget.warmup,
            warmup_seconds=budget.warmup_seconds,
            measure_db=args.database_url is not None,
        )

    results = []
    healthz = http_request("GET", "/healthz", host)
    workers = [fixed_request(c, healthz, b'"ok"') for c in connections]
    results.append(await phase("healthz (direct path)", workers, short=True))

    form = urlencode({"grant_type": "client_credentials", "resource": setup.resource}).encode()
    form_headers = {"Authorization": setup.basic, "Content-Type": "application/x-www-form-urlencoded"}
    client_credentials = http_request("POST", "/token", host, form_headers, form)
    workers = [fixed_request(c, client_credentials, b'"access_token"') for c in connections]
    results.append(await phase("client_credentials", workers))

    chains = [
        RefreshChain(c, host, setup.basic, token)
        for c, token in zip(connections, setup.refresh_tokens[:-1], strict=True)
    ]
    results.append(await phase(f"refresh_token ({len(chains)} chains)", list(chains)))
    single = RefreshChain(connections[0], host, setup.basic, setup.refresh_tokens[-1])
    results.append(await phase("refresh_token (1 chain)", [single], short=True))

    ping_headers = {
        "Authorization": f"Bearer {setup.access_token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    ping = http_request("POST", "/mcp/demo", host, ping_headers, PING)
    workers = [fixed_request(c, ping, b'"result"') for c in connections]
    results.append(await phase("MCP ping, bearer token", workers, short=True))

    profile = await profile_refresh(gateway, chains, args) if args.profile else None
    for connection in connections:
        await connection.close()
    return Load(results, single, profile)


# -- 4. where a refresh's CPU goes: its parts alone, in process ------------------------------------------------------

# The same SQL the store runs, written out for the bare drivers: the floor any implementation on this schema pays.
CLIENT_SQL = "SELECT * FROM clients WHERE tenant_id = {p1} AND client_id = {p2}"
ROTATE_SQL = (
    "UPDATE refresh_tokens SET rotated_at = {p1} WHERE token_hash = {p2} AND rotated_at IS NULL",
    "SELECT r.scope, r.expires_at, g.id FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id"
    " WHERE r.token_hash = {p1} AND g.tenant_id = {p2}",
    "INSERT INTO refresh_tokens (token_hash, grant_id, scope, created_at, expires_at)"
    " VALUES ({p1}, {p2}, {p3}, {p4}, {p5})",
)


@dataclass
class Breakdown:
    authenticate_us: float  # ClientAuthenticator.authenticate (Basic): client row from the store, metadata, secret
    exchange_us: float  # the refresh grant: refresh_token.exchange (rotation + access token + successor)
    rotation_us: float  # of which GrantRepository.rotate_refresh_token
    bare_client_lookup_us: float | None  # the client SELECT on the bare driver
    bare_rotation_us: float | None  # the rotation's three statements in one transaction on the bare driver
    driver: str


class _Meter:
    """CPU of this process (every thread, so aiosqlite's worker threads too) per call, best of 3 rounds."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    async def best_of_3(self, call: Callable[[], Any]) -> float:
        async def once() -> None:
            outcome = call()
            if asyncio.iscoroutine(outcome):
                await outcome

        for _ in range(max(10, self.calls // 10)):
            await once()
        rounds = []
        for _ in range(3):
            started = time.process_time()
            for _ in range(self.calls):
                await once()
            rounds.append(1e6 * (time.process_time() - started) / self.calls)
        return min(rounds)


async def measure_breakdown(gateway: Gateway, setup: Setup, chain: RefreshChain, calls: int) -> Breakdown:
    """Runs after the gateway stopped, on its database and with its state, continuing one refresh chain."""
    from chamberlain.crypto.tokens import digest, new_secret
    from chamberlain.demo.server import DemoHandler
    from chamberlain.gateway.asgi_upstream import AsgiUpstream
    from chamberlain.oauth.grants import refresh_token
    from chamberlain.settings import load_settings
    from chamberlain.state import open_state

    settings = load_settings(data_dir=gateway.data_dir, overrides={"database_url": gateway.database_url}, environ={})
    url, tenant = settings.effective_database_url, settings.tenant
    meter = _Meter(calls)
    token = {"current": chain.token}
    # The gateway's own state, built as `chamberlain serve` builds it (its 1 s background refresh included).
    shared = await open_state(settings, AsgiUpstream(DemoHandler()))
    state = shared.default_tenant
    form = {"grant_type": "refresh_token", "refresh_token": "presented"}
    client = await state.client_authenticator.authenticate(form, setup.basic)

    async def authenticate() -> None:
        await state.client_authenticator.authenticate(form, setup.basic)

    async def exchange() -> None:
        issued = await refresh_token.exchange(state, client, {**form, "refresh_token": token["current"]})
        assert issued.refresh_token is not None
        token["current"] = issued.refresh_token.value

    async def rotate() -> None:
        successor = new_secret()
        rotation = await state.grants.rotate_refresh_token(digest(token["current"]), digest(successor), lambda _: None)
        assert rotation.grant is not None
        assert not rotation.reused
        assert not rotation.expired
        token["current"] = successor

    try:
        authenticate_us = await meter.best_of_3(authenticate)
        exchange_us = await meter.best_of_3(exchange)
        rotation_us = await meter.best_of_3(rotate)
    finally:
        await shared.close()

    bare_lookup = bare_rotation = None
    driver = "sqlite3" if url.startswith("sqlite") else "asyncpg"
    try:
        floor = _sqlite_floor if driver == "sqlite3" else _asyncpg_floor
        bare_lookup, bare_rotation = await floor(url, tenant, client.client_id, token, meter)
    except Exception as problem:  # the hand-written SQL follows the schema; say so if the schema moved on
        print(f"  (bare-driver floor skipped: {type(problem).__name__}: {problem})", file=sys.stderr)
    return Breakdown(authenticate_us, exchange_us, rotation_us, bare_lookup, bare_rotation, driver)


async def _sqlite_floor(
    url: str, tenant: str, client_id: str, token: dict[str, str], meter: _Meter
) -> tuple[float, float]:
    import sqlite3

    from chamberlain.crypto.tokens import digest, new_secret

    connection = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None, timeout=30)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):  # as the gateway sets them
        connection.execute(f"PRAGMA {pragma}")
    marks = {f"p{i}": "?" for i in range(1, 6)}
    lookup_sql = CLIENT_SQL.format(**marks)
    update_sql, select_sql, insert_sql = (sql.format(**marks) for sql in ROTATE_SQL)

    def lookup() -> None:
        assert connection.execute(lookup_sql, (tenant, client_id)).fetchone() is not None

    def rotate() -> None:
        successor, presented, now = new_secret(), digest(token["current"]), time.time()
        connection.execute("BEGIN IMMEDIATE")
        claimed = connection.execute(update_sql, (now, presented)).rowcount
        row = connection.execute(select_sql, (presented, tenant)).fetchone()
        assert claimed == 1
        assert row is not None
        connection.execute(insert_sql, (digest(successor), row[2], row[0], now, row[1]))
        connection.execute("COMMIT")
        token["current"] = successor

    try:
        return await meter.best_of_3(lookup), await meter.best_of_3(rotate)
    finally:
        connection.close()


async def _asyncpg_floor(
    url: str, tenant: str, client_id: str, token: dict[str, str], meter: _Meter
) -> tuple[float, float]:
    import asyncpg

    from chamberlain.crypto.tokens import digest, new_secret

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    marks = {f"p{i}": f"${i}" for i in range(1, 6)}
    lookup_sql = CLIENT_SQL.format(**marks)
    update_sql, select_sql, insert_sql = (sql.format(**marks) for sql in ROTATE_SQL)

    async def lookup() -> None:
        assert await connection.fetchrow(lookup_sql, tenant, client_id) is not None

    async def rotate() -> None:
        successor, presented, now = new_secret(), digest(token["current"]), time.time()
        async with connection.transaction():
            claimed = await connection.execute(update_sql, now, presented)
            row = await connection.fetchrow(select_sql, presented, tenant)
            assert claimed == "UPDATE 1"
            assert row is not None
            await connection.execute(insert_sql, digest(successor), row["id"], row["scope"], now, row["expires_at"])
        token["current"] = successor

    try:
        return await meter.best_of_3(lookup), await meter.best_of_3(rotate)
    finally:
        await connection.close()


# -- 5. a sampling profile of the refresh_token path (py-spy) ---------------------------------------------------------


@dataclass
class ProfileSummary:
    path: Path
    samples: int
    requests: int
    owners: list[tuple[str, int]]
    hottest: list[tuple[str, int]]


# Each sample goes to the innermost frame (leaf upwards) from one of these packages; frames read
# "Qualified.name (package/module.py:line)". SQLAlchemy's async work runs in greenlets, whose stacks py-spy shows
# without the coroutine that awaits them, so a partition by package is what these samples support.
OWNERS: list[tuple[str, tuple[str, ...]]] = [
    ("joserfc + cryptography (JWT signing)", ("joserfc", "cryptography")),
    ("SQLAlchemy", ("sqlalchemy", "greenlet")),
    ("aiosqlite (hand-offs to its worker threads)", ("aiosqlite",)),
    ("asyncpg", ("asyncpg",)),
    ("h11 + uvicorn (HTTP/1.1)", ("h11", "uvicorn")),
    ("starlette (routing, Request, Response)", ("starlette",)),
    ("chamberlain (its own code)", ("chamberlain",)),
    ("pydantic", ("pydantic", "pydantic_core")),
]
EVENT_LOOP = "asyncio event loop (scheduling, wake-ups)"


def _owner(frames: list[str]) -> str:
    for frame in reversed(frames):
        for label, packages in OWNERS:
            if any(f" ({package}/" in frame for package in packages):
                if label == "SQLAlchemy":
                    return _sqlalchemy_part(frames)
                return label
    return EVENT_LOOP


def _sqlalchemy_part(frames: list[str]) -> str:
    if any(" (sqlalchemy/sql/cache_key.py" in f or " (sqlalchemy/sql/compiler.py" in f for f in frames):
        return "SQLAlchemy: statement cache keys, compilation"
    outermost = next(f for f in frames if " (sqlalchemy/" in f or " (greenlet/" in f)
    if " (sqlalchemy/sql/" in outermost:
        return "SQLAlchemy: building statements (select(), update(), where())"
    return "SQLAlchemy: execution, results, pool, async bridge"


def py_spy_executable() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


def _is_idle(leaf: str) -> bool:
    """py-spy cannot tell idle threads here, so known waits are dropped: epoll, and aiosqlite's queue.get."""
    if leaf.startswith(("EpollSelector.select (", "Condition.wait (", "Queue.get (")) or not leaf.strip():
        return True
    if leaf.startswith("_connection_worker_thread ("):
        path, _, line = leaf[leaf.rfind("(") + 1 : -1].rpartition(":")
        source = linecache.getline(os.path.join(sysconfig.get_paths()["purelib"], path), int(line or 0))
        return ".get(" in source
    return False


async def profile_refresh(gateway: Gateway, chains: list[RefreshChain], args: argparse.Namespace) -> ProfileSummary:
    """An extra refresh phase (the same chains, continued) with py-spy attached. Only the thread holding the GIL is
    sampled (--gil), so samples are Python-level CPU; SQLite's own C code runs without the GIL and is not in them."""
    spy = py_spy_executable()
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    output = gateway.data_dir.parent / "refresh-profile.txt"
    recorder = subprocess.Popen(  # noqa: ASYNC220 - started once, before the phase it watches
        [
            spy, "record", "--pid", str(gateway.pid), "--rate", "1000", "--format", "raw", "--output", str(output),
            "--duration", str(int(args.profile_seconds) + 2), "--gil", "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1.0)  # let py-spy attach
    result = await run_phase(
        "refresh_token (profiled)",
        list(chains),
        gateway=gateway,
        max_requests=10**9,
        max_seconds=args.profile_seconds,
        warmup=0,
        measure_db=False,
    )
    recorder.wait(timeout=60)
    return summarise_profile(output, result.requests)


def summarise_profile(path: Path, requests: int) -> ProfileSummary:
    samples: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            stack, _, weight = line.rpartition(" ")
            if weight.isdigit() and not _is_idle(stack.split(";")[-1]):
                samples[stack] += int(weight)
    owners: Counter[str] = Counter()
    hottest: Counter[str] = Counter()
    for stack, count in samples.items():
        frames = stack.split(";")
        owners[_owner(frames)] += count
        hottest[frames[-1]] += count
    return ProfileSummary(path, sum(samples.values()), requests, owners.most_common(), hottest.most_common(12))


# -- 6. the report ----------------------------------------------------------------------------------------------------


def verdict(result: PhaseResult) -> str:
    cores = os.cpu_count() or 1
    if result.client_utilisation >= 0.85:
        return "CLIENT-BOUND: the load generator is the limit"
    if result.event_loop_utilisation >= 0.85:
        return "gateway-bound (event loop saturated)"
    busy = result.server_utilisation + result.client_utilisation + result.others_cores
    busy += (result.db_cpu or 0.0) / result.wall if result.wall else 0.0
    if busy >= 0.85 * cores:
        return "machine-bound (every core busy)"
    if result.concurrency == 1:
        return "one request at a time (latency-bound by design)"
    return "neither saturated (waits: DB, locks)"


def report(
    load: Load, crypto: TokenCrypto, breakdown: Breakdown | None, idle_ms_per_s: float, args: argparse.Namespace
) -> None:
    results = load.results
    with_db = args.database_url is not None
    headers = ["phase", "conc", "requests", "errors", "wall req/s", "gateway CPU ms/req", "req/s per core"]
    if with_db:
        headers += ["DB CPU ms/req", "req/s per core incl. DB"]
    headers += ["p50 ms", "p99 ms", "vs 500/s per core"]
    rows = []
    for result in results:
        row = [
            result.name,
            str(result.concurrency),
            str(result.requests),
            str(result.errors),
            num(result.wall_rps),
            num(result.server_ms_per_request, 3),
            num(result.rps_per_core),
        ]
        if with_db:
            row += [num(result.db_ms_per_request, 3), num(result.rps_per_core_with_db)]
        is_refresh = result.name.startswith("refresh_token")
        row += [
            num(result.p50, 2),
            num(result.p99, 2),
            f"{result.rps_per_core / REFRESH_TARGET_PER_CORE:.2f}x" if is_refresh else "",
        ]
        rows.append(row)
    print()
    print(table(headers, rows))

    healthz, cc, refresh, single, ping = results[:5]

    print("\nRatios (this run)")
    status = "MEETS" if refresh.rps_per_core >= REFRESH_TARGET_PER_CORE else "MISSES"
    print(
        f"  refresh_token: {num(refresh.rps_per_core)} req/s per core = "
        f"{refresh.rps_per_core / REFRESH_TARGET_PER_CORE:.2f}x the 500/s target ({status}) and "
        f"{refresh.rps_per_core / KEYCLOAK_REFRESH_PER_VCPU:.2f}x Keycloak's 120/s per vCPU "
        "(published sizing, not measured here)"
    )
    if with_db and refresh.rps_per_core_with_db:
        print(
            f"    counting PostgreSQL's CPU as well: {num(refresh.rps_per_core_with_db)} req/s per core "
            f"({refresh.rps_per_core_with_db / REFRESH_TARGET_PER_CORE:.2f}x the target)"
        )
    print(
        f"  client_credentials: {num(cc.rps_per_core)} req/s per core = "
        f"{cc.rps_per_core / KEYCLOAK_CLIENT_CREDENTIALS_PER_VCPU:.2f}x Keycloak's 120/s per vCPU (published; "
        "Keycloak's figure includes a TLS handshake per grant, this is plain HTTP keep-alive on loopback)"
    )
    base = healthz.server_ms_per_request
    print(
        f"  vs the direct path (GET /healthz, {num(base, 3)} ms CPU): refresh_token "
        f"{refresh.server_ms_per_request / base:.1f}x, client_credentials {cc.server_ms_per_request / base:.1f}x, "
        f"MCP ping {ping.server_ms_per_request / base:.1f}x"
    )
    print(
        f"  MCP ping with a bearer token costs {num(ping.server_ms_per_request - base, 3)} ms more than /healthz; "
        f"the token check in it is {crypto.warm_us:.2f} µs (cached), the rest is the MCP SDK's stateless handling"
    )

    if breakdown is not None:
        print("\nWhere a refresh's gateway CPU goes (parts measured alone in process, best of 3; µs per call)")
        measured = 1000 * single.server_ms_per_request
        http_us = 1000 * base
        parts = [
            ("HTTP stack + routing (GET /healthz, under load)", http_us, None),
            ("client authentication: ClientAuthenticator.authenticate", breakdown.authenticate_us,
             breakdown.bare_client_lookup_us),
            ("refresh grant: refresh_token.exchange", breakdown.exchange_us, None),
            ("  of which rotation: GrantRepository.rotate_refresh_token", breakdown.rotation_us,
             breakdown.bare_rotation_us),
            ("  of which the access token: AccessTokenIssuer.issue", crypto.issue_us, crypto.raw_sign_us),
        ]  # fmt: skip
        total = http_us + breakdown.authenticate_us + breakdown.exchange_us
        rows = [
            [name, num(part), f"{100 * part / measured:.0f}%", num(floor, 1), f"{part / floor:.0f}x" if floor else ""]
            for name, part, floor in parts
        ]
        rows.append(["sum (HTTP + authentication + grant)", num(total), f"{100 * total / measured:.0f}%", "", ""])
        rows.append(["measured: refresh_token (1 chain), gateway CPU", num(measured), "100%", "", ""])
        rows.append(["measured minus the parts (form, JSON response, wake-ups)", num(measured - total), "", "", ""])
        floor_label = f"floor µs ({breakdown.driver} / P-256 sign)"
        print(table(["part", "µs/req", "share", floor_label, "vs floor"], rows))
        print(
            f"  floors: the same SQL on the bare {breakdown.driver} driver (the client SELECT; the rotation's "
            "UPDATE + SELECT + INSERT in one transaction) and one cryptography P-256 sign.\n"
            "  The parts run alone in this process after the load, one at a time; the gateway's figure is under load, "
            "so the difference can go either way by a few hundred µs."
        )

    print("\nAccess-token verification and issuing (in process, best of 3 rounds)")
    verify, sign = crypto.raw_verify_us, crypto.raw_sign_us
    rows = [
        ["verify, first sight (full ES256 check)", num(crypto.cold_us, 1), f"{crypto.cold_us / verify:.2f}x"],
        ["verify, seen before (cached)", num(crypto.warm_us, 2), f"{crypto.warm_us / verify:.3f}x"],
        [
            "  of which joserfc jwt.decode",
            num(crypto.joserfc_decode_us, 1),
            f"{crypto.joserfc_decode_us / verify:.2f}x",
        ],
        ["cryptography P-256 verify (the floor)", num(verify, 1), "1.00x"],
        [
            "cryptography Ed25519 verify (comparison)",
            num(crypto.ed25519_verify_us, 1),
            f"{crypto.ed25519_verify_us / verify:.2f}x",
        ],
        ["issue (AccessTokenIssuer.issue)", num(crypto.issue_us, 1), f"{crypto.issue_us / sign:.2f}x sign"],
        ["cryptography P-256 sign (the floor)", num(sign, 1), "1.00x sign"],
    ]
    print(table(["operation", "µs/call", "vs P-256 verify"], rows))
    status = "MEETS" if crypto.cold_us < VERIFY_TARGET_US else "MISSES"
    print(
        f"  target, verification under {VERIFY_TARGET_US:.0f} µs: first sight {crypto.cold_us:.1f} µs ({status}; the "
        f"P-256 verify alone is {crypto.raw_verify_us:.1f} µs here), seen before {crypto.warm_us:.2f} µs "
        f"({'MEETS' if crypto.warm_us < VERIFY_TARGET_US else 'MISSES'})"
    )

    if load.profile is not None:
        print_profile(load.profile)

    print("\nLoad check: cores busy during each phase")
    rows = [
        [
            r.name,
            f"{r.server_utilisation:.2f}",
            f"{r.event_loop_utilisation:.2f}",
            f"{r.client_utilisation:.2f}",
            num(r.client_ms_per_request, 3),
            f"{r.others_cores:.2f}",
            verdict(r),
        ]
        for r in results
    ]
    print(table(["phase", "gateway", "its event loop", "client", "client ms/req", "others", "verdict"], rows))
    busiest = max(r.others_cores for r in results)
    if busiest > 0.25:
        print(
            f"  WARNING: other processes kept up to {busiest:.2f} cores busy during a phase: wall req/s and latency "
            "suffer, and CPU per request rises too (caches, context switches; +20-40% seen here). Rerun on a quiet "
            "machine."
        )
    print(
        f"  the client is a raw asyncio HTTP/1.1 keep-alive client; the gateway's background work (store refresh "
        f"every second) is {idle_ms_per_s:.1f} ms/s, included above.\n"
        "  req/s per core = requests / gateway CPU seconds: it does not depend on which side was the limit; "
        "wall req/s and p50/p99 do."
    )


def print_profile(profile: ProfileSummary) -> None:
    total = profile.samples
    print(
        f"\nProfile: {total} GIL-holding samples at 1 kHz over {profile.requests} refreshes (py-spy --gil; raw "
        f"stacks: {profile.path}, kept with --keep). 1 sample ≈ 1 ms of Python on the GIL; SQLite's C code "
        "releases the GIL and is not in it. py-spy's pauses slow the gateway: these are shares, not benchmark figures."
    )
    if not total:
        return
    per_request = 1000.0 * total / max(profile.requests, 1)  # µs of GIL time per request

    def rows(pairs: list[tuple[str, int]]) -> list[list[str]]:
        return [[name[:96], f"{100 * n / total:.1f}%", num(per_request * n / total)] for name, n in pairs]

    print(table(["where the GIL time goes (innermost known package)", "share", "µs/req"], rows(profile.owners)))
    print(table(["hottest leaf frames", "share", "µs/req"], rows(profile.hottest)))


def server_stack(args: argparse.Namespace) -> str:
    """What uvicorn will run the gateway on: its "auto" choice is uvloop and httptools when they are installed."""
    import importlib.util

    if args.uvicorn_loop or args.uvicorn_http:
        return (
            f"uvicorn --loop {args.uvicorn_loop or 'auto'} --http {args.uvicorn_http or 'auto'} (comparison launcher)"
        )
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"`chamberlain serve` (uvicorn on {loop} + {http})"


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def main() -> None:
    args = parse_args()
    if args.quick:
        args.requests, args.seconds = max(200, args.requests // 5), args.seconds / 5
    budget = Budget(
        requests=args.requests,
        seconds=args.seconds,
        warmup=min(300, args.requests // 10),
        warmup_seconds=0.5 if args.quick else 1.5,
        component_calls=100 if args.quick else 300,
    )
    started = time.monotonic()
    store = f"PostgreSQL ({args.database_url.rsplit('/', 1)[1]})" if args.database_url else "SQLite"
    print(
        f"oauth_bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, store {store}"
        f"{', quick' if args.quick else ''}; each phase at most {budget.requests} requests or {budget.seconds:g} s "
        f"(healthz, 1 chain and ping: {budget.seconds / 2:g} s), {args.concurrency} connections"
    )
    print(f"gateway: {server_stack(args)}; commit {git_commit()}")
    crypto = measure_token_crypto(500 if args.quick else 2000)

    work = Path(tempfile.mkdtemp(prefix="chamberlain-oauth-bench-"))
    try:
        with postgres_database(args.database_url) as database_url:
            gateway = Gateway(
                work / "data",
                database_url,
                uvicorn_loop=args.uvicorn_loop,
                uvicorn_http=args.uvicorn_http,
                extra_pythonpath=args.extra_pythonpath,
            )
            gateway.init()
            gateway.add_user(USER, USER_PASSWORD)
            gateway.start()
            try:
                setup = asyncio.run(set_up(gateway.base_url, args.concurrency + 1))
                idle = idle_cpu_rate(gateway, 1.0 if args.quick else 2.0)
                load = asyncio.run(run_load(gateway, setup, args, budget))
            finally:
                gateway.stop()
            breakdown = asyncio.run(measure_breakdown(gateway, setup, load.single_chain, budget.component_calls))
            report(load, crypto, breakdown, idle, args)
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
