"""MCP `tools/call` through Chamberlain's /mcp/{server} proxy, against the same upstream called directly and against
IBM ContextForge in front of it, measured on this machine.

    .venv/bin/python bench/mcp_proxy_bench.py                  # about 1.5 minutes
    .venv/bin/python bench/mcp_proxy_bench.py --quick          # 2 s per level, about 50 s
    .venv/bin/python bench/mcp_proxy_bench.py --no-contextforge
    bench/peers/install_contextforge.sh                        # once: ContextForge into bench/.peers/ (Python 3.12)

Three targets serve the same `echo` tool of one upstream: the official MCP Python SDK server (MCPServer, streamable
HTTP, stateless, JSON responses) in its own process:
  - direct: the upstream itself;
  - chamberlain: `chamberlain serve` with the upstream in its YAML `servers:` section, reached with a user's access
    token obtained through the real OAuth flow (sign-in, consent, authorization code with PKCE);
  - contextforge: `mcpgateway` (SQLite, no Redis, auth on) with the upstream registered through its admin API and
    published as a virtual server, reached with a JWT minted by its own CLI (see bench/peers/contextforge.md).

Every target is loaded at 1, 16 and 64 concurrent clients. Each client is one keep-alive connection sending
sequential plain JSON-RPC POSTs (no SDK client in the loop: it would cost more CPU than the proxy). The load
generator is this process; every server runs in a process of its own, so the CPU the table reports per request is the
measured server's alone: utime + stime of its whole process tree (threads and children) from /proc, divided by the
requests served. For the direct rows that server is the upstream itself; for the others it is the gateway, and the
upstream's CPU shows in "others". Resident memory is the sum of VmRSS over the same process tree, once idle (set up,
before any load) and at its peak during the 64-client level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

import httpx
from bench._common import (
    REPO,
    Gateway,
    PhaseResult,
    RawConnection,
    Request,
    free_port,
    http_request,
    num,
    process_cpu_seconds,
    run_phase,
    table,
    thread_cpu_seconds,
)
from tests.support.browser import Browser
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register

LEVELS = (1, 16, 64)
SERVER = "bench"  # the upstream's name in Chamberlain's `servers:` and in ContextForge
USER, USER_PASSWORD = "bench", "bench password, long enough"
PROTOCOL_VERSION = "2025-11-25"
CONTEXTFORGE = REPO / "bench" / ".peers" / "contextforge"  # the venv bench/peers/install_contextforge.sh makes
CONTEXTFORGE_ADMIN = "admin@example.com"

# The targets of issue 3, acceptance 5.
CPU_TARGET_MS = 1.0  # gateway CPU per proxied call
ADDED_P50_TARGET_MS = 1.0  # at one client
THROUGHPUT_TARGET = 0.5  # through the gateway / direct, at 16 clients
IDLE_RSS_TARGET_MB = 150.0
LOADED_RSS_TARGET_MB = 300.0
REQUEST_TIMEOUT = 20.0  # seconds; a call still unanswered then is an error (ContextForge's DB pool waits 30 s)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per target and level [5]")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="warm-up before each level [1]")
    parser.add_argument("--quick", action="store_true", help="2 s per level, 0.5 s warm-up")
    parser.add_argument("--no-contextforge", action="store_true", help="skip ContextForge")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup_seconds = 2.0, 0.5
    return args


# -- processes: the measured server's whole tree ----------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants (ContextForge forks a sandbox pool; Chamberlain may run stdio upstreams)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def memory_kib(pid: int, path: str, key: bytes) -> int:
    """One `Key:   N kB` line of /proc/<pid>/status or smaps_rollup; 0 when absent (a zombie has none)."""
    with open(f"/proc/{pid}/{path}", "rb") as lines:
        for line in lines:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Memory:
    rss_mb: float  # VmRSS of the server's main process: the figure the targets are about
    tree_pss_mb: float  # proportional set size summed over its tree: forked helpers' shared pages counted once


@dataclass
class Server:
    """A server process the bench started, with what `run_phase` reads from a gateway: CPU of the whole tree."""

    label: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError, ValueError, IndexError):  # exited between the listing and the read
                total += process_cpu_seconds(pid)
        return total

    def event_loop_cpu_seconds(self) -> float:
        return thread_cpu_seconds(self.pid, self.pid)

    def memory(self, tree: Sequence[int] | None = None) -> Memory:
        pss = 0
        for pid in tree or process_tree(self.pid):
            with contextlib.suppress(OSError, ValueError):
                pss += memory_kib(pid, "smaps_rollup", b"Pss:")
        return Memory(memory_kib(self.pid, "status", b"VmRSS:") / 1024, pss / 1024)


def start_server(
    label: str, command: Sequence[str], port: int, log: Path, *, env: dict[str, str] | None = None, cwd: Path = REPO
) -> Server:
    """Starts `command` with its output in `log` and returns once it accepts connections on `port`."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            list(command), stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    deadline = time.monotonic() + 180  # ContextForge migrates its database before it listens
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited early; see {log}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return Server(label, process)
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"{label} did not start listening in time; see {log}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group (its forked helpers too), SIGKILL if it does not go."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# -- the three targets ------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where `tools/call` goes and what it names: the same upstream tool behind each door."""

    label: str
    server: Server
    port: int
    path: str
    tool: str
    token: str | None = None

    def request(self) -> bytes:
        arguments = {"text": "hello through the bench"}
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": self.tool, "arguments": arguments},
        }
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
        }
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return http_request("POST", self.path, f"127.0.0.1:{self.port}", headers, json.dumps(body).encode())


def start_upstream(work: Path) -> Target:
    port = free_port()
    command = [sys.executable, "-m", "tests.support.upstream_server", "--http", "--port", str(port)]
    server = start_server("upstream", [*command, "--stateless", "--json-response"], port, work / "upstream.log")
    return Target("direct (SDK upstream)", server, port, "/mcp", "echo")


async def user_access_token(base_url: str, resource: str) -> str:
    """The bench user's access token for `resource`: sign-in and consent, then the code exchange (PKCE)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        client = await register(http, client_name="mcp proxy bench")
        pkce = Pkce.new()
        async with Browser(base_url) as browser:
            url = authorization_url(client["client_id"], resource, pkce)
            redirect = await browser.authorize(url, username=USER, password=USER_PASSWORD)
        exchanged = await exchange_code(http, client["client_id"], redirect_params(redirect)["code"], pkce.verifier)
        if exchanged.status_code != 200:
            raise RuntimeError(f"code exchange failed: {exchanged.status_code} {exchanged.text}")
        return str(exchanged.json()["access_token"])


def start_chamberlain(work: Path, upstream: Target) -> tuple[Gateway, Target]:
    gateway = Gateway(work / "chamberlain")
    gateway.data_dir.mkdir()
    upstream_url = f"http://127.0.0.1:{upstream.port}/mcp"
    (gateway.data_dir / "chamberlain.yaml").write_text(json.dumps({"servers": {SERVER: {"url": upstream_url}}}))
    gateway.init()
    gateway.add_user(USER, USER_PASSWORD, role="admin")  # the built-in admin role reaches every server
    gateway.start()
    assert gateway.process is not None
    token = asyncio.run(user_access_token(gateway.base_url, f"{gateway.base_url}/mcp/{SERVER}"))
    server = Server("chamberlain", gateway.process)
    return gateway, Target("chamberlain", server, gateway.port, f"/mcp/{SERVER}", "echo", token)


def contextforge_environment(work: Path) -> dict[str, str]:
    """ContextForge's settings for one headless, single-process run: SQLite, no Redis, authentication on."""
    inherited = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return {
        **inherited,
        # Fresh random secrets per run: it refuses short, weak or low-entropy ones.
        "JWT_SECRET_KEY": secrets.token_urlsafe(32),
        "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(32),
        "PLATFORM_ADMIN_EMAIL": CONTEXTFORGE_ADMIN,
        "PLATFORM_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "DEFAULT_USER_PASSWORD": secrets.token_urlsafe(16),
        "DATABASE_URL": f"sqlite:///{work / 'contextforge.db'}",
        "CACHE_TYPE": "memory",  # one process: its in-memory cache, no Redis
        "SSRF_ALLOW_LOCALHOST": "true",  # the upstream is on loopback, which it blocks by default
        "RATE_LIMITING_ENABLED": "false",  # its default limit (100 tool calls a minute) would be the whole result
        # Each call in flight holds a database connection; on SQLite its pool is capped at 50 (+10 overflow by
        # default), and 64 clients then time out after 30 s waiting for one. A deployment sized for 64 raises it.
        "DB_MAX_OVERFLOW": "80",
        "LOG_LEVEL": "ERROR",
    }


def start_contextforge(work: Path, upstream: Target) -> Target:
    env = contextforge_environment(work)
    port = free_port()
    command = [str(CONTEXTFORGE / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)]
    server = start_server("contextforge", command, port, work / "contextforge.log", env=env, cwd=work)
    try:
        minted = subprocess.run(
            [
                *(str(CONTEXTFORGE / "bin" / "python"), "-m", "mcpgateway.utils.create_jwt_token"),
                *("--username", CONTEXTFORGE_ADMIN, "--admin", "--exp", "60"),
            ],
            capture_output=True,
            env=env,
            cwd=work,
            timeout=60,
            check=True,
        )
        token = minted.stdout.decode().splitlines()[0].strip()
        path = asyncio.run(publish_on_contextforge(f"http://127.0.0.1:{port}", token, upstream))
    except BaseException:
        stop(server.process)
        raise
    return Target("contextforge", server, port, path, f"{SERVER}-echo", token)


async def publish_on_contextforge(base_url: str, token: str, upstream: Target) -> str:
    """Registers the upstream (its tools are discovered then), publishes its echo tool as a virtual server, and
    returns that server's streamable HTTP path."""
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:

        async def call(method: str, path: str, body: object | None = None) -> object:
            response = await http.request(method, path, json=body)
            if response.status_code not in (200, 201):
                raise RuntimeError(f"ContextForge {method} {path}: {response.status_code} {response.text[:300]}")
            return response.json()

        upstream_url = f"http://127.0.0.1:{upstream.port}/mcp"
        await call("POST", "/v1/gateways", {"name": SERVER, "url": upstream_url, "transport": "STREAMABLEHTTP"})
        tools = await call("GET", "/v1/tools")
        assert isinstance(tools, list)
        echo = [tool["id"] for tool in tools if tool["name"] == f"{SERVER}-echo"]
        if not echo:
            raise RuntimeError(f"ContextForge did not discover the echo tool: {[tool['name'] for tool in tools]}")
        created = await call("POST", "/v1/servers", {"server": {"name": SERVER, "associated_tools": echo}})
        assert isinstance(created, dict)
        return f"/servers/{created['id']}/mcp"  # MCP endpoints stay unversioned: /v1/servers/{id}/mcp is a 404


# -- load -------------------------------------------------------------------------------------------------------------


@dataclass
class Level:
    phase: PhaseResult
    peak: Memory


@dataclass
class Measured:
    target: Target
    idle: Memory
    levels: dict[int, Level] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def tool_call(connection: RawConnection, request: bytes, timeout: float, failures: list[str]) -> Request:
    """One `tools/call`; a tool error, a JSON-RPC error or no answer within `timeout` counts as an error, and the
    first few go to `failures` for the report."""

    async def one() -> bool:
        try:
            status, body = await asyncio.wait_for(connection.send(request), timeout)
        except TimeoutError:
            await connection.close()  # the late answer must not be read as the next call's
            status, body = 0, f"no answer within {timeout:g} s".encode()
        if status == 200 and b'"isError":false' in body:
            return True
        if len(failures) < 3:
            failures.append(f"{status or 'timeout'}: {body[:200].decode(errors='replace')}")
        return False

    return one


async def peak_memory(server: Server, done: asyncio.Event) -> Memory:
    tree = process_tree(server.pid)  # listed once: scanning /proc often would load the machine under test
    peak = server.memory(tree)
    while not done.is_set():
        await asyncio.sleep(0.5)
        now = server.memory(tree)
        peak = Memory(max(peak.rss_mb, now.rss_mb), max(peak.tree_pss_mb, now.tree_pss_mb))
    return peak


async def load(target: Target, args: argparse.Namespace) -> Measured:
    measured = Measured(target, target.server.memory())
    request = target.request()
    for clients in LEVELS:
        connections = [RawConnection("127.0.0.1", target.port) for _ in range(clients)]
        workers = [tool_call(connection, request, REQUEST_TIMEOUT, measured.failures) for connection in connections]
        done = asyncio.Event()
        sampler = asyncio.create_task(peak_memory(target.server, done))
        phase = await run_phase(
            target.label,
            workers,
            gateway=target.server,
            max_requests=100_000,  # in practice the deadline ends a level
            max_seconds=args.seconds,
            warmup=100_000,
            warmup_seconds=args.warmup_seconds,
            measure_db=False,
        )
        done.set()
        measured.levels[clients] = Level(phase, await sampler)
        for connection in connections:
            await connection.close()
    return measured


def measure(target: Target, args: argparse.Namespace) -> Measured:
    print(f"  {target.label}: {', '.join(map(str, LEVELS))} clients ...", flush=True)
    return asyncio.run(load(target, args))


# -- report -----------------------------------------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def report(results: Sequence[Measured]) -> None:
    direct = results[0]
    rows = []
    for result in results:
        for clients, level in result.levels.items():
            phase = level.phase
            added = phase.p50 - direct.levels[clients].phase.p50 if result is not direct else None
            rows.append(
                [
                    result.target.label,
                    str(clients),
                    num(phase.wall_rps),
                    num(phase.p50, 2),
                    num(phase.p99, 2),
                    num(added, 2),
                    num(phase.server_ms_per_request, 3),
                    num(phase.others_cores, 2),
                    num(phase.client_ms_per_request, 3),
                    str(phase.errors),
                ]
            )
    print("\ntools/call, plain JSON-RPC over keep-alive loopback connections")
    print("(server CPU: the measured process tree per request, the upstream itself for the direct rows;")
    print(" others: cores used by everything else, i.e. the upstream behind a gateway; client: this load generator)\n")
    headers = ["target", "clients", "req/s", "p50 ms", "p99 ms", "added p50", "server CPU ms/req", "others"]
    print(table([*headers, "client ms/req", "errors"], rows))

    for result in results:
        for failure in result.failures:
            print(f"  {result.target.label} failed a call with {failure}")
    noise = max(level.phase.others_cores for level in direct.levels.values())
    if noise > 0.25:
        print(
            f"  WARNING: while the upstream ran alone, other processes kept up to {noise:.2f} cores busy: req/s and "
            "latency suffer and CPU per request rises. Rerun on a quiet machine."
        )

    print()
    most = LEVELS[-1]
    memory = [
        [
            result.target.label,
            num(result.idle.rss_mb, 1),
            num(result.levels[most].peak.rss_mb, 1),
            num(result.idle.tree_pss_mb, 1),
            num(result.levels[most].peak.tree_pss_mb, 1),
        ]
        for result in results
    ]
    headers = ["memory, MB", "RSS idle", f"RSS peak at {most}", "PSS tree idle", f"PSS tree peak at {most}"]
    print(table(headers, memory))
    print("  (RSS: the main process; PSS tree: the process and its children, shared pages counted once)")

    print("\nratios")
    for result in results[1:]:
        for clients in LEVELS:
            through = ratio(result.levels[clients].phase.wall_rps, direct.levels[clients].phase.wall_rps)
            print(f"  {result.target.label} / direct throughput at {clients:>2} clients: {num(through, 2)}")
    by_label = {result.target.label: result for result in results}
    chamberlain, contextforge = by_label.get("chamberlain"), by_label.get("contextforge")
    if chamberlain is not None and contextforge is not None:
        for clients in LEVELS:
            cpu = ratio(
                contextforge.levels[clients].phase.server_ms_per_request,
                chamberlain.levels[clients].phase.server_ms_per_request,
            )
            rps = ratio(contextforge.levels[clients].phase.wall_rps, chamberlain.levels[clients].phase.wall_rps)
            print(
                f"  contextforge / chamberlain at {clients:>2} clients: CPU per request x{num(cpu, 1)}, "
                f"throughput x{num(rps, 3)}"
            )
    if chamberlain is not None:
        print_targets(chamberlain, direct)


def print_targets(chamberlain: Measured, direct: Measured) -> None:
    worst_cpu = max(level.phase.server_ms_per_request for level in chamberlain.levels.values())
    added = chamberlain.levels[1].phase.p50 - direct.levels[1].phase.p50
    through = ratio(chamberlain.levels[16].phase.wall_rps, direct.levels[16].phase.wall_rps) or 0.0
    most = LEVELS[-1]
    idle, loaded = chamberlain.idle.rss_mb, chamberlain.levels[most].peak.rss_mb
    checks = [
        (f"gateway CPU per call < {CPU_TARGET_MS:g} ms, worst level", f"{worst_cpu:.3f} ms", worst_cpu < CPU_TARGET_MS),
        (f"added p50 at 1 client < {ADDED_P50_TARGET_MS:g} ms", f"{added:.2f} ms", added < ADDED_P50_TARGET_MS),
        (f"throughput / direct at 16 clients >= {THROUGHPUT_TARGET:g}", f"{through:.2f}", through >= THROUGHPUT_TARGET),
        (f"RSS idle < {IDLE_RSS_TARGET_MB:g} MB", f"{idle:.1f} MB", idle < IDLE_RSS_TARGET_MB),
        (f"RSS at {most} clients < {LOADED_RSS_TARGET_MB:g} MB", f"{loaded:.1f} MB", loaded < LOADED_RSS_TARGET_MB),
    ]
    print("\ntargets (issue 3, acceptance 5)")
    for target, measured, met in checks:
        print(f"  {target}: {measured}, {'met' if met else 'MISSED'}")


# -- main -------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    work: Path
    args: argparse.Namespace
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def measure_each(self) -> Iterator[Measured]:
        upstream = start_upstream(self.work)
        self.started.append(upstream.server.process)
        yield measure(upstream, self.args)

        gateway, chamberlain = start_chamberlain(self.work, upstream)
        try:
            yield measure(chamberlain, self.args)
        finally:
            gateway.stop()

        if self.args.no_contextforge:
            return
        if not (CONTEXTFORGE / "bin" / "mcpgateway").exists():
            print(f"  contextforge: not installed in {CONTEXTFORGE}; run bench/peers/install_contextforge.sh")
            return
        began = time.monotonic()
        contextforge = start_contextforge(self.work, upstream)
        self.started.append(contextforge.server.process)
        print(f"  contextforge: started and set up in {time.monotonic() - began:.0f} s")
        yield measure(contextforge, self.args)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop(process)


def main() -> None:
    args = parse_args()
    began = time.monotonic()
    print(
        f"mcp_proxy_bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; per target and level "
        f"{args.warmup_seconds:g} s warm-up, then {args.seconds:g} s measured"
    )
    work = Path(tempfile.mkdtemp(prefix="chamberlain-mcp-bench-"))
    run = Run(work, args)
    try:
        results = list(run.measure_each())
    finally:
        run.stop_all()
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
