"""Rate limits counted in the real Redis at 127.0.0.1:6379 (each test under a key prefix of its own, deleted
afterwards), and what happens when Redis goes away: a closed loopback port, or a loopback relay the test cuts and
restores. Several RateLimiter objects stand for several gateway processes: each has its own connections and memo,
and only Redis is shared."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis

from chamberlain.policy.rate_limits import RateLimiter, Throttled
from chamberlain.tenancy.config import Quotas, RateLimits, TenantConfig
from tests.support.redis import RedisTarget, redis_target  # noqa: F401 - the fixture
from tests.support.server import free_port

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
        storage: Any = limiter._primary.storage
        calls = 0
        acquire = storage.acquire_entry

        async def counting(*args: Any, **kwargs: Any) -> bool:
            nonlocal calls
            calls += 1
            return bool(await acquire(*args, **kwargs))

        storage.acquire_entry = counting
        for _ in range(3):
            await limiter.admit("acme", rates, user="alice", client=None)
        assert calls == 3
        for _ in range(50):
            refusal = await limiter.admit("acme", rates, user="alice", client=None)
            assert refusal is not None
            assert refusal.retry_after >= 59
        assert calls == 3


async def test_a_refusal_by_the_user_limit_spends_nothing_of_the_tenant(redis_target: RedisTarget) -> None:  # noqa: F811
    async with limiters(redis_target, 2) as (first, second):
        rates = config(per_user="3/minute", per_tenant="6/minute")
        for _ in range(20):
            await first.admit("acme", rates, user="noisy", client=None)
            await second.admit("acme", rates, user="noisy", client=None)
        # The noisy user spent three of the tenant's six; the other three are everyone else's.
        admitted = [await second.admit("acme", rates, user=f"quiet-{n}", client=None) for n in range(5)]
        assert sum(1 for result in admitted if result is None) == 3


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
