"""What the two proxy benches share: bench/mcp_proxy_bench.py (MCP, IBM ContextForge as the peer) and
bench/llm_proxy_bench.py (Anthropic Messages API, LiteLLM as the peer).

Both measure three targets in front of one upstream, in this order: the upstream called directly, Chamberlain in front
of it, then a peer gateway in front of it. Each target is a server process of its own, started here, whose CPU and
memory are read for its whole process tree (a gateway may fork helpers); each level is a number of keep-alive clients
sending one prepared request after another. What differs between the benches (the upstream, the request, what a
complete answer looks like, the peer, the report's wording and targets) stays in each bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
from bench._common import (
    REPO,
    Gateway,
    PhaseResult,
    RawConnection,
    Request,
    num,
    process_cpu_seconds,
    run_phase,
    thread_cpu_seconds,
)
from tests.support.browser import Browser
from tests.support.oauth import Pkce, authorization_url, exchange_code, redirect_params, register

# The Chamberlain user whose access token every Chamberlain target is called with.
USER, USER_PASSWORD = "bench", "bench password, long enough"
REQUEST_TIMEOUT = 20.0  # seconds; a call still unanswered then is an error (ContextForge's DB pool waits 30 s)


def parse_args(description: str, *, measured_per: str, peer: str, peer_name: str) -> argparse.Namespace:
    """The options both benches take; `--no-<peer>` skips the peer gateway (as `args.no_<peer>`)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help=f"measured seconds per {measured_per} [5]")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="warm-up before each level [1]")
    parser.add_argument("--quick", action="store_true", help="2 s per level, 0.5 s warm-up")
    parser.add_argument(f"--no-{peer}", action="store_true", help=f"skip {peer_name}")
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


# -- Chamberlain as a target ------------------------------------------------------------------------------------------


def prepare_chamberlain(work: Path, config: dict[str, object]) -> Gateway:
    """A Chamberlain data dir with `config` as its chamberlain.yaml and the bench user as an admin, not yet serving.

    Split from `serve_chamberlain` so that a bench can put more into the data dir first (the LLM bench: an API key).
    """
    gateway = Gateway(work / "chamberlain")
    gateway.data_dir.mkdir()
    (gateway.data_dir / "chamberlain.yaml").write_text(json.dumps(config))
    gateway.init()
    # The built-in admin role reaches every MCP server; the LLM bench's config also grants it the models.
    gateway.add_user(USER, USER_PASSWORD, role="admin")
    return gateway


def serve_chamberlain(gateway: Gateway, resource_path: str, *, client_name: str) -> tuple[Server, str]:
    """Starts the gateway; returns it as a measured `Server` and the bench user's access token for `resource_path`."""
    gateway.start()
    assert gateway.process is not None
    token = asyncio.run(user_access_token(gateway.base_url, gateway.base_url + resource_path, client_name))
    return Server("chamberlain", gateway.process), token


async def user_access_token(base_url: str, resource: str, client_name: str) -> str:
    """The bench user's access token for `resource`: sign-in and consent, then the code exchange (PKCE)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        client = await register(http, client_name=client_name)
        pkce = Pkce.new()
        async with Browser(base_url) as browser:
            url = authorization_url(client["client_id"], resource, pkce)
            redirect = await browser.authorize(url, username=USER, password=USER_PASSWORD)
        exchanged = await exchange_code(http, client["client_id"], redirect_params(redirect)["code"], pkce.verifier)
        if exchanged.status_code != 200:
            raise RuntimeError(f"code exchange failed: {exchanged.status_code} {exchanged.text}")
        return str(exchanged.json()["access_token"])


# -- load -------------------------------------------------------------------------------------------------------------


class ProxyTarget(Protocol):
    """What the shared code needs of a bench's target: the server to measure and the port to call."""

    @property
    def server(self) -> Server: ...

    @property
    def port(self) -> int: ...


def checked_call(
    connection: RawConnection, request: bytes, complete: bytes, failures: list[str], *, failure_prefix: str = ""
) -> Request:
    """One call of `request`; it succeeds on a 200 whose body contains `complete`. Anything else, or no answer within
    REQUEST_TIMEOUT, is an error, and the first few go to `failures` (after `failure_prefix`) for the report."""

    async def one() -> bool:
        try:
            status, body = await asyncio.wait_for(connection.send(request), REQUEST_TIMEOUT)
        except TimeoutError:
            await connection.close()  # the late answer must not be read as the next call's
            status, body = 0, f"no answer within {REQUEST_TIMEOUT:g} s".encode()
        if status == 200 and complete in body:
            return True
        if len(failures) < 3:
            failures.append(f"{failure_prefix}{status or 'timeout'}: {body[:200].decode(errors='replace')}")
        return False

    return one


async def load_level(
    target: ProxyTarget,
    clients: int,
    request: bytes,
    args: argparse.Namespace,
    *,
    name: str,
    complete: bytes,
    failures: list[str],
    failure_prefix: str = "",
    max_requests: int,
) -> PhaseResult:
    """One level: `clients` keep-alive connections, each sending `request` one after another (see `checked_call`),
    warmed up for `args.warmup_seconds`, then measured for `args.seconds` or `max_requests`, whichever ends first.

    `max_requests` also bounds the warm-up, and a level gives up after max(10, max_requests // 100) failed calls."""
    connections = [RawConnection("127.0.0.1", target.port) for _ in range(clients)]
    workers = [
        checked_call(connection, request, complete, failures, failure_prefix=failure_prefix)
        for connection in connections
    ]
    phase = await run_phase(
        name,
        workers,
        gateway=target.server,
        max_requests=max_requests,
        max_seconds=args.seconds,
        warmup=max_requests,
        warmup_seconds=args.warmup_seconds,
        measure_db=False,
    )
    for connection in connections:
        await connection.close()
    return phase


# -- report -----------------------------------------------------------------------------------------------------------

# The columns of both benches' main table, one row per target and level (`phase_row`).
PHASE_HEADERS = ["target", "clients", "req/s", "p50 ms", "p99 ms", "added p50", "server CPU ms/req", "others",
                 "client ms/req", "errors"]  # fmt: skip


def phase_row(label: str, clients: int, phase: PhaseResult, direct: PhaseResult | None) -> list[str]:
    """One row under PHASE_HEADERS; `direct` is the same level against the upstream alone (None for those rows)."""
    added = phase.p50 - direct.p50 if direct is not None else None
    return [
        label,
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


def print_failures(label: str, failures: Sequence[str]) -> None:
    for failure in failures:
        print(f"  {label} failed a call with {failure}")


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# -- the run ----------------------------------------------------------------------------------------------------------

TargetT = TypeVar("TargetT", bound=ProxyTarget)
MeasuredT = TypeVar("MeasuredT")


@dataclass
class Run:
    """One bench run: its work directory, its options and the servers it started, stopped at the end come what may."""

    work: Path
    args: argparse.Namespace
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def track(self, server: Server) -> None:
        self.started.append(server.process)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop(process)


def measure_targets(
    run: Run,
    start_upstream: Callable[[Path], TargetT],
    start_chamberlain: Callable[[Path, TargetT], tuple[Gateway, TargetT]],
    start_peer: Callable[[Run, TargetT], TargetT | None],
    measure: Callable[[TargetT, argparse.Namespace], MeasuredT],
) -> Iterator[MeasuredT]:
    """The upstream alone, then Chamberlain in front of it, then the peer in front of it, one after another.

    `start_peer` returns None when the peer is skipped, and otherwise tracks its server with `run.track` itself.
    Chamberlain is stopped as soon as it has been measured, so that a peer is measured with no other gateway running.
    """
    upstream = start_upstream(run.work)
    run.track(upstream.server)
    yield measure(upstream, run.args)

    gateway, chamberlain = start_chamberlain(run.work, upstream)
    try:
        yield measure(chamberlain, run.args)
    finally:
        gateway.stop()

    peer = start_peer(run, upstream)
    if peer is not None:
        yield measure(peer, run.args)


def run_bench(
    name: str,
    args: argparse.Namespace,
    *,
    measured_per: str,
    work_prefix: str,
    measure_each: Callable[[Run], Iterator[MeasuredT]],
    report: Callable[[Sequence[MeasuredT]], None],
) -> None:
    """A bench's main: a work directory of its own, every target measured, every server stopped, then the report."""
    began = time.monotonic()
    print(
        f"{name}: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; per {measured_per} "
        f"{args.warmup_seconds:g} s warm-up, then {args.seconds:g} s measured"
    )
    work = Path(tempfile.mkdtemp(prefix=work_prefix))
    run = Run(work, args)
    try:
        results = list(measure_each(run))
    finally:
        run.stop_all()
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results)
    print(f"\ntotal {time.monotonic() - began:.0f} s")
