"""The audit log's cost, measured in process on this machine: the request path, the writer, and verification.

    .venv/bin/python bench/audit_bench.py                  # SQLite, then PostgreSQL if 127.0.0.1:5432 answers
    .venv/bin/python bench/audit_bench.py --quick          # 20,000 events instead of 200,000
    .venv/bin/python bench/audit_bench.py --events 500000 --no-postgres
    .venv/bin/python bench/audit_bench.py --profile        # also cProfile the writer and verification (top 25)

What it does:
  1. The request path: CPU µs per `AuditLog.record(event)` on events built beforehand, and per event built and
     recorded (an `AuditEvent` made the way the sign-in emitter makes it).
  2. The writer: N events (default 200,000) queued and written by `AuditLog`'s background task in group commits
     of the default batch size, each linked into the tenant's hash chain, with personal fields encrypted per data
     subject (AES-GCM, 1,000 subjects). Events/s of wall time and of this process's CPU; on PostgreSQL the
     server's CPU is reported beside it. Then a signed checkpoint (the Merkle root) covers them all.
  3. Verification: `verify_tenant` (read the rows, check chain, tree and checkpoint), run twice (the first read
     of fresh rows costs PostgreSQL more: it sets their hint bits), and `verify_records` alone on rows in memory.
  4. The floor: the same rows inserted by the bare driver (sqlite3 / asyncpg `executemany`), in transactions of
     the same size, into a second fresh store. The writer cannot be faster than that.

Stores: SQLite in a temporary file, migrated as `chamberlain init` does; PostgreSQL in a throwaway database
created through the `test` database on 127.0.0.1:5432 and dropped afterwards (skipped with a note if unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import pstats
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

from bench._common import fresh_postgres_url, num, postgres_cpu_seconds, postgres_database, table

from chamberlain.audit.checkpoints import AuditSigner, Checkpointer, load_checkpoints, public_keys
from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.audit.settings import AuditSettings
from chamberlain.audit.verify import Row, stored_rows, verify_records, verify_tenant
from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import create_database, migrate

APPEND_TARGET = 50_000.0  # events/s appended
REQUEST_PATH_TARGET_US = 20.0  # µs added to a request
VERIFY_TARGET = 500_000.0  # events/s verified
TENANT = "bench"
SUBJECTS = 1000
# The floor's SQL, for sqlite3 ("?") and asyncpg ("$n"): every column of audit_events, in order.
SQLITE_SELECT = (
    "SELECT tenant_id, seq, event_id, time, action, outcome, classification, subject, body, prev_hash, hash"
    " FROM audit_events WHERE tenant_id = ? ORDER BY seq"
)
SQLITE_INSERT = (
    "INSERT INTO audit_events (tenant_id, seq, event_id, time, action, outcome, classification, subject, body,"
    " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
ASYNCPG_SELECT = SQLITE_SELECT.replace("?", "$1")
ASYNCPG_INSERT = SQLITE_INSERT.split(" VALUES ")[0] + " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events appended per store (default 200,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 events: a smoke run")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--postgres-host", default="127.0.0.1:5432", help="PostgreSQL host:port (user postgres)")
    parser.add_argument("--profile", action="store_true", help="cProfile the writer and verification (top 25)")
    args = parser.parse_args()
    if args.quick:
        args.events = 20_000
    if args.events < 1000:
        parser.error("--events must be at least 1000")
    return args


# -- events -----------------------------------------------------------------------------------------------------------


def make_event(i: int) -> AuditEvent:
    """A sign-in the way audit/emit.py builds one: a user actor, details, and personal fields for that user."""
    user = f"user-{i % SUBJECTS:04d}"
    return AuditEvent(
        action=Action.SIGN_IN,
        outcome="success",
        tenant=TENANT,
        actor=Actor("user", user),
        target=f"user:{user}",
        request_id=f"req-{i:08x}",
        details={"method": "local", "username_hash": "5f1c9a3e0b7d42a8" * 4},
        personal={"source_ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "username": f"name{i % SUBJECTS}"},
        subject=user,
    )


def cpu_us_per_call(run: Callable[[], int], rounds: int = 5) -> float:
    """The best of a few rounds of thread CPU time, per call; `run` returns how many calls it made."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.thread_time()
        calls = run()
        best = min(best, (time.thread_time() - started) / calls)
    return best * 1e6


@dataclass
class RequestPath:
    construct_us: float
    record_us: float
    construct_and_record_us: float


def measure_request_path(calls: int) -> RequestPath:
    """CPU per call on the request path. The log is never started, so nothing is written: `record` only queues."""
    events = [make_event(i) for i in range(calls)]

    def fresh_log() -> AuditLog:
        return AuditLog(create_database("sqlite://"), MasterKey(secrets.token_bytes(32)), AuditSettings())

    def construct() -> int:
        for i in range(calls):
            make_event(i)
        return calls

    def record() -> int:
        log = fresh_log()
        for event in events:
            log.record(event)
        return calls

    def construct_and_record() -> int:
        log = fresh_log()
        for i in range(calls):
            log.record(make_event(i))
        return calls

    return RequestPath(cpu_us_per_call(construct), cpu_us_per_call(record), cpu_us_per_call(construct_and_record))


# -- one store --------------------------------------------------------------------------------------------------------


@dataclass
class StoreResult:
    name: str
    events: int
    append_wall: float = 0.0
    append_cpu: float = 0.0
    append_db_cpu: float | None = None
    checkpoint_wall: float = 0.0
    verify_first_wall: float = 0.0
    verify_wall: float = 0.0
    verify_cpu: float = 0.0  # this process and its verification workers
    read_wall: float = 0.0
    records_wall: float = 0.0
    floor_wall: float = 0.0
    floor_cpu: float = 0.0
    floor_db_cpu: float | None = None
    notes: list[str] = field(default_factory=list)


def _cpu_with_children() -> float:
    """This process's CPU and that of its children that have ended (the verification workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@contextlib.contextmanager
def profiled(enabled: bool, title: str) -> Iterator[None]:
    """cProfile the block and print its 25 most expensive functions (by own time) when `enabled`."""
    if not enabled:
        yield
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        print(f"\n-- cProfile: {title} (by own time)")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


async def measure_store(name: str, url: str, floor_url: str, count: int, args: argparse.Namespace) -> StoreResult:
    """Append, checkpoint and verify `count` events in the store at `url`; then the floor, into a second fresh
    store at `floor_url` (so that both start from an empty table)."""
    result = StoreResult(name, count)
    postgres = url.startswith("postgresql")
    database = create_database(url)
    try:
        await migrate(database)
        master_key = MasterKey(secrets.token_bytes(32))
        events = [make_event(i) for i in range(count)]
        log = AuditLog(database, master_key, AuditSettings())
        await log.start()

        # 2. the writer: everything queued at once, then drained in group commits by the log's own task
        gc.collect()
        db_before = postgres_cpu_seconds() if postgres else None
        cpu_before, started = time.process_time(), time.perf_counter()
        with profiled(args.profile, f"appending {count:,} events to {name}"):
            for event in events:
                log.record(event)
            await log.flush(within=3600)
        result.append_wall = time.perf_counter() - started
        result.append_cpu = time.process_time() - cpu_before
        result.append_db_cpu = _difference(db_before, postgres_cpu_seconds() if postgres else None)
        await log.aclose()
        del events

        signer = await AuditSigner.load_or_create(database, master_key)
        started = time.perf_counter()
        checkpoint = await Checkpointer(database, signer).checkpoint(TENANT)
        result.checkpoint_wall = time.perf_counter() - started
        if checkpoint is None or checkpoint.tree_size != count:
            raise RuntimeError("the checkpoint does not cover every event written")
        keys = await public_keys(database)

        # 3. verification: all of it (twice: PostgreSQL's first read of new rows also writes their hint bits), then
        # reading and checking apart
        for attempt in range(2):
            gc.collect()
            cpu_before = _cpu_with_children()
            started = time.perf_counter()
            with profiled(args.profile and attempt == 1, f"verify_tenant over {count:,} events on {name}"):
                verification = await verify_tenant(database, TENANT, keys)
            if attempt == 0:
                result.verify_first_wall = time.perf_counter() - started
            else:
                result.verify_wall = time.perf_counter() - started
                result.verify_cpu = _cpu_with_children() - cpu_before
            if not (verification.ok and verification.records == count):
                raise RuntimeError(f"the log did not verify: {verification}")

        started = time.perf_counter()
        rows: list[Row] = [row async for row in stored_rows(database, TENANT)]
        result.read_wall = time.perf_counter() - started
        checkpoints = await load_checkpoints(database, TENANT)
        gc.collect()
        started = time.perf_counter()
        if not verify_records(TENANT, rows, checkpoints, keys).ok:
            raise RuntimeError("verify_records disagrees with verify_tenant")
        result.records_wall = time.perf_counter() - started
        del rows
    finally:
        await database.dispose()

    # 4. the floor: the same rows through the bare driver, in transactions of the writer's batch size
    floor = create_database(floor_url)
    try:
        await migrate(floor)
    finally:
        await floor.dispose()
    batch = AuditSettings().batch_size
    if postgres:
        result.floor_wall, result.floor_cpu, result.floor_db_cpu = await _asyncpg_floor(url, floor_url, batch)
    else:
        result.floor_wall, result.floor_cpu = _sqlite_floor(url, floor_url, batch)
    return result


def _difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _sqlite_floor(url: str, floor_url: str, batch: int) -> tuple[float, float]:
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as source:
        rows = source.execute(SQLITE_SELECT, (TENANT,)).fetchall()
    with contextlib.closing(sqlite3.connect(floor_url.removeprefix("sqlite:///"), isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # as the store's own connections (store/database.py)
        gc.collect()
        cpu_before, started = time.process_time(), time.perf_counter()
        for start in range(0, len(rows), batch):
            connection.execute("BEGIN")
            connection.executemany(SQLITE_INSERT, rows[start : start + batch])
            connection.execute("COMMIT")
        return time.perf_counter() - started, time.process_time() - cpu_before


async def _asyncpg_floor(url: str, floor_url: str, batch: int) -> tuple[float, float, float | None]:
    import asyncpg

    def plain(url: str) -> str:
        return url.replace("postgresql+asyncpg://", "postgresql://", 1)

    source = await asyncpg.connect(plain(url))
    try:
        rows = [tuple(row) for row in await source.fetch(ASYNCPG_SELECT, TENANT)]
    finally:
        await source.close()
    connection = await asyncpg.connect(plain(floor_url))
    try:
        gc.collect()
        db_before = postgres_cpu_seconds()  # read while the connection's server process lives
        cpu_before, started = time.process_time(), time.perf_counter()
        for start in range(0, len(rows), batch):
            async with connection.transaction():
                await connection.executemany(ASYNCPG_INSERT, rows[start : start + batch])
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
        return wall, cpu, _difference(db_before, postgres_cpu_seconds())
    finally:
        await connection.close()


async def postgres_reachable(host: str) -> str | None:
    """None when the `test` database on `host` answers; else why not."""
    import asyncpg

    try:
        connection = await asyncio.wait_for(asyncpg.connect(f"postgresql://postgres@{host}/test"), 5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as problem:
        return f"{type(problem).__name__}: {problem}"
    await connection.close()
    return None


# -- report -----------------------------------------------------------------------------------------------------------


def met(value: float, target: float, *, below: bool = False) -> str:
    return "met" if (value < target if below else value >= target) else "NOT MET"


def report(path: RequestPath, stores: list[StoreResult]) -> None:
    print("\nRequest path (CPU per call, best of 5 rounds; nothing is written while it runs)")
    print(
        table(
            ["", "µs", "target", ""],
            [
                ["AuditEvent(...) built", num(path.construct_us, 2), "", ""],
                ["AuditLog.record(event) alone", num(path.record_us, 2), "", ""],
                [
                    "built + recorded",
                    num(path.construct_and_record_us, 2),
                    f"< {REQUEST_PATH_TARGET_US:g}",
                    met(path.construct_and_record_us, REQUEST_PATH_TARGET_US, below=True),
                ],
            ],
        )
    )
    if not stores:
        return
    rows: list[list[str]] = []

    def line(label: str, values: list[str], target: str = "", verdicts: list[str] | None = None) -> None:
        rows.append([label, *values, target, " / ".join(verdicts or [])])

    per_second = [store.events / store.append_wall for store in stores]
    line(
        "appended, events/s (wall)",
        [num(value) for value in per_second],
        f">= {APPEND_TARGET:,.0f}",
        [met(value, APPEND_TARGET) for value in per_second],
    )
    line("appended, events/s per core of this process", [num(s.events / s.append_cpu) for s in stores])
    line("  writer CPU, µs/event", [num(1e6 * s.append_cpu / s.events, 1) for s in stores])
    line(
        "  database server CPU, µs/event",
        [num(None if s.append_db_cpu is None else 1e6 * s.append_db_cpu / s.events, 1) for s in stores],
    )
    floor = [store.events / store.floor_wall for store in stores]
    line("floor: bare executemany, events/s (wall)", [num(value) for value in floor])
    line("  floor CPU, µs/event", [num(1e6 * s.floor_cpu / s.events, 1) for s in stores])
    line(
        "  floor database server CPU, µs/event",
        [num(None if s.floor_db_cpu is None else 1e6 * s.floor_db_cpu / s.events, 1) for s in stores],
    )
    line("  writer / floor (wall)", [f"{w / f:.2f}" for w, f in zip(per_second, floor, strict=True)])
    line("signed checkpoint over all, s", [num(s.checkpoint_wall, 2) for s in stores])
    verified = [store.events / store.verify_wall for store in stores]
    line(
        "verify_tenant, events/s (wall)",
        [num(value) for value in verified],
        f">= {VERIFY_TARGET:,.0f}",
        [met(value, VERIFY_TARGET) for value in verified],
    )
    line("  the first time, right after writing", [num(s.events / s.verify_first_wall) for s in stores])
    line("  verifier CPU (with its workers), µs/event", [num(1e6 * s.verify_cpu / s.events, 2) for s in stores])
    # However the work is split, the verifier cannot beat cores / (its CPU per event); on PostgreSQL the server's
    # reads take their share of the same cores on top (not counted: its backends end with the workers' connections).
    ceiling = [(os.cpu_count() or 1) * s.events / s.verify_cpu if s.verify_cpu else None for s in stores]
    line("  ceiling on these cores at that CPU, events/s", [num(value) for value in ceiling])
    line("  stored_rows alone (row by row), events/s", [num(s.events / s.read_wall) for s in stores])
    records = [store.events / store.records_wall for store in stores]
    line(
        "  verify_records alone, events/s",
        [num(value) for value in records],
        f">= {VERIFY_TARGET:,.0f}",
        [met(value, VERIFY_TARGET) for value in records],
    )
    print(f"\nAppend and verify ({stores[0].events:,} events per store; default batch size)")
    print(table(["", *(store.name for store in stores), "target", ""], rows))
    for store in stores:
        for note in store.notes:
            print(f"note ({store.name}): {note}")


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    print(
        f"audit_bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}; "
        f"{args.events:,} events per store, {SUBJECTS} data subjects, personal fields on every event"
    )
    request_path = measure_request_path(min(args.events, 50_000))
    stores: list[StoreResult] = []
    work = Path(tempfile.mkdtemp(prefix="chamberlain-audit-bench-"))
    try:
        sqlite_urls = (f"sqlite:///{work / 'chamberlain.db'}", f"sqlite:///{work / 'floor.db'}")
        stores.append(asyncio.run(measure_store("SQLite", *sqlite_urls, args.events, args)))
        if args.no_postgres:
            pass
        elif (why := asyncio.run(postgres_reachable(args.postgres_host))) is not None:
            print(f"PostgreSQL skipped: {args.postgres_host} did not answer ({why})")
        else:
            with (
                postgres_database(fresh_postgres_url(args.postgres_host)) as url,
                postgres_database(fresh_postgres_url(args.postgres_host)) as floor_url,
            ):
                assert url is not None
                assert floor_url is not None
                stores.append(asyncio.run(measure_store("PostgreSQL", url, floor_url, args.events, args)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(request_path, stores)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
