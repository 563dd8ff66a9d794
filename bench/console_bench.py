"""The admin console's render time with a large store (issue 11 acceptance 3: every page under 200 ms with 100,000
audit events and 10,000 users).

    .venv/bin/python bench/console_bench.py                  # SQLite
    .venv/bin/python bench/console_bench.py --postgres       # a fresh database on postgres@127.0.0.1:5432
    .venv/bin/python bench/console_bench.py --quick          # 1,000 users, 10,000 events, 10 requests a page

What it does:
  1. `chamberlain init` in a temporary data directory, then seeds its store from this process, through the store's
     own code: users through `UserRepository.insert` (one transaction), audit events through `AuditLog` (group
     commits of the real writer, so the hash chain is the one the gateway verifies), 30 days of LLM usage through
     `append_usage`. Events are spread over the last 30 days, oldest first, across actions, outcomes and 500 actors.
  2. `chamberlain serve` as a separate process on a free loopback port; an administrator signs in through the real
     /login form and grants one OAuth client consent (so the client pages have a row to show).
  3. Every console page, one at a time: a few warm-up requests, then N requests in sequence on one keep-alive
     connection with the session cookie. Reported: p50 and p95 of the wall time seen by a minimal HTTP/1.1 client
     (tens of µs of its own), the gateway's CPU per request, and the verdict against the 200 ms target (on p95).
     A page that does not answer 200 is reported with its status, not timed.

The figures are not asserted anywhere: compare runs only on an otherwise idle machine (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

from bench._common import Gateway, RawConnection, fresh_postgres_url, http_request, num, postgres_database, table
from tests.support.browser import Browser
from tests.support.oauth import Pkce, authorization_url, register

from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.audit.settings import AuditSettings
from chamberlain.cost.records import UsageRecord
from chamberlain.cost.usage import TokenUsage
from chamberlain.crypto.master_key import load_master_key
from chamberlain.identity.passwords import hash_password
from chamberlain.settings import load_settings
from chamberlain.store.database import create_database
from chamberlain.store.usage import append_usage, usage_row
from chamberlain.store.users import UserRepository

TARGET_MS = 200.0
ADMIN = "bench-admin"
PASSWORD = "a long enough bench password"
ACTORS = 500
DAYS = 30
USAGE_PER_DAY = 200
MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-6", "claude-haiku-4-5")
TEAMS = ("payments", "platform", "research", None)
ACTIONS = (
    (Action.MCP_REQUEST, "success"),
    (Action.MCP_REQUEST, "success"),
    (Action.MCP_REQUEST, "denied"),
    (Action.LLM_REQUEST, "success"),
    (Action.TOKEN_ISSUED, "success"),
    (Action.SIGN_IN, "success"),
    (Action.SIGN_IN, "failure"),
    (Action.DLP_DETECTION, "success"),
    (Action.CREDENTIAL_READ, "success"),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page")
    parser.add_argument("--quick", action="store_true", help="1,000 users, 10,000 events, 10 requests a page")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--postgres", action="store_true", help="a fresh database on postgres@127.0.0.1:5432")
    store.add_argument("--database-url", help="postgresql+asyncpg://… (created, then dropped) or sqlite+aiosqlite://…")
    args = parser.parse_args()
    if args.quick:
        args.users, args.events, args.requests = 1_000, 10_000, 10
    if args.postgres:
        args.database_url = fresh_postgres_url()
    return args


# -- seeding ----------------------------------------------------------------------------------------------------------


@dataclass
class Seeded:
    user_id: str = ""  # an ordinary user, for the user detail page
    event_id: str = ""  # a recent audit event, for the event detail page
    actor: str = ""  # an actor with events, for the audit filter
    seconds: dict[str, float] = field(default_factory=dict)


def audit_event(i: int, count: int, tenant: str, now: float) -> AuditEvent:
    """The i-th of `count` events, oldest first over the last 30 days (the chain is in time order, as in production)."""
    action, outcome = ACTIONS[i % len(ACTIONS)]
    actor = f"user-{i % ACTORS:04d}"
    return AuditEvent(
        action=action,
        outcome=outcome,  # type: ignore[arg-type]
        tenant=tenant,
        actor=Actor("user", actor),
        target=f"mcp:server-{i % 7}/tools/tool_{i % 13}" if action == Action.MCP_REQUEST else f"user:{actor}",
        reason="not allowed by role" if outcome == "denied" else None,
        request_id=f"req-{i:08x}",
        details={"server": f"server-{i % 7}"},
        personal={"source_ip": f"127.0.{i >> 8 & 255}.{i & 255}"},
        subject=actor,
        time=now - DAYS * 86_400 * (count - i) / count,
    )


async def seed(data_dir: Path, database_url: str | None, users: int, events: int) -> Seeded:
    settings = load_settings(data_dir=data_dir, overrides={"database_url": database_url}, environ={})
    tenant = settings.tenant
    database = create_database(settings.effective_database_url)
    seeded = Seeded(actor="user-0001")
    try:
        repository = UserRepository(database, tenant)
        started = time.perf_counter()
        await repository.add(ADMIN, hash_password(PASSWORD), ("admin",))
        common_hash = hash_password(secrets.token_urlsafe(16))  # one argon2 hash: hashing 10,000 would take minutes
        async with database.begin() as connection:
            for i in range(users):
                user_id = await repository.insert(
                    connection,
                    f"user-{i:05d}@example.com",
                    common_hash,
                    ("developer",),
                    must_change_password=False,
                    disabled=False,
                    created_at=time.time() - i,
                )
                seeded.user_id = seeded.user_id or user_id
        seeded.seconds["users"] = time.perf_counter() - started

        started = time.perf_counter()
        log = AuditLog(database, load_master_key(data_dir), AuditSettings())
        await log.start()
        now = time.time()
        last = None
        for i in range(events):
            last = audit_event(i, events, tenant, now)
            log.record(last)
        await log.flush(within=3600)
        await log.aclose()
        if log.dropped:
            raise RuntimeError(f"the audit log dropped {log.dropped} events")
        seeded.event_id = last.id if last else ""
        seeded.seconds["audit events"] = time.perf_counter() - started

        started = time.perf_counter()
        rows = []
        for day in range(DAYS):
            for n in range(USAGE_PER_DAY):
                at = datetime.fromtimestamp(now - day * 86_400 - n * 60, UTC)
                usage = TokenUsage(1_000 + n, 200 + n, 0, 5_000)
                record = UsageRecord(
                    tenant,
                    f"user-{n % ACTORS:04d}",
                    TEAMS[n % len(TEAMS)],
                    "claude-code",
                    MODELS[n % len(MODELS)],
                    None,
                    usage,
                    Decimal("0.0125") * (1 + n % 5),
                    100.0,
                    at,
                    "proxy",
                )
                rows.append(usage_row(record))
        async with database.begin() as connection:
            await append_usage(connection, rows)
        seeded.seconds["usage records"] = time.perf_counter() - started
    finally:
        await database.dispose()
    return seeded


# -- signing in -------------------------------------------------------------------------------------------------------


async def sign_in_and_consent(base_url: str) -> tuple[dict[str, str], str]:
    """The administrator's session (the real /login form): the headers that present it (the cookie, and the
    User-Agent the session is bound to), and a client they consented to."""
    async with Browser(base_url) as browser:
        response = await browser.submit(await browser.get("/login"), {"username": ADMIN, "password": PASSWORD})
        if response.status_code != 303:
            raise RuntimeError(f"signing in failed with {response.status_code}")
        client_id = str((await register(browser.http, client_name="bench client"))["client_id"])
        url = authorization_url(client_id, f"{base_url}/mcp/demo", Pkce.new())
        redirect = await browser.authorize(url, username=ADMIN, password=PASSWORD)
        if redirect.status_code != 302:
            raise RuntimeError(f"the authorization did not reach the client ({redirect.status_code})")
        cookie = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.http.cookies.jar)
        headers = {"Cookie": cookie, "User-Agent": browser.http.headers["user-agent"], "Accept": "text/html"}
    return headers, client_id


# -- measuring --------------------------------------------------------------------------------------------------------


@dataclass
class PageResult:
    label: str
    path: str
    status: int
    latencies: list[float] = field(default_factory=list)
    cpu_ms: float = float("nan")
    size: int = 0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def pages(seeded: Seeded, client_id: str) -> list[tuple[str, str]]:
    audit_filter = urlencode({"user": seeded.actor, "action": "mcp.request", "outcome": "denied"})
    return [
        ("overview", "/console"),
        ("users", "/console/users"),
        ("users, search", "/console/users?" + urlencode({"q": "user-099"})),
        ("user detail", f"/console/users/{seeded.user_id}"),
        ("groups", "/console/groups"),
        ("clients", "/console/clients"),
        ("client detail", f"/console/clients/{client_id}"),
        ("servers", "/console/servers"),
        ("roles", "/console/roles"),
        ("roles edit", "/console/roles/edit"),
        ("audit", "/console/audit"),
        ("audit, filtered", f"/console/audit?{audit_filter}"),
        # The worst case for a filtered keyset page: nothing matches, so nothing stops the scan early.
        ("audit, no match", "/console/audit?" + urlencode({"action": "budget.alert", "outcome": "failure"})),
        ("audit event", f"/console/audit/{seeded.event_id}"),
        ("cost", "/console/cost"),
        ("vault", "/console/vault"),
        ("dlp", "/console/dlp"),
    ]


_OLDER = re.compile(rb'<a[^>]*href="([^"]+)"[^>]*>\s*Older', re.IGNORECASE)


async def measure(
    gateway: Gateway, session: dict[str, str], targets: list[tuple[str, str]], requests: int
) -> list[PageResult]:
    host = f"127.0.0.1:{gateway.port}"
    connection = RawConnection("127.0.0.1", gateway.port)
    results: list[PageResult] = []
    queue = list(targets)
    try:
        while queue:
            label, path = queue.pop(0)
            request = http_request("GET", path, host, session)
            status, body = await connection.send(request)
            result = PageResult(label, path, status, size=len(body))
            results.append(result)
            if status != 200:
                continue
            if label == "audit" and (older := _OLDER.search(body)):
                # The keyset page behind "Older" costs the same as the first one, or paging is not keyset.
                queue.insert(0, ("audit, older page", older.group(1).decode().replace("&amp;", "&")))
            for _ in range(3):
                await connection.send(request)
            cpu_before = gateway.cpu_seconds()
            for _ in range(requests):
                started = time.perf_counter()
                status, _ = await connection.send(request)
                result.latencies.append(time.perf_counter() - started)
                if status != 200:
                    result.status = status
                    break
            result.cpu_ms = 1000 * (gateway.cpu_seconds() - cpu_before) / max(1, len(result.latencies))
    finally:
        await connection.close()
    return results


def report(results: list[PageResult], seeded: Seeded, args: argparse.Namespace, store: str) -> None:
    print(
        f"\nConsole pages, {args.users:,} users and {args.events:,} audit events in {store}; "
        f"{args.requests} requests a page, one at a time"
    )
    print("Seeding: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in seeded.seconds.items()))
    rows = []
    for result in results:
        if result.status != 200:
            rows.append([result.label, result.path[:60], str(result.status), "-", "-", "-", "-", "not measured"])
            continue
        p95 = result.percentile(0.95)
        verdict = "met" if p95 < TARGET_MS else "MISSED"
        rows.append(
            [
                result.label,
                result.path[:60],
                "200",
                num(result.size / 1024, 1),
                num(result.percentile(0.50), 1),
                num(p95, 1),
                num(result.cpu_ms, 1),
                f"{verdict} ({p95 / TARGET_MS:.0%} of {TARGET_MS:.0f} ms)",
            ]
        )
    print(table(["page", "path", "status", "KiB", "p50 ms", "p95 ms", "CPU ms/req", "target: p95 < 200 ms"], rows))
    missing = [result.label for result in results if result.status != 200]
    if missing:
        print(f"\n{len(missing)} page(s) did not answer 200: {', '.join(missing)}")


def main() -> None:
    args = parse_args()
    store = "PostgreSQL" if args.database_url and args.database_url.startswith("postgresql") else "SQLite"
    with (
        tempfile.TemporaryDirectory(prefix="chamberlain-console-bench-") as directory,
        postgres_database(args.database_url) as url,
    ):
        gateway = Gateway(Path(directory) / "data", url)
        gateway.init()
        seeded = asyncio.run(seed(gateway.data_dir, url, args.users, args.events))
        gateway.start()
        try:
            session, client_id = asyncio.run(sign_in_and_consent(gateway.base_url))
            results = asyncio.run(measure(gateway, session, pages(seeded, client_id), args.requests))
        finally:
            gateway.stop()
    report(results, seeded, args, store)


if __name__ == "__main__":
    main()
