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
upstream's CPU shows in "others". Memory, once idle (set up, before any load) and at its peak during the 64-client
level: VmRSS of the main process (what the targets are about) and PSS summed over its process tree (shared pages
counted once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

import httpx
from bench._common import REPO, Gateway, PhaseResult, free_port, http_request, num, table
from bench._proxy_run import (
    PHASE_HEADERS,
    Memory,
    Run,
    Server,
    load_level,
    measure_targets,
    parse_args,
    phase_row,
    prepare_chamberlain,
    print_failures,
    process_tree,
    ratio,
    run_bench,
    serve_chamberlain,
    start_server,
    stop,
)

LEVELS = (1, 16, 64)
MEASURED_PER = "target and level"  # what one --seconds measures
SERVER = "bench"  # the upstream's name in Chamberlain's `servers:` and in ContextForge
PROTOCOL_VERSION = "2025-11-25"
CONTEXTFORGE = REPO / "bench" / ".peers" / "contextforge"  # the venv bench/peers/install_contextforge.sh makes
CONTEXTFORGE_ADMIN = "admin@example.com"

# The targets of issue 3, acceptance 5.
CPU_TARGET_MS = 1.0  # gateway CPU per proxied call
ADDED_P50_TARGET_MS = 1.0  # at one client
THROUGHPUT_TARGET = 0.5  # through the gateway / direct, at 16 clients
IDLE_RSS_TARGET_MB = 150.0
LOADED_RSS_TARGET_MB = 300.0


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


def start_chamberlain(work: Path, upstream: Target) -> tuple[Gateway, Target]:
    gateway = prepare_chamberlain(work, {"servers": {SERVER: {"url": f"http://127.0.0.1:{upstream.port}/mcp"}}})
    server, token = serve_chamberlain(gateway, f"/mcp/{SERVER}", client_name="mcp proxy bench")
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


def start_peer(run: Run, upstream: Target) -> Target | None:
    """ContextForge in front of the upstream, unless skipped or not installed."""
    if run.args.no_contextforge:
        return None
    if not (CONTEXTFORGE / "bin" / "mcpgateway").exists():
        print(f"  contextforge: not installed in {CONTEXTFORGE}; run bench/peers/install_contextforge.sh")
        return None
    began = time.monotonic()
    contextforge = start_contextforge(run.work, upstream)
    run.track(contextforge.server)
    print(f"  contextforge: started and set up in {time.monotonic() - began:.0f} s")
    return contextforge


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
        done = asyncio.Event()
        sampler = asyncio.create_task(peak_memory(target.server, done))
        phase = await load_level(
            target,
            clients,
            request,
            args,
            name=target.label,
            complete=b'"isError":false',  # a tool error or a JSON-RPC error is a failed call
            failures=measured.failures,
            max_requests=100_000,  # in practice the deadline ends a level
        )
        done.set()
        measured.levels[clients] = Level(phase, await sampler)
    return measured


def measure(target: Target, args: argparse.Namespace) -> Measured:
    print(f"  {target.label}: {', '.join(map(str, LEVELS))} clients ...", flush=True)
    return asyncio.run(load(target, args))


# -- report -----------------------------------------------------------------------------------------------------------


def report(results: Sequence[Measured]) -> None:
    direct = results[0]
    rows = []
    for result in results:
        for clients, level in result.levels.items():
            alone = direct.levels[clients].phase if result is not direct else None
            rows.append(phase_row(result.target.label, clients, level.phase, alone))
    print("\ntools/call, plain JSON-RPC over keep-alive loopback connections")
    print("(server CPU: the measured process tree per request, the upstream itself for the direct rows;")
    print(" others: cores used by everything else, i.e. the upstream behind a gateway; client: this load generator)\n")
    print(table(PHASE_HEADERS, rows))

    for result in results:
        print_failures(result.target.label, result.failures)
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


def measure_each(run: Run) -> Iterator[Measured]:
    return measure_targets(run, start_upstream, start_chamberlain, start_peer, measure)


def main() -> None:
    args = parse_args(__doc__ or "", measured_per=MEASURED_PER, peer="contextforge", peer_name="ContextForge")
    run_bench(
        "mcp_proxy_bench",
        args,
        measured_per=MEASURED_PER,
        work_prefix="chamberlain-mcp-bench-",
        measure_each=measure_each,
        report=report,
    )


if __name__ == "__main__":
    main()
