"""Shared benchmark plumbing: a real gateway in its own process, CPU accounting, a cheap HTTP/1.1 load client.

The yardstick is the gateway's CPU time per request, so the gateway runs as a separate process (its CPU time is read
from /proc before and after each phase) and the load generator is a minimal keep-alive HTTP/1.1 client on asyncio
streams: a few tens of microseconds per request, so it never competes with the server for the machine.

Everything listens on loopback; every request loop is bounded by a count and a deadline and stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from tests.support.postgres import temporary_database

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES_ADMIN_DATABASE = "test"


# -- CPU accounting ---------------------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (every thread, exited ones included), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """utime + stime of one thread of a process (for the gateway: its main thread runs the event loop)."""
    with open(f"/proc/{pid}/task/{tid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) since boot, from /proc/stat."""
    with open("/proc/stat", "rb") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user time
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def postgres_cpu_seconds() -> float | None:
    """CPU of every local PostgreSQL process (backends, WAL writer, checkpointer); None when none is visible."""
    total, seen = 0.0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        name = raw[raw.find(b"(") + 1 : raw.rfind(b")")]
        if name.startswith((b"postgres", b"postmaster")):
            fields = raw.rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            seen = True
    return total if seen else None


# -- the gateway process ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def chamberlain_executable() -> str:
    beside_python = Path(sys.executable).parent / "chamberlain"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("chamberlain")
    if found is None:
        raise SystemExit("the 'chamberlain' command is not installed; run with the project's .venv/bin/python")
    return found


# Runs the same app `chamberlain serve` runs, with a chosen uvicorn event loop and HTTP parser (for comparisons).
_CUSTOM_LAUNCHER = """
import sys, uvicorn
from pathlib import Path
from typing import Protocol
from chamberlain.app import create_app
from chamberlain.settings import load_settings
data_dir, port, loop, http = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
settings = load_settings(data_dir=data_dir, overrides={"port": port})
uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False,
            server_header=False, proxy_headers=False, loop=loop, http=http)
"""


@dataclass
class Gateway:
    """`chamberlain init` + `chamberlain serve` in a data dir of their own, as a child process."""

    data_dir: Path
    database_url: str | None = None
    uvicorn_loop: str | None = None  # None: exactly `chamberlain serve`
    uvicorn_http: str | None = None
    extra_pythonpath: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _env(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith("CHAMBERLAIN_")}
        if self.database_url:
            env["CHAMBERLAIN_DATABASE_URL"] = self.database_url
        if self.extra_pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.extra_pythonpath, env.get("PYTHONPATH")]))
        return env

    def _cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [chamberlain_executable(), *args, "--data-dir", str(self.data_dir)],
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            env=self._env(),
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"chamberlain {' '.join(args)} failed:\n{done.stdout.decode()}{done.stderr.decode()}")
        return done.stdout.decode()

    def init(self) -> None:
        self._cli("init")

    def add_user(self, name: str, password: str, role: str = "developer") -> None:
        self._cli("users", "add", name, "--role", role, "--password-stdin", stdin=password + "\n")

    def start(self, timeout: float = 30) -> None:
        log = open(self.data_dir / "server.log", "wb")  # noqa: SIM115 - the child keeps it open
        if self.uvicorn_loop is None and self.uvicorn_http is None:
            command = [chamberlain_executable(), "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        else:
            command = [
                sys.executable,
                "-c",
                _CUSTOM_LAUNCHER,
                str(self.data_dir),
                str(self.port),
                self.uvicorn_loop or "auto",
                self.uvicorn_http or "auto",
            ]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._env())
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited early; see {self.data_dir / 'server.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start listening in time")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def event_loop_cpu_seconds(self) -> float:
        """The main thread's CPU: uvicorn's event loop and everything on it (not aiosqlite's worker threads)."""
        return thread_cpu_seconds(self.pid, self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@contextlib.contextmanager
def postgres_database(url: str | None) -> Iterator[str | None]:
    """For a PostgreSQL URL: creates that database (fresh; refuses an existing one) and drops it afterwards.

    The CREATE/DROP go through the `test` database on the same server with the same credentials.
    """
    if url is None or not url.startswith("postgresql"):
        yield url
        return
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or not name.replace("_", "").isalnum():
        raise SystemExit("the PostgreSQL database name must be letters, digits and underscores")
    admin = urlunsplit(("postgresql", parts.netloc, "/" + POSTGRES_ADMIN_DATABASE, "", ""))
    with temporary_database(admin, name):
        yield url


def fresh_postgres_url(host: str = "127.0.0.1:5432", user: str = "postgres") -> str:
    return f"postgresql+asyncpg://{user}@{host}/chamberlain_bench_{secrets.token_hex(4)}"


# -- a minimal HTTP/1.1 keep-alive client -----------------------------------------------------------------------------


def http_request(method: str, path: str, host: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawConnection:
    """One keep-alive connection; `send` writes a prepared request and returns (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self._reader, self._writer

    async def send(self, request: bytes) -> tuple[int, bytes]:
        fresh = self._writer is None
        reader, writer = await self._open()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as closed:
            # uvicorn closes keep-alive connections idle for 5 s; a request that met a closed socket was never
            # read, so sending it again on a new connection is safe (even a refresh token is not consumed).
            if fresh or (isinstance(closed, asyncio.IncompleteReadError) and closed.partial):
                raise
            await self.close()
            return await self.send(request)
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.find(b"\r\n", at + 2)
            body = await reader.readexactly(int(lower[at + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(chunk[:-2] for chunk in chunks)
        else:
            body = await reader.read()
            await self.close()
            return status, body
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


# -- load phases ------------------------------------------------------------------------------------------------------

# One request; returns True on success. A worker that can no longer continue (a broken refresh chain) raises StopWorker.
Request = Callable[[], Awaitable[bool]]


class StopWorker(Exception):
    pass


@dataclass
class PhaseResult:
    name: str
    concurrency: int
    requests: int
    errors: int
    wall: float
    server_cpu: float
    event_loop_cpu: float  # the part of server_cpu spent on the gateway's main (event loop) thread
    client_cpu: float
    db_cpu: float | None
    machine_busy: float  # every process's CPU on the machine during the phase
    latencies: list[float]

    @property
    def others_cores(self) -> float:
        """Cores kept busy by processes other than the gateway, the load generator and PostgreSQL."""
        ours = self.server_cpu + self.client_cpu + (self.db_cpu or 0.0)
        return max(0.0, self.machine_busy - ours) / self.wall if self.wall else 0.0

    @property
    def wall_rps(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    @property
    def server_ms_per_request(self) -> float:
        return 1000 * self.server_cpu / self.requests if self.requests else float("nan")

    @property
    def rps_per_core(self) -> float:
        return self.requests / self.server_cpu if self.server_cpu else float("inf")

    @property
    def db_ms_per_request(self) -> float | None:
        return None if self.db_cpu is None or not self.requests else 1000 * self.db_cpu / self.requests

    @property
    def rps_per_core_with_db(self) -> float | None:
        if self.db_cpu is None:
            return None
        total = self.server_cpu + self.db_cpu
        return self.requests / total if total else float("inf")

    @property
    def client_ms_per_request(self) -> float:
        return 1000 * self.client_cpu / self.requests if self.requests else float("nan")

    @property
    def server_utilisation(self) -> float:
        return self.server_cpu / self.wall if self.wall else 0.0

    @property
    def event_loop_utilisation(self) -> float:
        return self.event_loop_cpu / self.wall if self.wall else 0.0

    @property
    def client_utilisation(self) -> float:
        return self.client_cpu / self.wall if self.wall else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    @property
    def mean_ms(self) -> float:
        return 1000 * statistics.fmean(self.latencies) if self.latencies else float("nan")


async def _drive(workers: Sequence[Request], max_requests: int, deadline: float, latencies: list[float]) -> int:
    remaining = max_requests
    errors = 0

    async def loop(worker: Request) -> None:
        nonlocal remaining, errors
        clock = time.perf_counter
        while remaining > 0 and clock() < deadline:
            remaining -= 1
            started = clock()
            try:
                ok = await worker()
            except StopWorker as stopped:
                errors += 1
                print(f"  a worker stopped: {stopped}", file=sys.stderr)
                return
            latencies.append(clock() - started)
            if not ok:
                errors += 1
                if errors > max(10, max_requests // 100):
                    raise RuntimeError("too many failed requests; aborting the phase")

    await asyncio.gather(*(loop(worker) for worker in workers))
    return errors


class MeasuredProcess(Protocol):
    """A server process whose CPU a phase charges its requests to."""

    def cpu_seconds(self) -> float: ...

    def event_loop_cpu_seconds(self) -> float: ...


async def run_phase(
    name: str,
    workers: Sequence[Request],
    *,
    gateway: MeasuredProcess,
    max_requests: int,
    max_seconds: float,
    warmup: int,
    warmup_seconds: float = 1.0,
    measure_db: bool,
) -> PhaseResult:
    """Warm up (at most `warmup` requests or `warmup_seconds`), then run at most `max_requests` or `max_seconds`,
    with one task per worker (the phase's concurrency)."""
    await _drive(workers, warmup, time.perf_counter() + warmup_seconds, [])
    latencies: list[float] = []
    db_before = postgres_cpu_seconds() if measure_db else None
    server_before, client_before = gateway.cpu_seconds(), time.process_time()
    loop_before = gateway.event_loop_cpu_seconds()
    machine_before = machine_busy_seconds()
    started = time.perf_counter()
    errors = await _drive(workers, max_requests, started + max_seconds, latencies)
    wall = time.perf_counter() - started
    server_cpu, client_cpu = gateway.cpu_seconds() - server_before, time.process_time() - client_before
    machine_busy = machine_busy_seconds() - machine_before
    event_loop_cpu = gateway.event_loop_cpu_seconds() - loop_before
    db_after = postgres_cpu_seconds() if measure_db else None
    db_cpu = db_after - db_before if db_before is not None and db_after is not None else None
    return PhaseResult(
        name,
        len(workers),
        len(latencies),
        errors,
        wall,
        server_cpu,
        event_loop_cpu,
        client_cpu,
        db_cpu,
        machine_busy,
        latencies,
    )


def idle_cpu_rate(gateway: Gateway, seconds: float) -> float:
    """The gateway's background CPU (its 1 s store refresh loop) in ms per second, measured while idle."""
    before = gateway.cpu_seconds()
    time.sleep(seconds)
    return 1000 * (gateway.cpu_seconds() - before) / seconds


# -- output -----------------------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    line = "  ".join("-" * width for width in widths)

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(headers), line, *(fmt(row) for row in rows)])


def num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"
