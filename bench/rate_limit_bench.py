"""What a rate limit check costs a request, measured in process: memory, Redis, and a tenant with no limits.

    .venv/bin/python bench/rate_limit_bench.py              # memory, then Redis at 127.0.0.1:6379 if it answers
    .venv/bin/python bench/rate_limit_bench.py --quick      # a fifth of the requests
    .venv/bin/python bench/rate_limit_bench.py --no-redis
    .venv/bin/python bench/rate_limit_bench.py --redis-url redis://127.0.0.1:6379/0

What it does: `RateLimiter.admit` is called by `--workers` coroutines at once (default 16, as a busy gateway's
concurrent requests), each request by one of 1,000 users through one of 10 clients, every one admitted (the limits
are far above the load), and this process's CPU time (user + system, `time.process_time`) is divided by the number
of requests. Every request also yields to the event loop once (`asyncio.sleep(0)`), as a request does, so work the
storage schedules in the background is paid for; the same loop around nothing is measured and subtracted. Each
phase runs 3 times after a warm-up and the cheapest run is reported (other processes on the machine only add).
The figures are set against the MCP proxy bench's budget of 1 ms of CPU per proxied tools/call.

Phases:
  no limits      a tenant with none configured: what every request pays for the feature (timed in a tight loop)
  1 limit        per_user only (moving window)
  all limits     per_user (moving), per_client and per_tenant (sliding window counter: above 10,000 a window),
                 requests_per_day (fixed window of the UTC day)
  refused        one user far over per_user: the cost of a 429 (in Redis, answered from the memo)
  library memory the `limits` library's own async MemoryStorage (moving window, 1 limit), which LocalStorage replaces
  tokens         admit_tokens with llm_tokens_per_user and llm_tokens_per_tenant (sliding window counter)
In Redis, beside the limiter's own phases (one script per request through net/resp.py, whatever the number of limits):
  library, N hits   the previous design, in the same run: the `limits` library's RedisStorage on redis-py (with
                    hiredis as its parser when installed), one script per limit, hit in turn (1 limit, then the
                    4 of "all limits")
  floor             one bare EVALSHA round trip (a trivial script) through each client: net/resp.py and redis-py
and the Redis server's own CPU per request is read from /proc beside ours. Keys go under a random prefix, deleted
after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `bench` and `tests` packages

from bench._common import CLOCK_TICKS, num, table
from limits import RateLimitItemPerDay, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from tests.support.redis import delete_prefixed

from chamberlain.net.resp import RedisPool, RespError
from chamberlain.policy.rate_limits import RateLimiter
from chamberlain.tenancy.config import Quotas, RateLimits

USERS = [f"user-{number}" for number in range(1000)]
CLIENTS = [f"client-{number}" for number in range(10)]
TENANT = "bench"
NONE = (RateLimits(), Quotas())
# Far above the load (a phase sends each user a few hundred requests), so every request is admitted: the cost of
# an admission is what is measured. per_user stays a moving window (at most 10,000 a window); the client's and the
# tenant's rates are above that, so they show the sliding window counter; the day quota is the fixed window.
ONE = (RateLimits(per_user="1000/minute"), Quotas())
ALL = (
    RateLimits(per_user="1000/minute", per_client="1000000/minute", per_tenant="10000000/minute"),
    Quotas(requests_per_day=1_000_000_000),
)
TOKENS = (RateLimits(llm_tokens_per_user="1000000000/minute", llm_tokens_per_tenant="1000000000/minute"), Quotas())
PROXY_BUDGET_US = 1000.0  # the MCP proxy bench's target: CPU per proxied tools/call under 1 ms
ROUNDS = 3  # each phase runs this many times and the cheapest counts: other processes on the machine only add


@dataclass
class Phase:
    name: str
    requests: int
    cpu_us: float  # per request, the empty loop subtracted
    wall_us: float  # per request, the empty loop subtracted (with --workers in flight)
    redis_us: float | None = None  # the Redis server's CPU per request


def redis_server_cpu_seconds() -> float | None:
    total, seen = 0.0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        if raw[raw.find(b"(") + 1 : raw.rfind(b")")].startswith(b"redis-server"):
            fields = raw.rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            seen = True
    return total if seen else None


async def drive(call: Callable[[int], Awaitable[object]], requests: int, workers: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for `requests` calls by `workers` coroutines, each yielding once per call."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call(remaining)
            await asyncio.sleep(0)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(
    name: str,
    call: Callable[[int], Awaitable[object]],
    requests: int,
    workers: int,
    empty: tuple[float, float],
    *,
    redis: bool = False,
) -> Phase:
    await drive(call, max(requests // 10, 100), workers)  # warm up: plans compiled, connections open
    best: Phase | None = None
    for _ in range(ROUNDS):
        redis_before = redis_server_cpu_seconds() if redis else None
        cpu, wall = await drive(call, requests, workers)
        redis_after = redis_server_cpu_seconds() if redis else None
        redis_us = None
        if redis_before is not None and redis_after is not None:
            redis_us = 1e6 * (redis_after - redis_before) / requests
        phase = Phase(name, requests, 1e6 * (cpu - empty[0]) / requests, 1e6 * (wall - empty[1]) / requests, redis_us)
        if best is None or phase.cpu_us < best.cpu_us:
            best = phase
    assert best is not None
    return best


async def no_limits(limiter: RateLimiter, calls: int = 300_000) -> Phase:
    """A tenant without limits: a fraction of a microsecond, below what the concurrent loop above can resolve, so
    it is timed in a tight loop of its own against the same loop awaiting an empty coroutine."""

    async def nothing(tenant: str, config: object, *, user: str, client: str) -> None:
        return None

    async def tight(call: Callable[..., Awaitable[object]]) -> float:
        started = time.process_time()
        for number in range(calls):
            await call(TENANT, NONE, user=USERS[number % 1000], client=CLIENTS[number % 10])
        return time.process_time() - started

    empty = min([await tight(nothing) for _ in range(ROUNDS)])
    cpu = min([await tight(limiter.admit) for _ in range(ROUNDS)])
    return Phase("no limits (tight loop)", calls, 1e6 * (cpu - empty) / calls, float("nan"), None)


def admit(limiter: RateLimiter, config: tuple[RateLimits, Quotas]) -> Callable[[int], Awaitable[object]]:
    def call(number: int) -> Awaitable[object]:
        return limiter.admit(TENANT, config, user=USERS[number % 1000], client=CLIENTS[number % 10])

    return call


async def run(storage: str, limiter: RateLimiter, requests: int, workers: int, prefix: str = "") -> list[Phase]:
    async def nothing(number: int) -> None:
        return None

    empty = min([await drive(nothing, requests, workers) for _ in range(ROUNDS)])
    redis = storage == "Redis"
    phases = [
        await no_limits(limiter),
        await measure("1 limit", admit(limiter, ONE), requests, workers, empty, redis=redis),
        await measure("all limits", admit(limiter, ALL), requests, workers, empty, redis=redis),
    ]
    over = (RateLimits(per_user="1/hour"), Quotas())
    await limiter.admit(TENANT, over, user="hammering", client=None)

    async def refused(number: int) -> object:
        result = await limiter.admit(TENANT, over, user="hammering", client=None)
        assert result is not None
        return result

    phases.append(await measure("refused (429)", refused, requests, workers, empty, redis=redis))

    async def tokens(number: int) -> object:
        return await limiter.admit_tokens(TENANT, TOKENS, user=USERS[number % 1000], tokens=500)

    phases.append(await measure("tokens", tokens, requests, workers, empty, redis=redis))
    if not redis:
        library = MovingWindowRateLimiter(MemoryStorage())
        item = parse("1000/minute")

        async def library_memory(number: int) -> object:
            return await library.hit(item, "user", TENANT, USERS[number % 1000])

        phases.append(await measure("library memory, 1 limit", library_memory, requests, workers, empty))
    else:
        phases += await redis_comparisons(limiter, prefix, requests, workers, empty)
    return phases


async def redis_comparisons(
    limiter: RateLimiter, prefix: str, requests: int, workers: int, empty: tuple[float, float]
) -> list[Phase]:
    """The library's own per-limit hits through redis-py (the previous design) and one bare round trip per client."""
    url = limiter._pool.address  # type: ignore[union-attr]
    storage = RedisStorage(
        f"async+redis://{url.host}:{url.port}/{url.db}", implementation="redispy", key_prefix=prefix + "-library"
    )
    moving, sliding, fixed = (
        MovingWindowRateLimiter(storage),
        SlidingWindowCounterRateLimiter(storage),
        FixedWindowRateLimiter(storage),
    )
    user, client, tenant = parse("1000/minute"), parse("1000000/minute"), parse("10000000/minute")
    day = RateLimitItemPerDay(1_000_000_000)

    async def library_one(number: int) -> object:
        return await moving.hit(user, "user", TENANT, USERS[number % 1000])

    async def library_all(number: int) -> object:
        # The order of the previous design: user, client, tenant, day, each its own round trip.
        return (
            await moving.hit(user, "user", TENANT, USERS[number % 1000])
            and await sliding.hit(client, "client", TENANT, CLIENTS[number % 10])
            and await sliding.hit(tenant, "tenant", TENANT)
            and await fixed.hit(day, "day", TENANT, "bench")
        )

    script = storage.bridge.get_connection().register_script("return 1")  # type: ignore[attr-defined]

    async def redis_py_floor(number: int) -> object:
        return await script(keys=["bench-floor"], args=[number])

    pool = RedisPool(url)
    sha = await pool.execute(b"SCRIPT", b"LOAD", b"return 1")
    assert isinstance(sha, bytes)

    async def resp_floor(number: int) -> object:
        return await pool.execute(b"EVALSHA", sha, 1, b"bench-floor", number)

    try:
        return [
            await measure("library, 1 hit (redis-py)", library_one, requests, workers, empty, redis=True),
            await measure("library, 4 hits (redis-py)", library_all, requests, workers, empty, redis=True),
            await measure("floor: EVALSHA, resp.py", resp_floor, requests, workers, empty, redis=True),
            await measure("floor: EVALSHA, redis-py", redis_py_floor, requests, workers, empty, redis=True),
        ]
    finally:
        await pool.aclose()
        await storage.bridge.get_connection().aclose()  # type: ignore[attr-defined]
        delete_prefixed(f"redis://{url.host}:{url.port}/{url.db}", prefix + "-library")


def report(results: dict[str, list[Phase]], workers: int) -> None:
    for storage, phases in results.items():
        print(f"\n{storage} ({workers} requests in flight)")
        rows = [
            [phase.name, num(phase.requests), num(phase.cpu_us, 1), num(phase.wall_us, 1), num(phase.redis_us, 1)]
            for phase in phases
        ]
        print(table(["phase", "requests", "CPU µs/req", "wall µs/req", "Redis server µs/req"], rows))
    memory = {phase.name: phase for phase in results.get("memory", [])}
    if "all limits" in memory:
        print(
            f"\nmemory: every limit {memory['all limits'].cpu_us:.1f} µs of CPU per request, "
            f"{100 * memory['all limits'].cpu_us / PROXY_BUDGET_US:.1f}% of a proxied call's 1 ms budget; "
            f"one limit {memory['1 limit'].cpu_us:.1f} µs; no limits {memory['no limits (tight loop)'].cpu_us:.2f} µs"
        )
        if "library memory, 1 limit" in memory:
            ratio = memory["library memory, 1 limit"].cpu_us / max(memory["1 limit"].cpu_us, 0.1)
            print(f"the library's own async MemoryStorage: {ratio:.1f}x this limiter's CPU for one limit")
    redis = {phase.name: phase for phase in results.get("Redis", [])}
    if "floor: EVALSHA, resp.py" in redis and "all limits" in redis:
        floor = redis["floor: EVALSHA, resp.py"].cpu_us
        print(
            f"Redis: one script per request whatever its limits: one limit {redis['1 limit'].cpu_us:.0f} µs of CPU, "
            f"every limit {redis['all limits'].cpu_us:.0f} µs ({redis['all limits'].cpu_us / floor:.2f} bare round "
            f"trips of {floor:.0f} µs; {100 * redis['all limits'].cpu_us / PROXY_BUDGET_US:.1f}% of the 1 ms "
            f"budget); a refusal from the memo {redis['refused (429)'].cpu_us:.1f} µs"
        )
        library = redis["library, 4 hits (redis-py)"].cpu_us
        print(
            f"the previous design (the library's hit per limit, redis-py): one limit "
            f"{redis['library, 1 hit (redis-py)'].cpu_us:.0f} µs, every limit {library:.0f} µs: "
            f"{library / max(redis['all limits'].cpu_us, 0.1):.1f}x this limiter's; a bare redis-py round trip "
            f"{redis['floor: EVALSHA, redis-py'].cpu_us:.0f} µs"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000, help="requests per memory phase")
    parser.add_argument("--redis-requests", type=int, default=10_000, help="requests per Redis phase")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="a fifth of the requests")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return parser.parse_args()


async def main_async(args: argparse.Namespace) -> dict[str, list[Phase]]:
    scale = 5 if args.quick else 1
    results: dict[str, list[Phase]] = {}
    memory = RateLimiter()
    results["memory"] = await run("memory", memory, args.requests // scale, args.workers)
    await memory.aclose()
    if args.no_redis:
        return results
    prefix = f"chamberlain-bench-{secrets.token_hex(6)}"
    limiter = RateLimiter(args.redis_url, key_prefix=prefix)
    try:
        try:
            await limiter._pool.execute(b"PING")  # type: ignore[union-attr]
        except (OSError, RespError):
            print(f"Redis skipped: {args.redis_url} did not answer")
            return results
        results["Redis"] = await run("Redis", limiter, args.redis_requests // scale, args.workers, prefix)
        if not limiter.shared:
            print("warning: Redis failed during the run; the Redis figures include the memory fallback")
    finally:
        await limiter.aclose()
        delete_prefixed(args.redis_url, prefix)
    return results


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    print(f"rate_limit_bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    results = asyncio.run(main_async(args))
    report(results, args.workers)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
