"""Scale-out on this machine: throughput of 1, 2 and 3 replicas, and how fast a revocation reaches every replica.

    .venv/bin/python bench/scale_bench.py               # needs PostgreSQL at 127.0.0.1:5432 and Redis at :6379
    .venv/bin/python bench/scale_bench.py --quick       # shorter phases, fewer revocations

What it does: a fresh PostgreSQL database (dropped afterwards) is initialised once, then three `chamberlain serve`
processes run on it and on Redis, serving one issuer (replica 0's URL), as replicas behind a load balancer do
(tests/support/replicas.py starts them). One user signs in through the browser pages.

1. Throughput: `tools/call` of the demo server's echo tool through /mcp/demo, with `--connections` keep-alive
   connections spread evenly over the first 1, 2, then 3 replicas (the others idle), each phase after a warm-up.
   The load generator is this process (a minimal asyncio HTTP/1.1 client, bench/_common.py), apart from the
   gateways. Printed: requests/s, p50 and p99 latency, the ratio to 1 replica, the gateways' CPU per request
   (every replica's utime + stime) and the cores other processes kept busy (compare runs only when near zero).
   On a 2-core machine one replica already takes one core and the load generator much of the other, so more
   replicas add little here: the figures say what this machine allows, not a product limit.
2. Revocation reach: `--revocations` times, an access token (a new one per trial, by refresh) is revoked at
   replica 0 (RFC 7009 POST /revoke); replicas 1 and 2 are then called every `--poll-ms` until each refuses it.
   Reported per mode: the time from the revocation's answer to the last replica's refusal (p50, max). Modes:
   "Redis fan-out" (the replicas above) and "store poll only" (the same three restarted without `redis_url`,
   so that only state.py's half-second poll of the revocations feed carries it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

import httpx
from bench._common import (
    PhaseResult,
    RawConnection,
    free_port,
    http_request,
    num,
    process_cpu_seconds,
    run_phase,
    table,
    thread_cpu_seconds,
)
from tests.support.oauth import refresh
from tests.support.redis import REDIS_URL, redis_reachable
from tests.support.replicas import prepare_store, spawned_gateway, user_tokens, write_config
from tests.support.server import postgres_database, postgres_reachable

REPLICAS = 3


@dataclass
class Replicas:
    """The running replicas: base URLs and process ids (for CPU accounting)."""

    base_urls: list[str]
    pids: list[int]
    measured: int = REPLICAS  # how many of them the current phase loads

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids[: self.measured])

    def event_loop_cpu_seconds(self) -> float:
        return sum(thread_cpu_seconds(pid, pid) for pid in self.pids[: self.measured])


@contextlib.contextmanager
def running_replicas(data_dir: Path, ports: list[int]) -> Iterator[Replicas]:
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(spawned_gateway(data_dir, port, data_dir / f"gateway-{port}.log")) for port in ports
        ]
        yield Replicas([f"http://127.0.0.1:{port}" for port in ports], [process.pid for process in processes])


def tools_call(token: str, port: int) -> bytes:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}
    ).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    return http_request("POST", "/mcp/demo", f"127.0.0.1:{port}", headers, body)


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


async def throughput(replicas: Replicas, token: str, count: int, args: argparse.Namespace) -> PhaseResult:
    replicas.measured = count
    connections: list[RawConnection] = []
    workers = []
    for index in range(args.connections):
        port = port_of(replicas.base_urls[index % count])
        connection = RawConnection("127.0.0.1", port)
        connections.append(connection)
        request = tools_call(token, port)

        async def one(connection: RawConnection = connection, request: bytes = request) -> bool:
            status, _ = await connection.send(request)
            return status == 200

        workers.append(one)
    try:
        return await run_phase(
            f"{count} replica{'s' if count > 1 else ''}",
            workers,
            gateway=replicas,
            max_requests=args.requests,
            max_seconds=args.seconds,
            warmup=args.connections * 20,
            measure_db=False,
        )
    finally:
        for connection in connections:
            await connection.close()


async def revocation_reach(replicas: Replicas, issuer: str, args: argparse.Namespace) -> list[float]:
    """Seconds from each revocation's answer at replica 0 to the last other replica refusing the token."""
    tokens = await user_tokens(replicas.base_urls[0], f"{issuer}/mcp/demo")
    client_id, refresh_token = tokens["client_id"], tokens["refresh_token"]
    reached: list[float] = []
    async with httpx.AsyncClient(base_url=replicas.base_urls[0], timeout=30) as http:
        for _ in range(args.revocations):
            renewed = await refresh(http, client_id, refresh_token)
            renewed.raise_for_status()
            refresh_token = renewed.json()["refresh_token"]
            access_token = renewed.json()["access_token"]
            pollers = [RawConnection("127.0.0.1", port_of(url)) for url in replicas.base_urls[1:]]
            requests = [tools_call(access_token, port_of(url)) for url in replicas.base_urls[1:]]
            for poller, request in zip(pollers, requests, strict=True):  # accepted first, and connections open
                status, _ = await poller.send(request)
                assert status == 200, status
            revoked = await http.post(
                "/revoke", data={"token": access_token, "token_type_hint": "access_token", "client_id": client_id}
            )
            answered = time.perf_counter()
            revoked.raise_for_status()

            try:
                times = await asyncio.gather(
                    *(
                        until_refused(poller, request, answered, args.poll_ms / 1000)
                        for poller, request in zip(pollers, requests, strict=True)
                    )
                )
            finally:
                for poller in pollers:
                    await poller.close()
            reached.append(max(times))
            await asyncio.sleep(random.uniform(0.05, 1.05))  # trials fall anywhere in the replicas' poll cycle
    return reached


async def until_refused(poller: RawConnection, request: bytes, answered: float, interval: float) -> float:
    """Seconds from `answered` to this replica's first refusal of the request's token."""
    deadline = answered + 10
    while time.perf_counter() < deadline:
        status, _ = await poller.send(request)
        if status == 401:
            return time.perf_counter() - answered
        await asyncio.sleep(interval)
    raise RuntimeError("a replica still accepted a revoked token after 10 s")


def ms(values: list[float], fraction: float) -> str:
    ordered = sorted(values)
    return num(1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)


def report_throughput(results: list[PhaseResult]) -> None:
    base = results[0].wall_rps
    rows = [
        [
            result.name,
            num(result.wall_rps),
            num(result.wall_rps / base, 2) if base else "-",
            num(result.p50, 2),
            num(result.p99, 2),
            num(result.server_ms_per_request, 3),
            num(result.client_ms_per_request, 3),
            num(result.others_cores, 2),
            str(result.errors),
        ]
        for result in results
    ]
    headers = ["phase", "req/s", "vs 1", "p50 ms", "p99 ms", "gw CPU ms/req", "load ms/req", "others", "errors"]
    print(table(headers, rows))


def report_reach(modes: dict[str, list[float]]) -> None:
    rows = [[name, str(len(values)), ms(values, 0.5), ms(values, 1.0)] for name, values in modes.items()]
    print(table(["revocation carried by", "trials", "p50 ms", "max ms"], rows))
    for name, values in modes.items():
        if values and max(values) > 1.0:
            print(f"  note: {name}: the slowest revocation took over 1 s ({max(values):.3f} s)")


async def measure(replicas: Replicas, issuer: str, args: argparse.Namespace) -> list[PhaseResult]:
    token = (await user_tokens(replicas.base_urls[0], f"{issuer}/mcp/demo"))["access_token"]
    return [await throughput(replicas, token, count, args) for count in range(1, REPLICAS + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter phases and fewer revocations")
    parser.add_argument("--connections", type=int, default=24, help="keep-alive connections in flight")
    parser.add_argument("--seconds", type=float, default=8.0, help="at most this long per throughput phase")
    parser.add_argument("--requests", type=int, default=40_000, help="at most this many requests per phase")
    parser.add_argument("--revocations", type=int, default=20, help="revocations timed per mode")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="interval of the refusal checks")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.revocations = 3.0, 6
    if not postgres_reachable() or not redis_reachable():
        raise SystemExit("scale_bench needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379")

    ports = [free_port() for _ in range(REPLICAS)]
    issuer = f"http://127.0.0.1:{ports[0]}"
    with TemporaryDirectory(prefix="chamberlain-scale-bench-") as work, postgres_database() as database_url:
        data_dir = Path(work)
        config: dict[str, Any] = {"issuer": issuer, "redis_url": REDIS_URL}
        prepare_store(data_dir, database_url, config=config)
        print(f"{REPLICAS} replicas of `chamberlain serve` on PostgreSQL and Redis; {args.connections} connections")
        with running_replicas(data_dir, ports) as replicas:
            results = asyncio.run(measure(replicas, issuer, args))
            print()
            report_throughput(results)
            fanout = asyncio.run(revocation_reach(replicas, issuer, args))
        write_config(data_dir, {"redis_url": None})  # the same replicas, with only the store's poll
        with running_replicas(data_dir, ports) as replicas:
            polled = asyncio.run(revocation_reach(replicas, issuer, args))
        print()
        report_reach({"Redis fan-out": fanout, "store poll only (0.5 s)": polled})


if __name__ == "__main__":
    main()
