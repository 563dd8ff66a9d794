"""Rate limits counted in the real Redis at 127.0.0.1:6379 (each test under a key prefix of its own, deleted
afterwards), and what happens when Redis goes away: a closed loopback port, or a loopback relay the test cuts and
restores. Several RateLimiter objects stand for several gateway processes: each has its own connections and memo,
and only Redis is shared."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits import RateLimitItemPerDay, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from chamberlain.net.resp import bulk
from chamberlain.policy import rate_limits
from chamberlain.policy.rate_limits import DAY, RateLimiter, Throttled
from chamberlain.tenancy.config import Quotas, RateLimits, TenantConfig
from tests.support.redis import RedisTarget, redis_target  # noqa: F401 - the fixture
from tests.support.server import free_port
from tests.unit.test_rate_limits import Clock, frozen

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1 of loopback: connections are refused
LOGGER = "chamberlain.policy.rate_limits"


@contextlib.asynccontextmanager
async def limiters(target: RedisTarget, count: int = 2, **options: Any) -> AsyncIterator[list[RateLimiter]]:
    made = [RateLimiter(target.url, key_prefix=target.prefix, **options) for _ in range(count)]
    try:
        yield made
    finally:
        for limiter in made:
            await limiter.aclose()


def config(**values: Any) -> tuple[RateLimits, Quotas]:
    quotas = values.pop("quotas", Quotas())
    return RateLimits(**values), quotas


def counting_round_trips(limiter: RateLimiter) -> list[int]:
    """Records every command the limiter sends to Redis (a 1 per round trip)."""
    pool: Any = limiter._pool
    send = pool.execute_packed
    calls: list[int] = []

    async def counting(payload: bytes) -> Any:
        calls.append(1)
        return await send(payload)

    pool.execute_packed = counting
    return calls


async def admitted_concurrently(calls: list[Callable[[], Awaitable[Throttled | None]]]) -> int:
    results = await asyncio.gather(*(call() for call in calls))
    return sum(1 for result in results if result is None)


async def test_a_per_user_limit_holds_in_redis_with_retry_after(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 1) as (limiter,):
        rates = config(per_user="5/minute")
        for _ in range(5):
            assert await limiter.admit("acme", rates, user="alice", client=None) is None
        refusal = await limiter.admit("acme", rates, user="alice", client=None)
        assert refusal is not None
        assert refusal.limit == "per_user"
        assert 59 <= refusal.retry_after <= 61
        assert await limiter.admit("acme", rates, user="bob", client=None) is None
        assert await limiter.admit("globex", rates, user="alice", client=None) is None
        assert limiter.shared
    keys = redis_target.stored_keys()
    assert keys, "the counts live in Redis, under the test's prefix"
    assert all(key.startswith(redis_target.prefix + ":") for key in keys)
    assert any("/user/acme/alice/" in key for key in keys)


async def test_concurrent_requests_through_two_limiters_admit_exactly_the_limit(
    redis_target: RedisTarget,  # noqa: F811
) -> None:
    async with limiters(redis_target, 2) as (first, second):
        rates = config(per_user="20/minute", per_tenant="50/minute")
        calls = [
            (lambda limiter=limiter: limiter.admit("acme", rates, user="alice", client="cli"))
            for _ in range(60)
            for limiter in (first, second)
        ]
        # The moving window's check-and-append is one Lua script: exact across processes, not just within +1.
        assert await admitted_concurrently(calls) == 20
        users = [f"user-{number}" for number in range(10)]
        calls = [
            (lambda limiter=limiter, user=user: limiter.admit("acme", rates, user=user, client="cli"))
            for user in users
            for _ in range(8)
            for limiter in (first, second)
        ]
        assert await admitted_concurrently(calls) == 50 - 20


async def test_the_daily_quota_is_shared_and_expires_within_a_day(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 2) as (first, second):
        rates = config(quotas=Quotas(requests_per_day=7))
        calls = [
            (lambda limiter=limiter: limiter.admit("acme", rates, user="alice", client=None))
            for _ in range(10)
            for limiter in (first, second)
        ]
        assert await admitted_concurrently(calls) == 7
        refusal = await first.admit("acme", rates, user="bob", client=None)
        assert refusal is not None
        assert refusal.limit == "requests_per_day"
        assert 1 <= refusal.retry_after <= 86_400
    client = redis.Redis.from_url(redis_target.url)
    try:
        (day_key,) = [key for key in redis_target.stored_keys() if "/day/acme/" in key]
        assert 0 < int(client.ttl(day_key)) <= 86_400
    finally:
        client.close()


async def test_token_rates_hold_across_limiters(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 2) as (first, second):
        rates = config(llm_tokens_per_user="1000/minute")
        calls = [
            (lambda limiter=limiter: limiter.admit_tokens("acme", rates, user="alice", tokens=300))
            for _ in range(5)
            for limiter in (first, second)
        ]
        assert await admitted_concurrently(calls) == 3
        refusal = await first.admit_tokens("acme", rates, user="alice", tokens=300)
        assert refusal is not None
        assert refusal.limit == "llm_tokens_per_user"
        assert await second.admit_tokens("acme", rates, user="alice", tokens=100) is None


async def test_a_remembered_refusal_costs_no_redis_call(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 1) as (limiter,):
        rates = config(per_user="2/minute")
        calls = counting_round_trips(limiter)
        for _ in range(3):
            await limiter.admit("acme", rates, user="alice", client=None)
        assert calls == [1, 1, 1]
        for _ in range(50):
            refusal = await limiter.admit("acme", rates, user="alice", client=None)
            assert refusal is not None
            assert refusal.retry_after >= 59
        assert len(calls) == 3


async def test_a_refusal_by_the_user_limit_spends_nothing_of_the_tenant(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 2) as (first, second):
        rates = config(per_user="3/minute", per_tenant="6/minute")
        for _ in range(20):
            await first.admit("acme", rates, user="noisy", client=None)
            await second.admit("acme", rates, user="noisy", client=None)
        # The noisy user spent three of the tenant's six; the other three are everyone else's.
        admitted = [await second.admit("acme", rates, user=f"quiet-{n}", client=None) for n in range(5)]
        assert sum(1 for result in admitted if result is None) == 3


async def test_one_round_trip_decides_every_limit_of_a_request(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 1) as (limiter,):
        rates = config(
            per_user="5/minute", per_client="20000/hour", per_tenant="50/minute", quotas=Quotas(requests_per_day=100)
        )
        calls = counting_round_trips(limiter)
        for _ in range(5):
            assert await limiter.admit("acme", rates, user="alice", client="cli") is None
        refusal = await limiter.admit("acme", rates, user="alice", client="cli")
        assert refusal is not None
        assert refusal.limit == "per_user"
        assert len(calls) == 6, "one script per request, whatever the number of limits"


async def test_retry_after_in_redis_is_when_the_oldest_request_leaves_the_window(
    redis_target: RedisTarget,  # noqa: F811
) -> None:
    with frozen() as clock:
        async with limiters(redis_target, 1) as (limiter,):
            rates = config(per_user="3/minute")
            for _ in range(3):
                assert await limiter.admit("acme", rates, user="alice", client=None) is None
                clock.advance(1)  # admitted at +0, +1, +2
            clock.advance(7.5)  # now +10.5: the oldest leaves the window just after +60
            refusal = await limiter.admit("acme", rates, user="alice", client=None)
            assert refusal is not None
            assert refusal.retry_after == 50  # 49.5 rounded up: never early (RFC 9110 §10.2.3)
            clock.advance(49.5)  # +60: the oldest is exactly a minute old, and still counts
            assert await limiter.admit("acme", rates, user="alice", client=None) is not None
            clock.advance(0.25)
            assert await limiter.admit("acme", rates, user="alice", client=None) is None
            again = await limiter.admit("acme", rates, user="alice", client=None)
            assert again is not None
            assert again.retry_after == 1  # the second leaves just after +61


async def test_a_refusal_by_the_tenant_limit_spends_nothing_of_the_user(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 2) as (first, second):
        rates = config(per_user="3/minute", per_client="10/minute", per_tenant="4/minute")
        for number in range(4):
            assert await first.admit("acme", rates, user=f"busy-{number}", client="web") is None
        # The tenant's minute is full: alice is refused by it, again and again, through both processes.
        for limiter in (first, second) * 5:
            refusal = await limiter.admit("acme", rates, user="alice", client="cli")
            assert refusal is not None
            assert refusal.limit == "per_tenant"
    # Nothing of alice's own limit nor of her client's was spent: their keys were never even written.
    keys = redis_target.stored_keys()
    assert not [key for key in keys if "/user/acme/alice/" in key or "/client/acme/cli/" in key]
    tenant_key = next(key for key in keys if "/tenant/acme/" in key)
    client = redis.Redis.from_url(redis_target.url)
    try:
        assert client.llen(tenant_key) == 4
        assert client.llen(next(key for key in keys if "/client/acme/web/" in key)) == 4
    finally:
        client.close()


async def test_requests_refused_by_a_rate_do_not_count_against_the_day_in_redis(
    redis_target: RedisTarget,  # noqa: F811
) -> None:
    async with limiters(redis_target, 1) as (limiter,):
        rates = config(per_user="2/hour", quotas=Quotas(requests_per_day=3))
        assert [await limiter.admit("acme", rates, user="alice", client=None) is None for _ in range(6)] == [
            True,
            True,
            False,
            False,
            False,
            False,
        ]
        assert await limiter.admit("acme", rates, user="bob", client=None) is None
        refusal = await limiter.admit("acme", rates, user="carol", client=None)
        assert refusal is not None
        assert refusal.limit == "requests_per_day"
    client = redis.Redis.from_url(redis_target.url)
    try:
        (day_key,) = [key for key in redis_target.stored_keys() if "/day/acme/" in key]
        assert int(client.get(day_key)) == 3, "the library's fixed window would have counted every refusal too"
    finally:
        client.close()


async def test_many_concurrent_requests_over_few_connections_never_exceed_any_limit(
    redis_target: RedisTarget,  # noqa: F811
) -> None:
    users = [f"user-{number}" for number in range(20)]
    clients = ["cli", "web", "ide"]
    rates = config(
        per_user="7/minute", per_client="25/minute", per_tenant="40/minute", quotas=Quotas(requests_per_day=35)
    )
    async with limiters(redis_target, 2) as pair, limiters(redis_target, 1, connections=2) as (third,):
        processes = [*pair, third]  # three processes, four connections in all, 600 requests in flight at once
        requests = [(users[number % 20], clients[number % 3], processes[number % 3]) for number in range(600)]
        results = await asyncio.gather(
            *(limiter.admit("acme", rates, user=user, client=client) for user, client, limiter in requests)
        )
        assert all(limiter.shared for limiter in processes)
    admitted = [(user, client) for (user, client, _), result in zip(requests, results, strict=True) if result is None]
    # The day's 35 is the tightest: it is used up exactly, and no user's or client's limit is passed on the way.
    assert len(admitted) == 35
    assert all(sum(1 for user, _ in admitted if user == name) <= 7 for name in users)
    assert all(sum(1 for _, client in admitted if client == name) <= 25 for name in clients)
    # What Redis holds is what was admitted, to the request: refusals counted nowhere.
    client = redis.Redis.from_url(redis_target.url, decode_responses=True)
    try:
        for key in redis_target.stored_keys():
            if "/day/" in key:
                assert int(client.get(key)) == 35
            elif "/tenant/" in key:
                assert client.llen(key) == 35
            elif "/client/" in key:
                name = key.split("/client/acme/")[1].split("/")[0]
                assert client.llen(key) == sum(1 for _, used in admitted if used == name)
            else:
                name = key.split("/user/acme/")[1].split("/")[0]
                assert client.llen(key) == sum(1 for user, _ in admitted if user == name)
    finally:
        client.close()


async def test_a_cost_of_several_requests_is_all_or_nothing(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 1) as (limiter,):
        rates = config(per_user="5/minute", per_tenant="7/minute")
        assert await limiter.admit("acme", rates, user="alice", client=None, cost=3) is None
        refusal = await limiter.admit("acme", rates, user="alice", client=None, cost=3)
        assert refusal is not None
        assert refusal.limit == "per_user"
        assert 59 <= refusal.retry_after <= 61
        assert await limiter.admit("acme", rates, user="alice", client=None, cost=2) is None
        # The tenant has 2 left: bob's 3 are refused whole, and his own limit keeps all 5.
        refusal = await limiter.admit("acme", rates, user="bob", client=None, cost=3)
        assert refusal is not None
        assert refusal.limit == "per_tenant"
        assert await limiter.admit("acme", rates, user="bob", client=None, cost=2) is None
        impossible = await limiter.admit("acme", rates, user="carol", client=None, cost=6)
        assert impossible is not None
        assert "more than the limit" in impossible.detail


async def test_tokens_refused_by_the_tenant_are_not_counted_against_the_user(
    redis_target: RedisTarget,  # noqa: F811
) -> None:
    async with limiters(redis_target, 1) as (limiter,):
        rates = config(llm_tokens_per_user="1000/minute", llm_tokens_per_tenant="1000/minute")
        assert await limiter.admit_tokens("acme", rates, user="alice", tokens=700) is None
        refusal = await limiter.admit_tokens("acme", rates, user="bob", tokens=600)
        assert refusal is not None
        assert refusal.limit == "llm_tokens_per_tenant"
        assert 1 <= refusal.retry_after <= 61
        user_only = config(llm_tokens_per_user="1000/minute")
        assert await limiter.admit_tokens("acme", user_only, user="bob", tokens=1000) is None


async def test_the_library_reads_and_writes_the_same_windows(redis_target: RedisTarget) -> None:  # noqa: F811
    """The keys, layout and rules are the `limits` library's: its own window stats are right on what the limiter
    counted, and what the library counts (a replica still on its per-limit scripts) the limiter sees."""
    per_user, per_client, day_quota = parse("5/minute"), parse("20000/hour"), RateLimitItemPerDay(100)
    day = int(time.time() // DAY)
    storage = RedisStorage(f"async+{redis_target.url}", implementation="redispy", key_prefix=redis_target.prefix)
    moving = MovingWindowRateLimiter(storage)
    sliding = SlidingWindowCounterRateLimiter(storage)
    fixed = FixedWindowRateLimiter(storage)
    rates = config(per_user="5/minute", per_client="20000/hour", quotas=Quotas(requests_per_day=100))
    try:
        async with limiters(redis_target, 1) as (limiter,):
            started = time.time()
            for _ in range(3):
                assert await limiter.admit("acme", rates, user="alice", client="cli") is None
            user_stats = await moving.get_window_stats(per_user, "user/acme/alice")
            assert user_stats.remaining == 2
            assert started + 60 <= user_stats.reset_time <= time.time() + 60
            assert (await sliding.get_window_stats(per_client, "client/acme/cli")).remaining == 20000 - 3
            assert (await fixed.get_window_stats(day_quota, f"day/acme/{day}")).remaining == 97
            assert await moving.test(per_user, "user/acme/alice", cost=2)
            assert not await moving.test(per_user, "user/acme/alice", cost=3)

            # The library's own hits land in the same windows.
            assert await moving.hit(per_user, "user/acme/alice")
            assert await sliding.hit(per_client, "client/acme/cli", cost=10)
            assert await fixed.hit(day_quota, f"day/acme/{day}", cost=90)
            assert await limiter.admit("acme", rates, user="alice", client="cli") is None  # the 5th of 5
            refusal = await limiter.admit("acme", rates, user="alice", client="cli")
            assert refusal is not None
            assert refusal.limit == "per_user"
            assert (await sliding.get_window_stats(per_client, "client/acme/cli")).remaining == 20000 - 14
            # 3 + 90 + 1 of the day's 100: six left, the limiter's and the library's counts together.
            assert [await limiter.admit("acme", rates, user=f"u{n}", client=None) is None for n in range(7)] == [
                *([True] * 6),
                False,
            ]
        prefix = redis_target.prefix
        assert set(redis_target.stored_keys()) <= {
            f"{prefix}:{per_user.key_for('user/acme/alice')}",
            *(f"{prefix}:{per_user.key_for(f'user/acme/u{n}')}" for n in range(7)),
            f"{prefix}:{{{per_client.key_for('client/acme/cli')}}}",
            f"{prefix}:{{{per_client.key_for('client/acme/cli')}}}/-1",
            f"{prefix}:{day_quota.key_for(f'day/acme/{day}')}",
        }
    finally:
        await storage.bridge.get_connection().aclose()  # type: ignore[attr-defined]


async def test_a_script_redis_forgot_is_sent_again_whole(
    redis_target: RedisTarget,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As after a restart or SCRIPT FLUSH (not run here: the Redis is shared), Redis knows no script by this SHA-1.
    monkeypatch.setattr(rate_limits, "_EVALSHA", bulk(b"EVALSHA") + bulk(b"0" * 40))
    async with limiters(redis_target, 1) as (limiter,):
        sent: list[bytes] = []
        pool: Any = limiter._pool
        send = pool.execute_packed

        async def recording(payload: bytes) -> Any:
            sent.append(payload)
            return await send(payload)

        pool.execute_packed = recording
        rates = config(per_user="2/minute")
        assert [await limiter.admit("acme", rates, user="alice", client=None) is None for _ in range(3)] == [
            True,
            True,
            False,
        ]
        assert limiter.shared
        assert [payload.split(b"\r\n")[2] for payload in sent] == [b"EVALSHA", b"EVAL"] * 3


async def test_a_key_of_another_type_is_an_outage_not_an_admission(
    redis_target: RedisTarget,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    client = redis.Redis.from_url(redis_target.url)
    try:
        client.set(f"{redis_target.prefix}:{parse('2/minute').key_for('user/acme/alice')}", "not a list")
        async with limiters(redis_target, 1, probe_interval=30) as (limiter,):
            rates = config(per_user="2/minute")
            results = [await limiter.admit("acme", rates, user="alice", client=None) for _ in range(3)]
            # Counted in this process instead (the fallback), still within the limit.
            assert [result is None for result in results] == [True, True, False]
            assert not limiter.shared
        (warning,) = [record.getMessage() for record in caplog.records if record.name == LOGGER]
        assert "WRONGTYPE" in warning
    finally:
        client.close()


async def test_a_redis_that_stops_answering_is_an_outage_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts and reads, never answers
        while await reader.read(65_536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RateLimiter(f"redis://127.0.0.1:{port}/0", timeout=0.3, probe_interval=30)
    try:
        started = time.monotonic()
        assert await limiter.admit("acme", config(per_user="1/minute"), user="alice", client=None) is None
        assert 0.25 <= time.monotonic() - started < 2
        assert not limiter.shared
        refusal = await limiter.admit("acme", config(per_user="1/minute"), user="alice", client=None)
        assert refusal is not None  # counted in memory meanwhile
        (warning,) = [record.getMessage() for record in caplog.records if record.name == LOGGER]
        assert "ReplyTimeout" in warning
    finally:
        await limiter.aclose()
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


# -- property: the script decides exactly as the rule says --------------------------------------------------------

USERS = ("alice", "bob", "carol")
step = st.tuples(
    # Seconds since the last step, binary fractions: every instant is exact in microseconds and in floating point, so
    # the windows' edges (an entry counts while at most 20 s old) are met exactly.
    st.sampled_from([0.0, 0.0, 0.0625, 0.25, 1.0, 7.5, 19.9375, 20.0, 20.0625, 61.0]),
    st.sampled_from(USERS),
    st.integers(min_value=1, max_value=3),  # requests sent at that instant
    st.integers(min_value=1, max_value=2),  # the cost of each
)
examples = itertools.count()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(step, min_size=1, max_size=30),
    per_user=st.integers(min_value=0, max_value=4),
    per_tenant=st.integers(min_value=1, max_value=7),
    quota=st.integers(min_value=1, max_value=12),
)
def test_redis_admits_exactly_what_the_rule_says(
    redis_target: RedisTarget,  # noqa: F811
    steps: list[tuple[float, str, int, int]],
    per_user: int,
    per_tenant: int,
    quota: int,
) -> None:
    """Admitted iff every window has room for the cost (moving windows: entries at most 20 s old; the day: the
    UTC day's admitted total), and a refusal counts nowhere. The clock is the test's: the script takes the caller's
    time, so Redis's own clock plays no part in these windows."""
    window = 20.0
    rates = config(
        per_user=f"{per_user} per 20 seconds",
        per_tenant=f"{per_tenant} per 20 seconds",
        quotas=Quotas(requests_per_day=quota),
    )
    tenant_id = f"t{next(examples)}"  # every example counts afresh under the test's prefix

    def in_window(history: list[float], now: float) -> int:
        return sum(1 for at in history if at >= now - window)

    async def scenario(clock: Clock) -> None:
        limiter = RateLimiter(redis_target.url, key_prefix=redis_target.prefix)
        by_user: dict[str, list[float]] = {user: [] for user in USERS}
        tenant: list[float] = []
        per_day: dict[int, int] = {}
        try:
            for delay, user, burst, cost in steps:
                clock.advance(delay)
                day = int(clock.now // DAY)
                for _ in range(burst):
                    expected = (
                        in_window(by_user[user], clock.now) + cost <= per_user
                        and in_window(tenant, clock.now) + cost <= per_tenant
                        and per_day.get(day, 0) + cost <= quota
                    )
                    refusal = await limiter.admit(tenant_id, rates, user=user, client=None, cost=cost)
                    assert (refusal is None) == expected
                    if refusal is None:
                        by_user[user] += [clock.now] * cost
                        tenant.extend([clock.now] * cost)
                        per_day[day] = per_day.get(day, 0) + cost
                    else:
                        assert refusal.retry_after >= 1
            assert limiter.shared
        finally:
            await limiter.aclose()

    with frozen() as clock:
        asyncio.run(scenario(clock))


# -- Redis unreachable --------------------------------------------------------------------------------------------


async def test_an_unreachable_redis_falls_back_to_per_process_limits_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    limiter = RateLimiter("redis://:hunter2-secret@127.0.0.1:1/0", probe_interval=30)
    try:
        rates = config(per_user="3/minute")
        results = [await limiter.admit("acme", rates, user="alice", client=None) for _ in range(10)]
        assert [result is None for result in results] == [True] * 3 + [False] * 7
        assert not limiter.shared
        assert await limiter.admit("acme", rates, user="bob", client=None) is None
        warnings = [record for record in caplog.records if record.name == LOGGER]
        assert len(warnings) == 1, "one warning per outage, not one per request"
        message = warnings[0].getMessage()
        assert "127.0.0.1:1" in message
        assert "hunter2" not in message
    finally:
        await limiter.aclose()


async def test_an_unreachable_redis_refuses_with_503_when_configured_to_fail_closed() -> None:
    limiter = RateLimiter(CLOSED_PORT_URL, fail_closed=True, probe_interval=30)
    try:
        for _ in range(3):
            refusal = await limiter.admit("acme", config(per_user="100/minute"), user="alice", client=None)
            assert refusal is not None
            assert refusal.limit == "unavailable"
            assert refusal.status_code == 503
            assert refusal.retry_after >= 1
            assert refusal.headers == {"Retry-After": str(refusal.retry_after)}
        tokens = await limiter.admit_tokens("acme", config(llm_tokens_per_user="1/minute"), user="a", tokens=1)
        assert tokens is not None
        assert tokens.status_code == 503
        # A tenant without limits needs no Redis, so it is not refused.
        assert await limiter.admit("acme", TenantConfig(), user="alice", client=None) is None
    finally:
        await limiter.aclose()


class Relay:
    """A loopback TCP relay to the real Redis that the test can cut (connections dropped, port closed) and
    restore on the same port: an outage and a recovery without touching Redis itself."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers |= {client_writer, redis_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65_536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(pipe(client_reader, redis_writer), pipe(redis_reader, client_writer))
        self._writers -= {client_writer, redis_writer}


async def wait_until(condition: Callable[[], Awaitable[bool]], attempts: int = 200) -> None:
    for _ in range(attempts):  # 10 s at most
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not come true in time")


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fallback", "fail-closed"])
async def test_the_limiter_recovers_by_itself_when_redis_returns(
    redis_target: RedisTarget,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    fail_closed: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    relay = Relay(free_port())
    await relay.start()
    limiter = RateLimiter(relay.url, key_prefix=redis_target.prefix, fail_closed=fail_closed, probe_interval=0.1)
    # Another process, straight to Redis: it sees what the limiter counts there, and only that.
    witness = RateLimiter(redis_target.url, key_prefix=redis_target.prefix)
    rates = config(per_user="4/minute")
    try:
        assert await limiter.admit("acme", rates, user="alice", client=None) is None
        assert limiter.shared

        await relay.cut()
        during = [await limiter.admit("acme", rates, user="bob", client=None) for _ in range(6)]
        assert not limiter.shared
        if fail_closed:
            assert all(result is not None and result.status_code == 503 for result in during)
        else:
            # Counted in this process alone: bob's four, and none of them reached Redis.
            assert [result is None for result in during] == [True] * 4 + [False] * 2
        assert sum(1 for record in caplog.records if "cannot be reached" in record.getMessage()) == 1

        await relay.start()

        async def admitted_through_redis() -> bool:
            return await limiter.admit("acme", rates, user="carol", client=None) is None and limiter.shared

        await wait_until(admitted_through_redis)
        assert any("answers again" in record.getMessage() for record in caplog.records)
        # Back in Redis: alice's first request (before the outage) is still counted there, bob's are not.
        assert [await witness.admit("acme", rates, user="alice", client=None) is None for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]
        assert [await witness.admit("acme", rates, user="bob", client=None) is None for _ in range(5)] == [
            True,
            True,
            True,
            True,
            False,
        ]
    finally:
        await limiter.aclose()
        await witness.aclose()
        with contextlib.suppress(AssertionError):
            await relay.cut()


async def test_reset_forgets_every_count_under_its_own_prefix_only(redis_target: RedisTarget) -> None:  # noqa: F811
    # A prefix with glob characters: reset must match it literally, not as a pattern reaching other keys.
    globbed = RedisTarget(redis_target.url, redis_target.prefix + "[a]*")
    neighbour = RedisTarget(redis_target.url, redis_target.prefix + "a-neighbour")
    rates = config(per_user="1/minute")
    async with limiters(globbed, 1) as (limiter,), limiters(neighbour, 1) as (other,):
        assert await limiter.admit("acme", rates, user="alice", client=None) is None
        assert await limiter.admit("acme", rates, user="alice", client=None) is not None  # remembered, too
        assert await other.admit("acme", rates, user="alice", client=None) is None
        await limiter.reset()
        assert await limiter.admit("acme", rates, user="alice", client=None) is None
        assert await other.admit("acme", rates, user="alice", client=None) is not None
    assert len([key for key in redis_target.stored_keys() if key.startswith(neighbour.prefix + ":")]) == 1


async def test_a_closed_limiter_starts_no_probe() -> None:
    limiter = RateLimiter(CLOSED_PORT_URL, probe_interval=0.05)
    await limiter.aclose()
    assert await limiter.admit("acme", config(per_user="1/minute"), user="alice", client=None) is None
    assert limiter._probe is None
