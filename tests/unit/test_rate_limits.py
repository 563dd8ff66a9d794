"""Rate limits and the daily quota in process memory (policy/rate_limits.py), on a clock the tests move.

The moving window is exact in memory, so most tests compare with what the rule says outright: a request is admitted
when every limit that applies to it has fewer than its amount of admitted requests in the last window (an admitted
request counts while it is at most the window's length old), and a refused request counts nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits import parse

from chamberlain.net.resp import ProtocolFailure, pack
from chamberlain.policy import rate_limits
from chamberlain.policy.quotas import check_can_add
from chamberlain.policy.rate_limits import (
    _SCRIPT_SHA,
    DAY,
    MOVING_WINDOW_MAX_ENTRIES,
    LocalStorage,
    RateLimiter,
    Throttled,
)
from chamberlain.store.database import create_database, migrate
from chamberlain.store.tenants import TenantRepository, ensure_tenant
from chamberlain.store.users import UserRepository
from chamberlain.tenancy.config import Quotas, RateLimits, TenantConfig

START = (1_800_000_000 // DAY) * DAY + 3_600.0  # 01:00 UTC on a day in 2027


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.contextmanager
def frozen(start: float = START) -> Iterator[Clock]:
    # The limiter and the `limits` library both read time.time(); asyncio's clock (monotonic) is untouched.
    clock = Clock(start)
    with mock.patch("time.time", clock):
        yield clock


@pytest.fixture
def clock() -> Iterator[Clock]:
    with frozen() as moving:
        yield moving


def limits(**values: str) -> tuple[RateLimits, Quotas]:
    return RateLimits(**values), Quotas()


async def admitted(limiter: RateLimiter, config: tuple[RateLimits, Quotas], count: int, **who: str | None) -> int:
    done = 0
    for _ in range(count):
        if await limiter.admit("acme", config, user=who.get("user", "alice"), client=who.get("client")) is None:
            done += 1
    return done


async def test_a_per_user_limit_admits_its_amount_then_refuses_with_429_and_retry_after(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_user="5/minute")
    assert await admitted(limiter, config, 5) == 5
    refusal = await limiter.admit("acme", config, user="alice", client=None)
    assert isinstance(refusal, Throttled)
    assert refusal.limit == "per_user"
    assert refusal.status_code == 429
    # Every hit was at this instant; they count while at most a minute old, so a unit is free just after 60 s.
    assert refusal.retry_after == 61
    assert refusal.headers == {"Retry-After": "61"}
    assert "5 requests per minute per user" in refusal.detail


async def test_retry_after_is_when_the_oldest_request_leaves_the_window(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_user="3/minute")
    for _ in range(3):
        assert await limiter.admit("acme", config, user="alice", client=None) is None
        clock.advance(1)  # admitted at +0, +1, +2
    clock.advance(7.5)  # now +10.5: the oldest leaves at +60
    refusal = await limiter.admit("acme", config, user="alice", client=None)
    assert refusal is not None
    assert refusal.retry_after == 50  # 49.5 rounded up: whole seconds, never early (RFC 9110 §10.2.3)
    clock.advance(refusal.retry_after - 1)
    still = await limiter.admit("acme", config, user="alice", client=None)
    assert still is not None
    assert still.retry_after == 1
    clock.advance(1)
    assert await limiter.admit("acme", config, user="alice", client=None) is None
    # Exactly one unit freed: the next is refused until +61 lets the second go.
    again = await limiter.admit("acme", config, user="alice", client=None)
    assert again is not None
    assert again.retry_after == 1


async def test_retry_after_is_at_least_one_second(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_user="1/second")
    assert await limiter.admit("acme", config, user="alice", client=None) is None
    clock.advance(0.999)
    refusal = await limiter.admit("acme", config, user="alice", client=None)
    assert refusal is not None
    assert refusal.retry_after == 1


async def test_per_user_limits_are_independent_across_users_and_tenants(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_user="2/minute")
    assert await admitted(limiter, config, 5, user="alice") == 2
    assert await admitted(limiter, config, 5, user="bob") == 2
    # The same user name in another tenant is another person with their own budget.
    for _ in range(2):
        assert await limiter.admit("globex", config, user="alice", client=None) is None
    assert await limiter.admit("globex", config, user="alice", client=None) is not None
    # A user name that looks like a key path does not reach another user's counter.
    assert await admitted(limiter, config, 2, user="alice/2/1/minute") == 2


async def test_per_client_and_per_tenant_limits(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_client="3/minute", per_tenant="5/minute")
    assert await admitted(limiter, config, 4, user="alice", client="cli") == 3
    refusal = await limiter.admit("acme", config, user="bob", client="cli")
    assert refusal is not None
    assert refusal.limit == "per_client"
    # Another client of the same tenant is admitted until the tenant's budget is gone.
    assert await admitted(limiter, config, 4, user="bob", client="web") == 2
    refusal = await limiter.admit("acme", config, user="carol", client="ide")
    assert refusal is not None
    assert refusal.limit == "per_tenant"
    assert "for the tenant" in refusal.detail
    # Another tenant is untouched.
    assert await limiter.admit("globex", config, user="alice", client="cli") is None


async def test_a_limit_without_its_principal_does_not_apply(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_user="1/minute", per_client="1/minute")
    for _ in range(3):
        assert await limiter.admit("acme", config, user=None, client=None) is None


async def test_a_tenant_without_limits_is_never_throttled_and_touches_no_store(clock: Clock) -> None:
    limiter = RateLimiter()
    storage = limiter._primary.storage
    assert isinstance(storage, LocalStorage)
    for config in (TenantConfig(), limits(), (RateLimits(), Quotas(users=1, servers=1, clients=1))):
        for number in range(2000):
            assert await limiter.admit("acme", config, user=f"u{number % 7}", client="c", cost=50) is None
        assert await limiter.admit_tokens("acme", config, user="alice", tokens=10**9) is None
    assert len(storage) == 0


async def test_a_tenant_without_limits_never_reaches_redis(clock: Clock) -> None:
    # Nothing listens on port 1 of loopback: any Redis call would fail and start an outage.
    limiter = RateLimiter("redis://127.0.0.1:1/0")
    try:
        for _ in range(100):
            assert await limiter.admit("acme", TenantConfig(), user="alice", client="c") is None
        assert limiter.shared
    finally:
        await limiter.aclose()


async def test_a_refused_request_consumes_no_other_limit(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_user="3/minute", per_tenant="3/second")
    # Bob fills the tenant's second; Alice's refusals (by the tenant) must not spend her own minute.
    assert await admitted(limiter, config, 3, user="bob") == 3
    for _ in range(5):
        refusal = await limiter.admit("acme", config, user="alice", client=None)
        assert refusal is not None
        assert refusal.limit == "per_tenant"
    clock.advance(2)
    assert await admitted(limiter, config, 4, user="alice") == 3
    # And Alice refused by her own limit spends nothing of the tenant's: Bob still has the tenant's whole second.
    clock.advance(2)
    for _ in range(5):
        refusal = await limiter.admit("acme", config, user="alice", client=None)
        assert refusal is not None
        assert refusal.limit == "per_user"
    assert await admitted(limiter, config, 3, user="dave") == 3


async def test_the_daily_quota_counts_a_utc_day_and_says_so(clock: Clock) -> None:
    clock.now = (START // DAY + 1) * DAY - 100.5  # 100.5 s before 00:00 UTC
    limiter = RateLimiter()
    config = (RateLimits(), Quotas(requests_per_day=3))
    assert await admitted(limiter, config, 5, user="alice") == 3
    refusal = await limiter.admit("acme", config, user="bob", client=None)
    assert refusal is not None
    assert refusal.limit == "requests_per_day"
    assert refusal.retry_after == 101  # until midnight UTC, rounded up
    assert "tenant acme has reached its quota of 3 requests per day (UTC)" in refusal.detail
    clock.advance(100)
    assert await limiter.admit("acme", config, user="bob", client=None) is not None
    clock.advance(1)  # 00:00:00.5 UTC: a new day
    assert await admitted(limiter, config, 5, user="bob") == 3
    # Another tenant's day is its own.
    assert await limiter.admit("globex", config, user="bob", client=None) is None


async def test_requests_refused_by_a_rate_do_not_count_against_the_day(clock: Clock) -> None:
    limiter = RateLimiter()
    config = (RateLimits(per_user="2/second"), Quotas(requests_per_day=4))
    assert await admitted(limiter, config, 10, user="alice") == 2
    clock.advance(1.5)
    assert await admitted(limiter, config, 10, user="alice") == 2
    clock.advance(1.5)
    refusal = await limiter.admit("acme", config, user="alice", client=None)
    assert refusal is not None
    assert refusal.limit == "requests_per_day"


async def test_a_zero_quota_refuses_every_request(clock: Clock) -> None:
    limiter = RateLimiter()
    refusal = await limiter.admit("acme", (RateLimits(), Quotas(requests_per_day=0)), user="a", client=None)
    assert refusal is not None
    assert refusal.limit == "requests_per_day"


async def test_several_rates_in_one_setting_all_hold(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_user="2/second;3/minute")
    assert await admitted(limiter, config, 5) == 2
    clock.advance(1.5)
    assert await admitted(limiter, config, 5) == 1
    clock.advance(1.5)
    refusal = await limiter.admit("acme", config, user="alice", client=None)
    assert refusal is not None
    assert refusal.limit == "per_user"
    assert "3 requests per minute" in refusal.detail
    assert refusal.retry_after == 58  # the first two leave the minute just after +60; it is +3


async def test_cost_counts_several_requests_and_an_impossible_cost_says_so(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(per_user="5/minute")
    assert await limiter.admit("acme", config, user="alice", client=None, cost=3) is None
    assert await limiter.admit("acme", config, user="alice", client=None, cost=3) is not None
    assert await limiter.admit("acme", config, user="alice", client=None, cost=2) is None
    too_many = await limiter.admit("acme", config, user="bob", client=None, cost=6)
    assert too_many is not None
    assert "more than the limit" in too_many.detail
    # The impossible request is not remembered as a refusal: bob's smaller ones still pass.
    assert await limiter.admit("acme", config, user="bob", client=None) is None


async def test_token_rates_count_tokens_per_user_and_per_tenant(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(llm_tokens_per_user="1000/minute", llm_tokens_per_tenant="1500/minute")
    assert await limiter.admit_tokens("acme", config, user="alice", tokens=400) is None
    assert await limiter.admit_tokens("acme", config, user="alice", tokens=400) is None
    refusal = await limiter.admit_tokens("acme", config, user="alice", tokens=400)
    assert refusal is not None
    assert refusal.limit == "llm_tokens_per_user"
    assert refusal.retry_after >= 1
    assert "1000 tokens per minute per user" in refusal.detail
    assert await limiter.admit_tokens("acme", config, user="alice", tokens=200) is None  # refused tokens never counted
    assert await limiter.admit_tokens("acme", config, user="bob", tokens=400) is None
    refusal = await limiter.admit_tokens("acme", config, user="bob", tokens=200)
    assert refusal is not None
    assert refusal.limit == "llm_tokens_per_tenant"
    assert await limiter.admit_tokens("acme", config, user="bob", tokens=0) is None
    too_large = await limiter.admit_tokens("globex", config, user="carol", tokens=1001)
    assert too_large is not None
    assert "1001 tokens, more than the limit of 1000 tokens per minute" in too_large.detail
    # Token rates and request rates are separate budgets, even when written alike.
    both = limits(per_user="1000/minute", llm_tokens_per_user="1000/minute")
    assert await limiter.admit_tokens("initech", both, user="alice", tokens=1000) is None
    assert await limiter.admit("initech", both, user="alice", client=None) is None


async def test_tokens_refused_by_the_tenant_are_taken_back_from_the_user(clock: Clock) -> None:
    limiter = RateLimiter()
    config = limits(llm_tokens_per_user="1000/minute", llm_tokens_per_tenant="1000/minute")
    assert await limiter.admit_tokens("acme", config, user="alice", tokens=700) is None
    refusal = await limiter.admit_tokens("acme", config, user="bob", tokens=600)
    assert refusal is not None
    assert refusal.limit == "llm_tokens_per_tenant"
    # Bob's 600 were counted against his own limit before the tenant's refused them, then taken back: he has his
    # whole 1000 where the tenant's limit is not in the way (the same user limit alone: the same counter).
    user_limit = (RateLimits(llm_tokens_per_user="1000/minute"), Quotas())
    assert await limiter.admit_tokens("acme", user_limit, user="bob", tokens=1000) is None


async def test_a_changed_config_applies_at_once(clock: Clock) -> None:
    limiter = RateLimiter()
    assert await admitted(limiter, limits(per_user="2/minute"), 5) == 2
    # The same values in a new object (the refresher rebuilds configs) are the same limit, still exhausted.
    assert await admitted(limiter, limits(per_user="2/minute"), 5) == 0
    # A new rate is a new limit: the library's keys carry the rate, so it counts from nothing (and a refusal
    # remembered under the old rate does not apply to it).
    assert await admitted(limiter, limits(per_user="4/minute"), 5) == 4
    assert await admitted(limiter, limits(), 5) == 5


async def test_large_limits_use_the_sliding_window_counter(clock: Clock) -> None:
    amount = MOVING_WINDOW_MAX_ENTRIES + 5
    limiter = RateLimiter()
    config = limits(per_tenant=f"{amount}/hour")
    assert await limiter.admit("acme", config, user=None, client=None, cost=amount) is None
    refusal = await limiter.admit("acme", config, user=None, client=None)
    assert refusal is not None
    assert refusal.limit == "per_tenant"
    storage = limiter._primary.storage
    assert isinstance(storage, LocalStorage)
    assert not storage._windows  # no list of 10,005 timestamps


def test_a_redis_url_must_be_redis() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RateLimiter("http://127.0.0.1:6379/0")


# -- property: whatever the sequence of requests, no window ever holds more than the limit ----------------------------

USERS = ("alice", "bob", "carol")
step = st.tuples(
    st.sampled_from([0.0, 0.0, 0.001, 0.25, 1.0, 7.5, 19.999, 20.0, 20.001, 61.0]),  # seconds since the last step
    st.sampled_from(USERS),
    st.integers(min_value=1, max_value=4),  # requests sent at that instant
)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=40),
    per_user=st.integers(min_value=0, max_value=4),
    per_tenant=st.integers(min_value=1, max_value=7),
)
def test_admitted_never_exceeds_a_limit_and_nothing_is_refused_without_cause(
    steps: list[tuple[float, str, int]], per_user: int, per_tenant: int
) -> None:
    window = 20.0
    config = limits(per_user=f"{per_user} per 20 seconds", per_tenant=f"{per_tenant} per 20 seconds")

    def in_window(history: list[float], now: float) -> int:
        return sum(1 for at in history if at >= now - window)

    async def scenario(clock: Clock) -> None:
        limiter = RateLimiter()
        by_user: dict[str, list[float]] = {user: [] for user in USERS}
        tenant: list[float] = []
        for delay, user, burst in steps:
            clock.advance(delay)
            for _ in range(burst):
                # The rule, stated outright: admitted iff both windows have room; a refusal counts nowhere.
                expected = in_window(by_user[user], clock.now) < per_user and in_window(tenant, clock.now) < per_tenant
                refusal = await limiter.admit("acme", config, user=user, client=None)
                assert (refusal is None) == expected
                if refusal is None:
                    by_user[user].append(clock.now)
                    tenant.append(clock.now)
                else:
                    assert 1 <= refusal.retry_after <= window + 1
        # The invariant itself, over every window that ends at an admission.
        for history, limit in [(tenant, per_tenant), *((history, per_user) for history in by_user.values())]:
            for end in history:
                assert sum(1 for at in history if end - window <= at <= end) <= limit

    with frozen() as clock:
        asyncio.run(scenario(clock))


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from([0.0, 1.0, 3_599.5, 7_200.0, 43_200.0, 86_399.0, 86_400.0]), st.integers(1, 5)),
        min_size=1,
        max_size=30,
    ),
    quota=st.integers(min_value=0, max_value=6),
)
def test_the_daily_quota_never_admits_more_than_it_per_utc_day(steps: list[tuple[float, int]], quota: int) -> None:
    config = (RateLimits(), Quotas(requests_per_day=quota))

    async def scenario(clock: Clock) -> None:
        limiter = RateLimiter()
        per_day: dict[int, int] = {}
        for delay, burst in steps:
            clock.advance(delay)
            day = int(clock.now // DAY)
            for _ in range(burst):
                refusal = await limiter.admit("acme", config, user="alice", client=None)
                assert (refusal is None) == (per_day.get(day, 0) < quota)
                if refusal is None:
                    per_day[day] = per_day.get(day, 0) + 1
                else:
                    # Until 00:00 UTC, rounded up: never early, never more than a day.
                    assert refusal.retry_after == math.floor((day + 1) * DAY - clock.now) + 1
        assert all(count <= quota for count in per_day.values())

    with frozen() as clock:
        asyncio.run(scenario(clock))


# -- count quotas -----------------------------------------------------------------------------------------------------


@pytest.fixture
async def tenants(tmp_path: Path) -> AsyncIterator[TenantRepository]:
    database = create_database(f"sqlite:///{tmp_path / 'quotas.db'}")
    await migrate(database)
    for tenant in ("acme", "globex"):
        await ensure_tenant(database, tenant)
    acme = UserRepository(database, "acme")
    for name in ("alice", "bob"):
        await acme.add(name, "not-a-real-hash", ("developer",))
    await UserRepository(database, "globex").add("carol", "not-a-real-hash", ("developer",))
    try:
        yield TenantRepository(database)
    finally:
        await database.dispose()


async def test_count_quotas_refuse_at_the_quota_with_a_clear_message(tenants: TenantRepository) -> None:
    assert await check_can_add(tenants, "acme", Quotas(users=3), "users") is None
    assert (
        await check_can_add(tenants, "acme", Quotas(users=2), "users") == "tenant acme has reached its quota of 2 users"
    )
    # Another tenant's users do not count against this one.
    assert await check_can_add(tenants, "globex", Quotas(users=2), "users") is None
    assert await check_can_add(tenants, "globex", Quotas(users=1), "users") == (
        "tenant globex has reached its quota of 1 user"
    )
    assert await check_can_add(tenants, "acme", Quotas(servers=0), "servers") == (
        "tenant acme has reached its quota of 0 servers"
    )
    assert await check_can_add(tenants, "acme", Quotas(servers=5, clients=1), "clients") is None


async def test_an_unset_count_quota_never_queries() -> None:
    class Unreachable:
        async def counts(self, tenant_id: str) -> dict[str, int]:
            raise AssertionError("an unlimited quota must not count anything")

    for kind in ("users", "clients", "servers"):
        assert await check_can_add(Unreachable(), "acme", Quotas(), kind) is None  # type: ignore[arg-type]


def test_frozen_restores_the_real_clock() -> None:
    with frozen(5.0):
        assert time.time() == 5.0
    assert time.time() > 1_600_000_000


# -- the Redis path without Redis: what is sent, and what is made of odd answers --------------------------------------


def test_the_script_s_arguments_are_the_resp_encoding_of_its_keys_and_values() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", key_prefix="pfx")
    config = (
        RateLimits(per_user="5/minute", per_client="20000/hour", per_tenant="10 per 20 seconds"),
        Quotas(requests_per_day=100),
    )
    plan = limiter._plan("acme", config)
    backend: Any = limiter._primary
    identifiers = ["user/acme/alice", "client/acme/cli", "tenant/acme", "day/acme/20833"]
    targets = list(zip(plan.requests, identifiers, strict=True))
    now = 1_800_000_000.25
    count, arguments = backend.arguments(targets, 3, now)
    user, client, tenant, day = (check.item for check in plan.requests)
    expected = pack(
        b"EVALSHA",
        _SCRIPT_SHA,
        5,
        f"pfx:{user.key_for('user/acme/alice')}",  # the library's key names (RateLimitItem.key_for)
        f"pfx:{{{client.key_for('client/acme/cli')}}}/-1",  # and its sliding window's pair of keys
        f"pfx:{{{client.key_for('client/acme/cli')}}}",
        f"pfx:{tenant.key_for('tenant/acme')}",
        f"pfx:{day.key_for('day/acme/20833')}",
        1_800_000_000_250_000,
        3,
        *(b"m", 5, 60),
        *(b"s", 20000, 3600),
        *(b"m", 10, 20),
        *(b"f", 100, 86_400),
    )
    assert b"*%d\r\n" % (count + 2) + rate_limits._EVALSHA + arguments == expected


class FakePool:
    """Stands for the Redis connection: answers every command with `reply`, or raises it."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.sent = 0

    async def execute_packed(self, payload: bytes) -> Any:
        self.sent += 1
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply

    async def execute(self, *args: Any) -> Any:
        return await self.execute_packed(pack(*args))

    async def aclose(self) -> None:
        pass


def with_fake_pool(limiter: RateLimiter, reply: Any) -> FakePool:
    fake = FakePool(reply)
    limiter._pool = fake  # type: ignore[assignment]
    limiter._primary.pool = fake  # type: ignore[attr-defined]
    return fake


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage",
        [],
        [7],
        [0],
        ["not an int"],
        [1, b"not a time"],
        ProtocolFailure("Redis sent bytes that are not RESP"),
    ],
    ids=["bulk", "empty", "beyond", "zero", "type", "time", "protocol"],
)
async def test_an_answer_the_script_never_gives_is_an_outage_not_an_admission(
    reply: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chamberlain.policy.rate_limits")
    limiter = RateLimiter("redis://127.0.0.1:1/0", probe_interval=30)
    try:
        with_fake_pool(limiter, reply)
        config = limits(per_user="1/minute")
        assert await limiter.admit("acme", config, user="alice", client=None) is None  # counted in memory
        assert not limiter.shared
        assert await limiter.admit("acme", config, user="alice", client=None) is not None
        assert len(caplog.records) == 1
    finally:
        await limiter.aclose()


async def test_a_request_larger_than_a_limit_is_refused_without_a_round_trip() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0")
    try:
        fake = with_fake_pool(limiter, 0)
        refusal = await limiter.admit("acme", limits(per_user="5/minute"), user="alice", client=None, cost=6)
        assert refusal is not None
        assert "more than the limit" in refusal.detail
        zero = await limiter.admit("acme", (RateLimits(), Quotas(requests_per_day=0)), user="alice", client=None)
        assert zero is not None
        assert zero.limit == "requests_per_day"
        assert fake.sent == 0
        assert limiter.shared
    finally:
        await limiter.aclose()


async def test_a_refusal_in_redis_gives_retry_after_from_what_the_script_read(clock: Clock) -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0")
    try:
        moving = limits(per_user="3/minute")
        with_fake_pool(limiter, [1, repr(clock.now - 10.5).encode()])  # the entry that frees the unit, 10.5 s old
        refusal = await limiter.admit("acme", moving, user="alice", client=None)
        assert refusal is not None
        assert refusal.retry_after == 50
        # Remembered until then: the next refusals are decided here, without Redis.
        fake = with_fake_pool(limiter, 0)
        assert await limiter.admit("acme", moving, user="alice", client=None) is not None
        assert fake.sent == 0
        clock.advance(50)
        assert await limiter.admit("acme", moving, user="alice", client=None) is None
        assert fake.sent == 1
        # The sliding window counter: the library's arithmetic on the counts and TTLs (ms) the script read.
        sliding = limits(per_tenant="20000/minute")
        with_fake_pool(limiter, [1, b"12000", b"30000", b"14000", b"90000"])
        refusal = await limiter.admit("acme", sliding, user=None, client=None)
        assert refusal is not None
        assert refusal.retry_after == math.floor(min(30.0 % (60 / 12000), 90.0 % 60)) + 1
        day = (RateLimits(), Quotas(requests_per_day=5))
        with_fake_pool(limiter, [1])
        refusal = await limiter.admit("acme", day, user=None, client=None)
        assert refusal is not None
        assert refusal.retry_after == math.floor((clock.now // DAY + 1) * DAY - clock.now) + 1
    finally:
        await limiter.aclose()


def test_duplicate_rates_in_one_setting_count_once(clock: Clock) -> None:
    limiter = RateLimiter()
    plan = limiter._plan("acme", limits(per_user="2/minute;2/minute;5/hour"))
    assert [repr(check.item) for check in plan.requests] == [repr(parse("2/minute")), repr(parse("5/hour"))]
