"""Per-tenant rate limits and the daily request quota, counted in process memory or in Redis shared by replicas.

A tenant's `rate_limits` (tenancy/config.py: per_user, per_client, per_tenant in the `limits` notation) and its
`quotas.requests_per_day` are checked for every proxied request by `RateLimiter.admit`; the LLM proxy's token rates
(llm_tokens_per_user, llm_tokens_per_tenant) by `RateLimiter.admit_tokens`. A refusal is a `Throttled`: which limit,
and `retry_after`, the delay-seconds of a `Retry-After` header (RFC 9110 §10.2.3) that the caller sends with 429
(RFC 6585 §4), or with 503 when the shared store is down and the gateway is configured to fail closed.

Strategies (the `limits` library's):
- Request rates use the *moving window*: every admitted request is a timestamp in a list capped at the limit, and
  one Lua script (Redis) or one uninterrupted step on the event loop (memory) checks and appends. It is exact: no
  rolling window of the limit's length ever holds more than the limit, whatever the number of processes, because
  Redis runs each script alone. The *sliding window counter* would keep two counters instead of a list, but it
  estimates the previous window's share by assuming its hits were evenly spread, so a burst at the end of one
  window and another at the start of the next can admit up to twice the limit within one window's length; the
  acceptance test (two processes, concurrent load, total admitted ≤ limit + 1 per process) and users comparing
  what they were promised with what they got both want the exact count. Its cost is memory: one entry per admitted
  request, so a limit above MOVING_WINDOW_MAX_ENTRIES per window falls back to the sliding window counter.
- LLM token rates always use the sliding window counter: a request costs thousands of tokens, and the moving window
  would store one entry per token.
- The daily quota is a fixed window keyed by the UTC day (see DAY below), so it resets at 00:00 UTC for everyone,
  rather than 24 hours after a tenant's first request, which is what a fixed window alone would do.

Several limits apply to one request (user, client, tenant, day). The library hits each on its own, so a request
refused by a later limit may already have consumed an earlier one. The order (user, client, tenant, day) keeps the
consequences small: a user refused by their own limit consumes nothing of the tenant's or of the daily quota, so one
noisy user cannot spend the tenant's budget; only the daily quota counts nothing but admitted requests. Beyond that:
- in memory, limits are hit in order and a refusal takes back the hits this request already made (LocalStorage.undo;
  nothing suspends in between, so they are still the newest entries): a refused request consumes nothing, for the
  price of one hit per limit (testing every limit first, then hitting, costs twice that);
- in Redis, testing first would double the round trips, and a round trip is the dominant cost (about 0.2 ms of CPU
  with redis-py on the 2-core bench machine, where a whole proxied tools/call is budgeted at 1 ms), so limits are
  hit in order and a refusal stops the sequence: a request refused by the per-tenant limit
  has consumed one unit of its user's and client's limits. A refused limit is remembered in this process until the
  window frees a unit (its reset time), and requests meeting it are refused without touching Redis, so that
  over-count happens once per process each time a unit frees, not on every refused request — and a client
  hammering a 429 costs the gateway a dictionary lookup, not a Redis round trip. The memo only ever refuses, and
  only until the time Redis itself named, so it never admits beyond a limit.

In Redis the moving window's entries carry each process's own clock (the library's script takes the caller's
time): replicas on several hosts need synchronised clocks (NTP), and a skew of d seconds shifts the window by d.
A changed rate counts afresh: the library's keys carry the rate ("20/1/minute"), so a new rate is a new counter.

When Redis cannot be reached the limiter either counts in this process's memory (the default: each replica then
enforces the limits on its own, so N replicas admit up to N times a limit while it lasts) or, with
`rate_limits_fail_closed`, refuses with `Throttled.limit == "unavailable"` (the caller answers 503). A warning is
logged once per outage; a background probe pings Redis every `probe_interval` seconds and switches back by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from limits import RateLimitItem, RateLimitItemPerDay, parse_many
from limits.aio.storage import MovingWindowSupport, RedisStorage, SlidingWindowCounterSupport, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import RateLimiter as Strategy
from limits.errors import StorageError
from limits.storage.base import TimestampedSlidingWindow

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


@dataclass(frozen=True, slots=True)
class _Check:
    name: LimitName
    scope: Scope
    item: RateLimitItem
    strategy: StrategyName
    memo_tag: str  # tells this limit's memo entries from other limits' on the same identifier
    refusal: str  # the first part of Throttled.detail

    def throttled(self, retry_after: int) -> Throttled:
        return Throttled(self.name, retry_after, f"{self.refusal}; retry after {retry_after} s")


@dataclass(frozen=True, slots=True)
class _Plan:
    requests: tuple[_Check, ...]  # in the order they are hit: user, client, tenant, day
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
        for item in parse_many(value) if value else ():
            strategy: StrategyName = "moving" if item.amount <= MOVING_WINDOW_MAX_ENTRIES else "sliding"
            refusal = f"rate limit exceeded: {_rate(item, 'requests')} {_WHO[scope]}"
            requests.append(_Check(name, scope, item, strategy, repr(item), refusal))
    if quotas.requests_per_day is not None:
        item = RateLimitItemPerDay(quotas.requests_per_day)
        refusal = f"tenant {tenant_id} has reached its quota of {quotas.requests_per_day} requests per day (UTC)"
        requests.append(_Check("requests_per_day", "day", item, "fixed", repr(item), refusal))
    token_limits: tuple[tuple[LimitName, Scope, str | None], ...] = (
        ("llm_tokens_per_user", "llm-user", rate_limits.llm_tokens_per_user),
        ("llm_tokens_per_tenant", "llm-tenant", rate_limits.llm_tokens_per_tenant),
    )
    for name, scope, value in token_limits:
        for item in parse_many(value) if value else ():
            refusal = f"LLM token rate limit exceeded: {_rate(item, 'tokens')} {_WHO[scope]}"
            tokens.append(_Check(name, scope, item, "sliding", repr(item), refusal))
    return _Plan(tuple(requests), tuple(tokens))


def _retry_after(reset: float, now: float) -> int:
    # Whole seconds, strictly past the reset: the library counts an entry while it is at most the window's length
    # old, so at the reset instant itself the unit is not free yet. Never early is what makes a client that honours
    # Retry-After succeed on its retry.
    return max(1, math.floor(reset - now) + 1)


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
    """A storage with the three strategies over it, and the memo of refusals (module docstring)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # In memory a refused request's earlier hits are taken back (exact); Redis has no such operation.
        self.local = storage if isinstance(storage, LocalStorage) else None
        self.strategies: dict[StrategyName, Strategy] = {
            "moving": MovingWindowRateLimiter(storage),
            "sliding": SlidingWindowCounterRateLimiter(storage),
            "fixed": FixedWindowRateLimiter(storage),
        }
        # (identifier, memo tag) -> the time this limit next frees a unit, as the storage said when it refused
        self.memo: dict[tuple[str, str], float] = {}

    async def admit(self, targets: list[_Target], cost: int, now: float) -> Throttled | None:
        memo = self.memo
        if memo:
            for check, identifier in targets:
                key = (identifier, check.memo_tag)
                until = memo.get(key)
                if until is not None:
                    if until > now:
                        return check.throttled(_retry_after(until, now))
                    del memo[key]
        strategies = self.strategies
        for position, (check, identifier) in enumerate(targets):
            if not await strategies[check.strategy].hit(check.item, identifier, cost=cost):
                if position and self.local is not None:
                    # Nothing awaited since these hits (LocalStorage never suspends), so they are still the newest
                    # entries of their windows: taking them back leaves the counts as if this request never came.
                    for done, done_identifier in targets[:position]:
                        item = done.item
                        self.local.undo(done.strategy, item.key_for(done_identifier), item.get_expiry(), cost)
                return await self._refused(check, identifier, cost, now)
        return None

    async def _refused(self, check: _Check, identifier: str, cost: int, now: float) -> Throttled:
        item = check.item
        if 0 < item.amount < cost:
            # No wait helps a request larger than the whole limit; the detail says so, the window's length is a hint.
            unit = "tokens" if check.scope.startswith("llm") else "requests"
            detail = f"this request counts as {cost} {unit}, more than the limit of {_rate(item, unit)}"
            return Throttled(check.name, item.get_expiry(), detail)
        if check.strategy == "fixed":
            reset = (now // DAY + 1) * DAY  # the next 00:00 UTC (the day quota is the only fixed window)
        else:
            reset = (await self.strategies[check.strategy].get_window_stats(item, identifier)).reset_time
        if cost == 1:
            # Remembered only for single units: "no unit free until then" also refuses any larger cost, while a
            # large request's refusal says nothing about a small one.
            self._remember((identifier, check.memo_tag), reset, now)
        return check.throttled(_retry_after(reset, now))

    def _remember(self, key: tuple[str, str], until: float, now: float) -> None:
        memo = self.memo
        if len(memo) >= MEMO_MAX_ENTRIES:
            for stale in [stale for stale, expires in memo.items() if expires <= now]:
                del memo[stale]
            if len(memo) >= MEMO_MAX_ENTRIES:
                memo.clear()
        memo[key] = until


# Errors that mean "the shared store cannot answer": the storage wraps the client's own (wrap_exceptions=True); the
# others are belt and braces for anything raised outside the wrapped calls.
_STORAGE_ERRORS: Final = (StorageError, OSError, asyncio.TimeoutError)


def _redis_storage_url(redis_url: str) -> str:
    scheme = urlsplit(redis_url).scheme
    if scheme in ("redis", "rediss"):
        return "async+" + redis_url
    if scheme in ("async+redis", "async+rediss"):
        return redis_url
    raise ValueError(f"redis_url must be a redis:// or rediss:// URL, not {scheme or 'a bare'}:// one")


def _location(redis_url: str) -> str:
    """Host and port only: the URL may carry a password, which never reaches a log."""
    parts = urlsplit(redis_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname or '?'}:{port or 6379}"


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
        max_connections: int = 32,
    ) -> None:
        self._fail_closed = fail_closed
        self._probe_interval = probe_interval
        self._plans: dict[str, tuple[RateLimits, Quotas, _Plan]] = {}
        self._outage = False
        self._probe: asyncio.Task[None] | None = None
        self._redis: RedisStorage | None = None
        self._pool: Any = None  # redis-py's BlockingConnectionPool, when counting in Redis
        self._fallback: _Backend | None = None
        self._location = ""
        if redis_url is None:
            self._primary = _Backend(LocalStorage())
            return
        # redis-py's client is the cheaper of the two the library drives (about 30% less CPU per call than coredis,
        # measured here). A bounded pool that makes callers wait for a free connection: without a bound, a burst of
        # N concurrent requests opens N connections at once (each a connect and a handshake), and on a busy machine
        # the last of them take long enough to be taken for an outage. No retries: a request must not wait through a
        # back-off; the probe does the waiting. The timeouts bound how long requests wait on a Redis that accepts
        # but does not answer; they are generous because a false outage costs more than a slow request (replicas
        # count alone, or every limited request gets 503, for at least a probe interval).
        storage_url = _redis_storage_url(redis_url)  # refuses anything but redis:// and rediss:// first
        from redis.asyncio import BlockingConnectionPool
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._pool = BlockingConnectionPool.from_url(
            storage_url.removeprefix("async+"),
            max_connections=max_connections,
            timeout=timeout,  # waiting for a free connection
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        options: dict[str, Any] = {"connection_pool": self._pool}
        self._redis = RedisStorage(
            storage_url,
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix=key_prefix,
            **options,
        )
        self._location = _location(redis_url)
        self._primary = _Backend(self._redis)
        self._fallback = _Backend(LocalStorage())

    @classmethod
    def from_settings(cls, settings: Settings, *, key_prefix: str = "chamberlain") -> RateLimiter:
        return cls(settings.redis_url, key_prefix=key_prefix, fail_closed=settings.rate_limits_fail_closed)

    @property
    def shared(self) -> bool:
        """True when limits are counted in Redis (and Redis answers): replicas see each other's requests."""
        return self._redis is not None and not self._outage

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
        returns at once, without touching any store.
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
        cause = error.storage_error if isinstance(error, StorageError) else error
        logger.warning(
            "Redis for rate limits at %s cannot be reached (%s): %s until it answers again",
            self._location,
            type(cause).__name__,
            "requests with rate limits are refused (503)"
            if self._fail_closed
            else "each process counts rate limits on its own",
        )
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_back(), name="rate-limit-redis-probe")

    async def _probe_until_back(self) -> None:
        assert self._redis is not None
        while True:
            await asyncio.sleep(self._probe_interval)
            # check() is a PING that returns False on any failure of the client; anything else keeps us probing.
            with contextlib.suppress(Exception):
                if await asyncio.wait_for(self._redis.check(), timeout=max(self._probe_interval, 1.0)):
                    break
        self._outage = False
        # What this process counted alone is dropped: the next outage starts from nothing, not from stale counts.
        self._fallback = _Backend(LocalStorage())
        logger.warning("Redis for rate limits at %s answers again: limits are shared again", self._location)

    async def aclose(self) -> None:
        """Stops the probe and closes the Redis connections (the app's shutdown)."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        if self._pool is not None:
            # The client was given this pool, so closing the client would leave it open: close the pool itself.
            with contextlib.suppress(Exception):
                await self._pool.disconnect()

    async def reset(self) -> None:
        """Forgets every count and refusal (tests and `chamberlain` maintenance; not the request path)."""
        await self._primary.storage.reset()
        self._primary.memo.clear()
        if self._fallback is not None:
            await self._fallback.storage.reset()
            self._fallback.memo.clear()
