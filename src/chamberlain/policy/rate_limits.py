"""Per-tenant rate limits and the daily request quota, counted in process memory or in Redis shared by replicas.

A tenant's `rate_limits` (tenancy/config.py: per_user, per_client, per_tenant in the `limits` notation) and its
`quotas.requests_per_day` are checked for every proxied request by `RateLimiter.admit`; the LLM proxy's token rates
(llm_tokens_per_user, llm_tokens_per_tenant) by `RateLimiter.admit_tokens`. A refusal is a `Throttled`: which limit,
and `retry_after`, the delay-seconds of a `Retry-After` header (RFC 9110 §10.2.3) that the caller sends with 429
(RFC 6585 §4), or with 503 when the shared store is down and the gateway is configured to fail closed.

Strategies (the `limits` library's):
- Request rates use the *moving window*: every admitted request is a timestamp in a list capped at the limit, and a
  request is admitted only while the list holds fewer than the limit within the last window. It is exact: no
  rolling window of the limit's length ever holds more than the limit, whatever the number of processes. The
  *sliding window counter* would keep two counters instead of a list, but it estimates the previous window's share
  by assuming its hits were evenly spread, so a burst at the end of one window and another at the start of the next
  can admit up to twice the limit within one window's length; the acceptance test (two processes, concurrent load,
  total admitted ≤ limit + 1 per process) and users comparing what they were promised with what they got both want
  the exact count. Its cost is memory: one entry per admitted request, so a limit above MOVING_WINDOW_MAX_ENTRIES
  per window falls back to the sliding window counter.
- LLM token rates always use the sliding window counter: a request costs thousands of tokens, and the moving window
  would store one entry per token.
- The daily quota is a fixed window keyed by the UTC day (see DAY below), so it resets at 00:00 UTC for everyone,
  rather than 24 hours after a tenant's first request, which is what a fixed window alone would do.

All or nothing. Several limits apply to one request (user, client, tenant, day): it is admitted only when every one
of them has room, and only then counted in each of them; a refused request counts nowhere. So a user refused by the
tenant's limit spends nothing of their own, one refused by their own limit spends nothing of the tenant's, and only
admitted requests count against the daily quota.
- In Redis, one Lua script per request decides every limit of it (_SCRIPT): it checks them all, in order, and
  returns the first that refuses with what Retry-After needs; only when all admit does it record the request in
  each. Redis runs a script alone, so the check and the record are one atomic step, exact across any number of
  processes. One round trip per request, whatever its number of limits. Before, the library hit each limit with a
  script of its own through redis-py, about 200 µs of the gateway's CPU each on the 2-core bench machine: about
  0.9 ms for a tenant with all four, nearly the whole 1 ms budget of a proxied tools/call (bench/rate_limit_bench.py
  measures that design beside this one in the same run).
- The script keeps the library's layout and the library's rules, operation for operation, for each kind of window:
  the moving window's list of timestamps, newest first (LINDEX at limit - cost, LPUSH, LTRIM to the limit, EXPIRE
  the window); the sliding window counter's two counters `{key}` and `{key}/-1` with millisecond TTLs (the current
  one renamed to the previous when its first window has passed); the fixed window's counter (INCRBY, EXPIRE the
  window when created). Keys are the library's, `RateLimitItem.key_for(identifier)` under "{key_prefix}:". So the
  library's own readers (`get_window_stats`, `test`) answer right on these keys, and a process still hitting them
  with the library's per-limit scripts (a replica not yet upgraded) counts in the same windows. One difference, on
  purpose: the library's fixed window counts a refused hit (INCRBY, then compare); the script compares first.
- In memory (no Redis, or Redis down) the library's strategies run on LocalStorage, limit after limit, and a refusal
  takes back the hits this request already made (LocalStorage.undo; nothing suspends in between, so they are still
  the newest entries): the same outcome, for the price of one hit per limit.
- The script's keys belong to several limits at once, so they must live on one Redis server: Redis Cluster (which
  would need every key of a script in one hash slot) is not supported.

The client is net/resp.py: pipelined asyncio connections parsed by hiredis (one by default), shared by every request
of the process, with the script sent by its SHA-1 (EVALSHA; EVAL once when Redis answers NOSCRIPT, after a restart or
a SCRIPT FLUSH) and its arguments encoded once per limit and key. Measured on the bench machine with 16 requests in
flight: a bare round trip costs about 10 µs of CPU there against 130-190 µs through redis-py's asyncio client (with
or without hiredis as its parser: most of redis-py's cost is outside parsing), because the commands of concurrent
requests share one write and their replies one read; a request with one limit costs about 20 µs, one with all four
about 30 µs (3% of the budget), and Redis itself spends about 50 µs on the four instead of about 210 µs.

A refused limit is remembered in this process until the window frees a unit (its reset time), and requests meeting
it are refused without touching Redis: a client hammering a 429 costs the gateway a dictionary lookup, not a Redis
round trip. The memo only ever refuses, and only until the time Redis itself named, so it never admits beyond a
limit.

In Redis the moving window's entries carry each process's own clock, to the microsecond (the script takes the
caller's time, as the library's does): replicas on several hosts need synchronised clocks (NTP), and a skew of d
seconds shifts the window by d. The sliding window counter runs on Redis's clock (its TTLs), as the library's does.
A changed rate counts afresh: the library's keys carry the rate ("20/1/minute"), so a new rate is a new
counter.

When Redis cannot be reached (or answers the script with an error) the limiter either counts in this process's
memory (the default: each replica then enforces the limits on its own, so N replicas admit up to N times a limit
while it lasts) or, with `rate_limits_fail_closed`, refuses with `Throttled.limit == "unavailable"` (the caller
answers 503). A warning is logged once per outage; a background probe pings Redis every `probe_interval` seconds and
switches back by itself. A request whose script may have run when its connection failed is counted again in memory:
an outage can over-count a request, never under-count one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import time
from collections import deque
from dataclasses import dataclass
from itertools import repeat
from typing import Final, Literal

from limits import RateLimitItem, RateLimitItemPerDay, parse_many
from limits.aio.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import RateLimiter as Strategy
from limits.storage.base import TimestampedSlidingWindow

from chamberlain.net.resp import RedisPool, Reply, RespError, ServerError, bulk, parse_redis_url
from chamberlain.settings import Settings
from chamberlain.tenancy.config import Quotas, RateLimits, TenantConfig

logger = logging.getLogger(__name__)

# A "day" of the requests_per_day quota is a UTC calendar day, [00:00, 24:00) UTC, counted in POSIX time (every day
# is 86,400 s: a leap second does not lengthen it). The window's key carries the day's number, so every replica and
# every tenant agrees on when it starts, and Retry-After on a refusal is the time left until the next 00:00 UTC.
DAY: Final = 86_400
# Above this many requests per window a rate uses the sliding window counter (module docstring): the moving window
# keeps one timestamp per admitted request, in Redis and in memory.
MOVING_WINDOW_MAX_ENTRIES: Final = 10_000
# Refusals remembered per backend; past this, expired entries are dropped (and all of them if none has expired).
MEMO_MAX_ENTRIES: Final = 50_000
UNAVAILABLE: Final = "unavailable"

Scope = Literal["user", "client", "tenant", "day", "llm-user", "llm-tenant"]
StrategyName = Literal["moving", "sliding", "fixed"]
LimitName = Literal[
    "per_user", "per_client", "per_tenant", "requests_per_day", "llm_tokens_per_user", "llm_tokens_per_tenant"
]


@dataclass(frozen=True, slots=True)
class Throttled:
    """A refused request: which limit refused it and when to try again.

    `limit` is the configuration key (per_user, per_client, per_tenant, requests_per_day, llm_tokens_per_user,
    llm_tokens_per_tenant) or "unavailable" when the shared store is down and the gateway fails closed.
    `retry_after` is whole seconds, at least 1: the Retry-After delay-seconds (RFC 9110 §10.2.3).
    `detail` is a sentence for the client; it names only the caller's own limit (and tenant), nothing of others.
    """

    limit: str
    retry_after: int
    detail: str

    @property
    def status_code(self) -> int:
        # RFC 6585 §4: 429 Too Many Requests; RFC 9110 §15.6.4: 503 for a temporary inability to decide.
        return 503 if self.limit == UNAVAILABLE else 429

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# -- what a tenant's configuration compiles to ------------------------------------------------------------------------

# The script's name for each kind of window (one byte each: the script compares them once per limit).
_KIND: Final[dict[StrategyName, bytes]] = {"moving": b"m", "sliding": b"s", "fixed": b"f"}
_MARK: Final = "\x00"  # stands for the identifier when the library's key for an item is split around it


@dataclass(frozen=True, slots=True)
class _Check:
    name: LimitName
    scope: Scope
    item: RateLimitItem
    strategy: StrategyName
    memo_tag: str  # tells this limit's memo entries from other limits' on the same identifier
    refusal: str  # the first part of Throttled.detail
    # The library's key for an identifier is key_head + identifier + key_tail: RateLimitItem.key_for, split once
    # here rather than rebuilt (escaped, joined) on every request.
    key_head: str
    key_tail: str
    spec: bytes  # this limit's arguments to the script, in RESP: kind, amount, window in seconds

    def throttled(self, retry_after: int) -> Throttled:
        return Throttled(self.name, retry_after, f"{self.refusal}; retry after {retry_after} s")


def _check(name: LimitName, scope: Scope, item: RateLimitItem, strategy: StrategyName, refusal: str) -> _Check:
    head, tail = item.key_for(_MARK).split(_MARK)
    spec = bulk(_KIND[strategy]) + bulk(b"%d" % item.amount) + bulk(b"%d" % item.get_expiry())
    return _Check(name, scope, item, strategy, repr(item), refusal, head, tail, spec)


@dataclass(frozen=True, slots=True)
class _Plan:
    requests: tuple[_Check, ...]  # in the order they are checked: user, client, tenant, day
    tokens: tuple[_Check, ...]  # user, tenant


_WHO: Final[dict[Scope, str]] = {
    "user": "per user",
    "client": "per client",
    "tenant": "for the tenant",
    "llm-user": "per user",
    "llm-tenant": "for the tenant",
}


def _rate(item: RateLimitItem, unit: str) -> str:
    per = item.GRANULARITY.name if item.multiples == 1 else f"{item.multiples} {item.GRANULARITY.name}s"
    return f"{item.amount} {unit} per {per}"


def _compile(tenant_id: str, rate_limits: RateLimits, quotas: Quotas) -> _Plan:
    requests: list[_Check] = []
    tokens: list[_Check] = []
    request_limits: tuple[tuple[LimitName, Scope, str | None], ...] = (
        ("per_user", "user", rate_limits.per_user),
        ("per_client", "client", rate_limits.per_client),
        ("per_tenant", "tenant", rate_limits.per_tenant),
    )
    for name, scope, value in request_limits:
        for item in _distinct(parse_many(value) if value else []):
            strategy: StrategyName = "moving" if item.amount <= MOVING_WINDOW_MAX_ENTRIES else "sliding"
            refusal = f"rate limit exceeded: {_rate(item, 'requests')} {_WHO[scope]}"
            requests.append(_check(name, scope, item, strategy, refusal))
    if quotas.requests_per_day is not None:
        item = RateLimitItemPerDay(quotas.requests_per_day)
        refusal = f"tenant {tenant_id} has reached its quota of {quotas.requests_per_day} requests per day (UTC)"
        requests.append(_check("requests_per_day", "day", item, "fixed", refusal))
    token_limits: tuple[tuple[LimitName, Scope, str | None], ...] = (
        ("llm_tokens_per_user", "llm-user", rate_limits.llm_tokens_per_user),
        ("llm_tokens_per_tenant", "llm-tenant", rate_limits.llm_tokens_per_tenant),
    )
    for name, scope, value in token_limits:
        for item in _distinct(parse_many(value) if value else []):
            refusal = f"LLM token rate limit exceeded: {_rate(item, 'tokens')} {_WHO[scope]}"
            tokens.append(_check(name, scope, item, "sliding", refusal))
    return _Plan(tuple(requests), tuple(tokens))


def _distinct(items: list[RateLimitItem]) -> list[RateLimitItem]:
    # "10/minute;10/minute" names one counter twice (the key carries the rate): counted twice, every request would
    # take two units of it.
    seen: set[str] = set()
    kept: list[RateLimitItem] = []
    for item in items:
        key = item.key_for()
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def _retry_after(reset: float, now: float) -> int:
    # Whole seconds, strictly past the reset: the library counts an entry while it is at most the window's length
    # old, so at the reset instant itself the unit is not free yet. Never early is what makes a client that honours
    # Retry-After succeed on its retry.
    return max(1, math.floor(reset - now) + 1)


def _next_day(now: float) -> float:
    return (now // DAY + 1) * DAY  # the next 00:00 UTC (the day quota is the only fixed window)


def _sliding_reset(
    check: _Check, previous_count: int, previous_ttl: float, current_count: int, current_ttl: float, now: float
) -> float:
    """When a sliding window counter next frees a unit: the library's arithmetic (SlidingWindowCounterRateLimiter.
    get_window_stats), on the counts and TTLs (seconds) the script read."""
    expiry = check.item.get_expiry()
    if not (previous_count or current_count):
        return now
    previous_in = previous_ttl % (expiry / previous_count) if previous_count else math.inf
    current_in = current_ttl % expiry if current_count else math.inf
    return now + min(previous_in, current_in)


def _over_limit(check: _Check, cost: int, now: float) -> Throttled:
    """A request larger than the whole limit: no wait helps, so the detail says so and nothing is remembered."""
    item = check.item
    if item.amount == 0:  # a limit of nothing: refused whatever the wait, the window's end is a hint
        return check.throttled(
            _retry_after(_next_day(now) if check.strategy == "fixed" else now + item.get_expiry(), now)
        )
    unit = "tokens" if check.scope.startswith("llm") else "requests"
    detail = f"this request counts as {cost} {unit}, more than the limit of {_rate(item, unit)}"
    return Throttled(check.name, item.get_expiry(), detail)


# -- the per-process store ------------------------------------------------------------------------------------------


class _Counter:
    __slots__ = ("count", "expires")

    def __init__(self, expires: float) -> None:
        self.count = 0
        self.expires = expires


class LocalStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """The `limits` storage interface over plain dicts, for one process (the library's strategies run on it).

    Why not the library's own MemoryStorage: (1) a request refused by a later limit must give back what it took
    from the earlier ones (`undo`), an operation the library's storages do not have; (2) here a moving window is
    trimmed whenever it is met, so it never holds more than its limit, where the library keeps expired entries until
    a sweep; (3) no background work: the library's async version schedules a sweep task after nearly every hit, and
    the sweep hands each key to a worker thread (`asyncio.to_thread`). Measured on the 2-core bench machine, one
    request at a time yielding to the loop in between, a moving-window hit cost about 110 µs of CPU against 2 µs
    here (one key) and 19 µs (1,000 keys); with 16 requests in flight the sweeps are shared among more hits and the
    two come out about even (bench/rate_limit_bench.py prints that case). Expired data is dropped when it is met,
    and a sweep of idle keys runs inline at most every `sweep_interval` seconds. No method awaits anything, so each
    check-and-update runs uninterrupted on the event loop: atomic without locks.
    """

    STORAGE_SCHEME = None  # not registered under a URL scheme: RateLimiter builds it directly

    def __init__(self, sweep_interval: float = 10.0) -> None:
        super().__init__()
        self._counters: dict[str, _Counter] = {}
        # Moving windows: admitted timestamps, oldest first, and when the newest of them expires.
        self._windows: dict[str, deque[float]] = {}
        self._window_expiry: dict[str, float] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = time.time() + sweep_interval

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ()  # nothing here fails for reasons of storage

    def __len__(self) -> int:
        return len(self._counters) + len(self._windows)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        for key in [key for key, counter in self._counters.items() if counter.expires <= now]:
            del self._counters[key]
        for key in [key for key, expires in self._window_expiry.items() if expires < now]:
            del self._window_expiry[key]
            self._windows.pop(key, None)

    # fixed windows (and the sliding window counter's two counters)

    def _live(self, key: str, now: float) -> _Counter | None:
        counter = self._counters.get(key)
        if counter is not None and counter.expires <= now:
            del self._counters[key]
            return None
        return counter

    def _incr(self, key: str, expiry: float, amount: int, now: float) -> int:
        counter = self._live(key, now)
        if counter is None:
            counter = self._counters[key] = _Counter(now + expiry)
        counter.count += amount
        return counter.count

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        self._sweep(now)
        return self._incr(key, expiry, amount, now)

    async def get(self, key: str) -> int:
        counter = self._live(key, time.time())
        return 0 if counter is None else counter.count

    async def get_expiry(self, key: str) -> float:
        now = time.time()
        counter = self._live(key, now)
        return now if counter is None else counter.expires

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self)
        self._counters.clear()
        self._windows.clear()
        self._window_expiry.clear()
        return count

    async def clear(self, key: str) -> None:
        self._counters.pop(key, None)
        self._windows.pop(key, None)
        self._window_expiry.pop(key, None)

    def undo(self, strategy: StrategyName, key: str, expiry: int, amount: int) -> None:
        """Takes back a hit just made on `key` (the limiter's rollback when a later limit refuses the request)."""
        now = time.time()
        if strategy == "moving":
            entries = self._windows.get(key)
            if entries:
                for _ in range(min(amount, len(entries))):
                    entries.pop()
            return
        if strategy == "sliding":
            key = self.sliding_window_keys(key, expiry, now)[1]
        counter = self._live(key, now)
        if counter is not None:
            counter.count = max(0, counter.count - amount)

    # moving window: the same rule as the library's Lua script (an entry counts while it is >= now - expiry)

    def _window(self, key: str, expiry: int, now: float) -> deque[float] | None:
        entries = self._windows.get(key)
        if entries is not None:
            cutoff = now - expiry
            while entries and entries[0] < cutoff:
                entries.popleft()
        return entries

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        self._sweep(now)
        entries = self._window(key, expiry, now)
        if entries is None:
            entries = self._windows[key] = deque()
        if len(entries) + amount > limit:
            return False
        if amount == 1:
            entries.append(now)
        else:
            entries.extend(repeat(now, amount))
        self._window_expiry[key] = now + expiry
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        entries = self._window(key, expiry, now)
        if not entries:
            return now, 0
        return entries[0], len(entries)

    # sliding window counter: the library's arithmetic (its MemoryStorage), with time-aligned window keys

    def _sliding(self, key: str, expiry: int, now: float) -> tuple[int, float, int, float, str]:
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous = self._live(previous_key, now)
        current = self._live(current_key, now)
        previous_count = 0 if previous is None else previous.count
        current_count = 0 if current is None else current.count
        previous_ttl = 0.0 if previous_count == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous_count, previous_ttl, current_count, current_ttl, current_key

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        self._sweep(now)
        previous_count, previous_ttl, current_count, _, current_key = self._sliding(key, expiry, now)
        if math.floor(previous_count * previous_ttl / expiry + current_count) + amount > limit:
            return False
        self._incr(current_key, 2 * expiry, amount, now)
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        previous_count, previous_ttl, current_count, current_ttl, _ = self._sliding(key, expiry, time.time())
        return previous_count, previous_ttl, current_count, current_ttl

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        for window_key in self.sliding_window_keys(key, expiry, time.time()):
            self._counters.pop(window_key, None)


# -- one place limits are counted -----------------------------------------------------------------------------------

# (check, the identifier in its key: "user/{tenant}/{user}", "tenant/{tenant}", "day/{tenant}/{day number}", ...)
# One string rather than several identifiers: the library escapes and joins each identifier on every call.
_Target = tuple[_Check, str]


class _Backend:
    """Where limits are counted, with its memo of refusals (module docstring)."""

    def __init__(self) -> None:
        # (identifier, memo tag) -> the time this limit next frees a unit, as the store said when it refused
        self.memo: dict[tuple[str, str], float] = {}

    async def admit(self, targets: list[_Target], cost: int, now: float) -> Throttled | None:
        raise NotImplementedError

    async def reset(self) -> None:
        self.memo.clear()

    def remembered(self, targets: list[_Target], now: float) -> Throttled | None:
        memo = self.memo
        for check, identifier in targets:
            key = (identifier, check.memo_tag)
            until = memo.get(key)
            if until is not None:
                if until > now:
                    return check.throttled(_retry_after(until, now))
                del memo[key]
        return None

    def refused(self, check: _Check, identifier: str, reset: float, cost: int, now: float) -> Throttled:
        if cost == 1:
            # Remembered only for single units: "no unit free until then" also refuses any larger cost, while a
            # large request's refusal says nothing about a small one.
            memo = self.memo
            if len(memo) >= MEMO_MAX_ENTRIES:
                for stale in [stale for stale, expires in memo.items() if expires <= now]:
                    del memo[stale]
                if len(memo) >= MEMO_MAX_ENTRIES:
                    memo.clear()
            memo[(identifier, check.memo_tag)] = reset
        return check.throttled(_retry_after(reset, now))


class _LocalBackend(_Backend):
    """This process's memory: the library's three strategies over LocalStorage."""

    def __init__(self) -> None:
        super().__init__()
        self.storage = LocalStorage()
        self.strategies: dict[StrategyName, Strategy] = {
            "moving": MovingWindowRateLimiter(self.storage),
            "sliding": SlidingWindowCounterRateLimiter(self.storage),
            "fixed": FixedWindowRateLimiter(self.storage),
        }

    async def admit(self, targets: list[_Target], cost: int, now: float) -> Throttled | None:
        if self.memo:
            remembered = self.remembered(targets, now)
            if remembered is not None:
                return remembered
        strategies = self.strategies
        for position, (check, identifier) in enumerate(targets):
            if not await strategies[check.strategy].hit(check.item, identifier, cost=cost):
                # Nothing awaited since the earlier hits (LocalStorage never suspends), so they are still the newest
                # entries of their windows: taking them back leaves the counts as if this request never came.
                for done, done_identifier in targets[:position]:
                    item = done.item
                    self.storage.undo(done.strategy, item.key_for(done_identifier), item.get_expiry(), cost)
                item = check.item
                if 0 < item.amount < cost:
                    return _over_limit(check, cost, now)
                if check.strategy == "fixed":
                    reset = _next_day(now)
                else:
                    reset = (await strategies[check.strategy].get_window_stats(item, identifier)).reset_time
                return self.refused(check, identifier, reset, cost, now)
        return None

    async def reset(self) -> None:
        await self.storage.reset()
        self.memo.clear()


# The whole decision for one request, in Redis (module docstring). Each kind of window follows the library's own script
# for it (limits/resources/redis/lua_scripts/: acquire_moving_window.lua, acquire_sliding_window.lua, incr_expire.lua)
# on the same keys, split into a check that writes no count and a record that runs only when every check admitted.
_SCRIPT: Final = b"""
-- ARGV[1]: the caller's time in microseconds (an integer); ARGV[2]: the cost;
-- then three per limit: kind ('m' moving window, 's' sliding window counter, 'f' fixed window), amount, window
-- in seconds. KEYS: one per 'm' and 'f' limit, two per 's' limit (the previous counter, then the current one).
-- Returns 0 when every limit admits (the request is then counted in each), else {position of the first limit that
-- refuses, what its reset time needs}: 'm' the entry whose expiry frees the units; 's' the previous count and TTL
-- (ms), the current count and TTL (ms); 'f' nothing.
local now = tonumber(ARGV[1]) / 1000000
local cost = tonumber(ARGV[2])
local limits = (#ARGV - 2) / 3
local absent = {}
local k = 1
for i = 1, limits do
  local kind, amount, expiry = ARGV[3 * i], tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  if cost > amount then
    return {i}
  end
  if kind == 'm' then
    local entry = redis.call('lindex', KEYS[k], amount - cost)
    if entry and tonumber(entry) >= now - expiry then
      return {i, entry}
    end
    k = k + 1
  elseif kind == 's' then
    local previous, current, window = KEYS[k], KEYS[k + 1], expiry * 1000
    local current_ttl = tonumber(redis.call('pttl', current))
    if current_ttl > 0 and current_ttl < window then
      redis.call('rename', current, previous)
      redis.call('set', current, 0, 'PX', current_ttl + window)
    end
    local previous_count = tonumber(redis.call('get', previous)) or 0
    local previous_ttl = tonumber(redis.call('pttl', previous)) or 0
    local current_count = tonumber(redis.call('get', current)) or 0
    current_ttl = tonumber(redis.call('pttl', current)) or 0
    absent[i] = current_ttl == -2
    if previous_ttl < 0 then
      previous_ttl = 0
    end
    if current_ttl < 0 then
      current_ttl = 0
    end
    if math.floor(previous_count * previous_ttl / window) + current_count + cost > amount then
      return {i, tostring(previous_count), tostring(previous_ttl), tostring(current_count), tostring(current_ttl)}
    end
    k = k + 2
  else
    if (tonumber(redis.call('get', KEYS[k])) or 0) + cost > amount then
      return {i}
    end
    k = k + 1
  end
end
k = 1
for i = 1, limits do
  local kind, amount, expiry = ARGV[3 * i], tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  if kind == 'm' then
    if cost == 1 then
      redis.call('lpush', KEYS[k], now)
    else
      local entries = {}
      for j = 1, cost do
        entries[j] = now
      end
      for j = 1, cost, 5000 do
        redis.call('lpush', KEYS[k], unpack(entries, j, math.min(j + 4999, cost)))
      end
    end
    redis.call('ltrim', KEYS[k], 0, amount - 1)
    redis.call('expire', KEYS[k], expiry)
    k = k + 1
  elseif kind == 's' then
    if absent[i] then
      redis.call('set', KEYS[k + 1], cost, 'PX', expiry * 2000)
    else
      redis.call('incrby', KEYS[k + 1], cost)
    end
    k = k + 2
  else
    if redis.call('incrby', KEYS[k], cost) == cost then
      redis.call('expire', KEYS[k], expiry)
    end
    k = k + 1
  end
end
return 0
"""
_SCRIPT_SHA: Final = hashlib.sha1(_SCRIPT).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1 (EVALSHA)
_EVALSHA: Final = bulk(b"EVALSHA") + bulk(_SCRIPT_SHA.encode())
_EVAL: Final = bulk(b"EVAL") + bulk(_SCRIPT)
_ONE: Final = bulk(b"1")
_ENCODED_KEYS: Final = 10_000  # keys whose encoding is remembered (a few hundred bytes each with the dict entry)


class _ScriptReplyError(RespError):
    """The script answered something it never returns: treated as Redis failing (the probe then decides)."""


class _RedisBackend(_Backend):
    """Redis, one script per request (module docstring), under `key_prefix`."""

    def __init__(self, pool: RedisPool, key_prefix: str) -> None:
        super().__init__()
        self.pool = pool
        self.prefix = key_prefix.encode() + b":"  # the library's RedisStorage joins its prefix and its keys with ":"
        # A limit's key (the library's, without the prefix) -> its RESP bulk string(s), prefix included
        self._encoded: dict[str, bytes] = {}

    async def admit(self, targets: list[_Target], cost: int, now: float) -> Throttled | None:
        if self.memo:
            remembered = self.remembered(targets, now)
            if remembered is not None:
                return remembered
        for check, _ in targets:
            if cost > check.item.amount:
                return _over_limit(check, cost, now)  # decided without a round trip
        count, arguments = self.arguments(targets, cost, now)
        reply = await self._run(count, arguments)
        if reply == 0:
            return None
        if (
            not isinstance(reply, list)
            or not reply
            or not isinstance(reply[0], int)
            or not 0 < reply[0] <= len(targets)
        ):
            raise _ScriptReplyError("the rate limit script answered in an unexpected form")
        check, identifier = targets[reply[0] - 1]
        if cost > check.item.amount:
            return _over_limit(check, cost, now)
        try:
            if check.strategy == "moving":
                reset = float(_text(reply[1])) + check.item.get_expiry()
            elif check.strategy == "sliding":
                previous_count, previous_ttl, current_count, current_ttl = (float(_text(v)) for v in reply[1:5])
                reset = _sliding_reset(
                    check, int(previous_count), previous_ttl / 1000, int(current_count), current_ttl / 1000, now
                )
            else:
                reset = _next_day(now)
        except (IndexError, ValueError):
            raise _ScriptReplyError("the rate limit script answered in an unexpected form") from None
        return self.refused(check, identifier, reset, cost, now)

    def arguments(self, targets: list[_Target], cost: int, now: float) -> tuple[int, bytes]:
        """The script's arguments, RESP-encoded (numkeys, KEYS, ARGV), and their number.

        Encoded here, in one join, from parts encoded once: each limit's arguments when its plan is compiled, each
        key the first time it is met (then remembered, up to _ENCODED_KEYS of them). Packing Python values instead
        (float and integer formatting, one bulk string at a time) cost more CPU than all the rest of `admit`.
        """
        encoded = self._encoded
        parts: list[bytes] = [b""]  # the number of keys, known at the end
        specs: list[bytes] = []
        keys = 0
        for check, identifier in targets:
            key = check.key_head + identifier + check.key_tail
            key_parts = encoded.get(key)
            if key_parts is None:
                key_parts = self._encode_keys(check, key)
            parts.append(key_parts)
            specs.append(check.spec)
            keys += 2 if check.strategy == "sliding" else 1
        parts[0] = b"$%d\r\n%d\r\n" % (len(str(keys)), keys)
        # The time in microseconds, an integer: the script divides it (formatting a float costs a microsecond here).
        now_text = b"%d" % int(now * 1_000_000)
        parts.append(b"$%d\r\n%s\r\n" % (len(now_text), now_text))
        parts.append(_ONE if cost == 1 else bulk(b"%d" % cost))
        parts += specs
        return 3 + keys + 3 * len(specs), b"".join(parts)

    def _encode_keys(self, check: _Check, key: str) -> bytes:
        encoded = self._encoded
        if len(encoded) >= _ENCODED_KEYS:
            encoded.clear()  # rare (a busy process meets this many users within its life), and cheap to refill
        raw = key.encode()
        if check.strategy == "sliding":
            # RedisStorage's sliding window keys: "{key}/-1" for the previous window, "{key}" for the current.
            current = self.prefix + b"{" + raw + b"}"
            value = bulk(current + b"/-1") + bulk(current)
        else:
            value = bulk(self.prefix + raw)
        encoded[key] = value
        return value

    async def _run(self, count: int, arguments: bytes) -> Reply:
        try:
            return await self.pool.execute_packed(b"*%d\r\n%s%s" % (count + 2, _EVALSHA, arguments))
        except ServerError as error:
            if error.code != "NOSCRIPT":
                raise
        # Redis restarted or its scripts were flushed: EVAL runs the script and caches it for the EVALSHAs after.
        return await self.pool.execute_packed(b"*%d\r\n%s%s" % (count + 2, _EVAL, arguments))

    async def reset(self) -> None:
        """Deletes every key under the prefix (SCAN, not KEYS: Redis keeps serving others meanwhile)."""
        pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", self.prefix) + b"*"  # the prefix matched literally
        cursor: bytes | int = 0
        while True:
            reply = await self.pool.execute(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", 1000)
            if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], list):
                raise _ScriptReplyError("SCAN answered in an unexpected form")
            cursor = _text(reply[0])
            found = [key for key in reply[1] if isinstance(key, bytes)]
            if found:
                await self.pool.execute(b"DEL", *found)
            if cursor in (b"0", 0):
                break
        self.memo.clear()


def _text(reply: Reply) -> bytes:
    if not isinstance(reply, bytes):
        raise ValueError("a bulk string was expected")
    return reply


# Errors that mean "the shared store cannot answer" (or answered with an error): every one of the client's, and
# belt and braces for anything raised outside it.
_STORAGE_ERRORS: Final = (RespError, OSError, asyncio.TimeoutError)


class RateLimiter:
    """One per process, shared by every tenant: keys carry the tenant id, and each call names the tenant's config.

    `redis_url` None counts in this process's memory; otherwise in Redis under `key_prefix` (keys look like
    "{key_prefix}:LIMITER/user/{tenant}/{user}/20/1/minute"), with per-process memory as the outage fallback.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        key_prefix: str = "chamberlain",
        fail_closed: bool = False,
        probe_interval: float = 1.0,
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
        connections: int = 1,
    ) -> None:
        self._fail_closed = fail_closed
        self._probe_interval = probe_interval
        self._plans: dict[str, tuple[RateLimits, Quotas, _Plan]] = {}
        self._outage = False
        self._probe: asyncio.Task[None] | None = None
        self._pool: RedisPool | None = None
        self._fallback: _LocalBackend | None = None
        self._location = ""
        self._closed = False
        self._primary: _Backend
        if redis_url is None:
            self._primary = _LocalBackend()
            return
        # One pipelined connection by default: every request of the process shares it, and the fewer the sockets
        # the more requests share each write and read (measured: one connection costs the least CPU at every load
        # of the bench). No retries: a request must not wait through a back-off, and a script that may have run
        # must not run twice; the probe does the waiting. The timeouts bound how long requests wait on a Redis that
        # accepts but does not answer; they are generous because a false outage costs more than a slow request
        # (replicas count alone, or every limited request gets 503, for at least a probe interval).
        address = parse_redis_url(redis_url)  # refuses anything but redis://, rediss:// and unix:// first
        self._pool = RedisPool(address, connections=connections, connect_timeout=connect_timeout, timeout=timeout)
        self._location = address.location
        self._primary = _RedisBackend(self._pool, key_prefix)
        self._fallback = _LocalBackend()

    @classmethod
    def from_settings(cls, settings: Settings, *, key_prefix: str = "chamberlain") -> RateLimiter:
        return cls(settings.redis_url, key_prefix=key_prefix, fail_closed=settings.rate_limits_fail_closed)

    @property
    def shared(self) -> bool:
        """True when limits are counted in Redis (and Redis answers): replicas see each other's requests."""
        return self._pool is not None and not self._outage

    # -- the request path ------------------------------------------------------------------------------------------

    async def admit(
        self,
        tenant_id: str,
        config: TenantConfig | tuple[RateLimits, Quotas],
        *,
        user: str | None,
        client: str | None,
        cost: int = 1,
    ) -> Throttled | None:
        """Counts one request (or `cost` of them) against the tenant's request limits and daily quota; None admits.

        A limit whose principal is None (no user, no client) does not apply. A tenant without limits or quota
        returns at once, without touching any store. A refused request is counted in none of them.
        """
        plan = self._plan(tenant_id, config)
        if not plan.requests:
            return None
        now = time.time()
        targets: list[_Target] = []
        for check in plan.requests:
            scope = check.scope
            if scope == "user":
                if user is None:
                    continue
                identifier = f"user/{tenant_id}/{user}"
            elif scope == "client":
                if client is None:
                    continue
                identifier = f"client/{tenant_id}/{client}"
            elif scope == "tenant":
                identifier = f"tenant/{tenant_id}"
            else:
                identifier = f"day/{tenant_id}/{int(now // DAY)}"
            targets.append((check, identifier))
        return await self._admit(targets, cost, now)

    async def admit_tokens(
        self,
        tenant_id: str,
        config: TenantConfig | tuple[RateLimits, Quotas],
        *,
        user: str | None,
        tokens: int,
    ) -> Throttled | None:
        """Counts `tokens` LLM tokens against llm_tokens_per_user and llm_tokens_per_tenant; None admits.

        Refused tokens are not counted. The LLM proxy calls it before forwarding, with the tokens the request may
        use (its input estimate plus max_tokens), and the request itself goes through `admit` as any other.
        """
        plan = self._plan(tenant_id, config)
        if not plan.tokens or tokens <= 0:
            return None
        targets: list[_Target] = []
        for check in plan.tokens:
            if check.scope == "llm-user":
                if user is None:
                    continue
                targets.append((check, f"llm-user/{tenant_id}/{user}"))
            else:
                targets.append((check, f"llm-tenant/{tenant_id}"))
        return await self._admit(targets, tokens, time.time())

    async def _admit(self, targets: list[_Target], cost: int, now: float) -> Throttled | None:
        if not targets:
            return None
        fallback = self._fallback
        if fallback is None:
            return await self._primary.admit(targets, cost, now)
        if self._outage:
            return self._unavailable() if self._fail_closed else await fallback.admit(targets, cost, now)
        try:
            return await self._primary.admit(targets, cost, now)
        except _STORAGE_ERRORS as error:
            self._outage_began(error)
            return self._unavailable() if self._fail_closed else await fallback.admit(targets, cost, time.time())

    def _unavailable(self) -> Throttled:
        retry_after = max(1, math.ceil(self._probe_interval))
        return Throttled(UNAVAILABLE, retry_after, f"rate limiting is unavailable; retry after {retry_after} s")

    def _plan(self, tenant_id: str, config: TenantConfig | tuple[RateLimits, Quotas]) -> _Plan:
        if isinstance(config, TenantConfig):
            rate_limits, quotas = config.rate_limits, config.quotas
        else:
            rate_limits, quotas = config
        known = self._plans.get(tenant_id)
        if known is not None and known[0] is rate_limits and known[1] is quotas:
            return known[2]
        # A config rebuilt with the same values (the refresher) keeps its plan; only a change compiles again.
        if known is not None and known[0] == rate_limits and known[1] == quotas:
            plan = known[2]
        else:
            plan = _compile(tenant_id, rate_limits, quotas)
        self._plans[tenant_id] = (rate_limits, quotas, plan)
        return plan

    # -- outages ---------------------------------------------------------------------------------------------------

    def _outage_began(self, error: BaseException) -> None:
        if self._outage:
            return
        self._outage = True
        if self._closed:
            return  # shutting down: the pool refuses every command, and no probe should outlive the app
        consequence = (
            "requests with rate limits are refused (503)"
            if self._fail_closed
            else "each process counts rate limits on its own"
        )
        if isinstance(error, ServerError):
            # The server's own words may quote the script; its error code says enough.
            logger.warning(
                "Redis for rate limits at %s refused the rate limit script (%s): %s until it answers again",
                self._location,
                error.code,
                consequence,
            )
        else:
            # The client's messages name the location and the failure, never credentials.
            reason = f"{type(error).__name__}: {error}" if isinstance(error, RespError) else type(error).__name__
            logger.warning(
                "Redis for rate limits at %s cannot be reached (%s): %s until it answers again",
                self._location,
                reason,
                consequence,
            )
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_back(), name="rate-limit-redis-probe")

    async def _probe_until_back(self) -> None:
        assert self._pool is not None
        while True:
            await asyncio.sleep(self._probe_interval)
            # A PING through the same pool (its next connection, opened afresh when the last one failed); anything
            # but PONG keeps us probing.
            with contextlib.suppress(Exception):
                pong = await asyncio.wait_for(self._pool.execute(b"PING"), timeout=max(self._probe_interval, 1.0))
                if pong == b"PONG":
                    break
        self._outage = False
        # What this process counted alone is dropped: the next outage starts from nothing, not from stale counts.
        self._fallback = _LocalBackend()
        logger.warning("Redis for rate limits at %s answers again: limits are shared again", self._location)

    async def aclose(self) -> None:
        """Stops the probe and closes the Redis connections (the app's shutdown)."""
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self._pool is not None:
            await self._pool.aclose()

    async def reset(self) -> None:
        """Forgets every count and refusal (tests and `chamberlain` maintenance; not the request path)."""
        await self._primary.reset()
        if self._fallback is not None:
            await self._fallback.reset()
