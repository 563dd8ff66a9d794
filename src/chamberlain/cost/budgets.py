"""Budgets: spend limits per user, team and tenant per UTC day, week or month, held before a request is forwarded.

Configuration (a tenant's `budgets:`, a list of `BudgetRule`), and the roles' `budget.monthly_usd`
(`RoleProfile.monthly_budget_usd`), which is one more per-user monthly hard limit. A rule of scope `user` or `team`
without a `name` gives every user (every team) a budget of its own; with a name it is that one's only.

Enforcement (`BudgetGuard`). Before forwarding, the proxy reserves an upper bound of the request's cost (input
estimate plus `max_tokens` at the output price, `Pricing.estimate`) against every budget that applies; the request
goes ahead only when, for each of them, spent + reserved + estimate ≤ limit, and then the estimate is held on each
(cost/spend.py: all or nothing, one event-loop step in memory, one Lua script in Redis). After the response, the
reservation is settled to the actual cost (what was metered, also for a stream cut off or a failed request: zero
releases it). Concurrent requests therefore never overspend: a budget admitting ten estimates admits ten, whatever
the number of processes sharing Redis. Only costs nobody reserved can pass a limit: a request costing more than its
estimate (none does while the estimate is an upper bound) and telemetry, which reports spend after the fact. A hold
its process never settles (a crash) lapses after `hold_seconds`. While Redis is unreachable each process counts in
its own memory (from the usage store), so N replicas may admit up to N times a budget's remainder, unless the guard
fails closed (`rate_limits_fail_closed`, shared with the rate limiter); Redis is tried again every `retry_interval`.

Spend comes from two places: settlements (proxied requests) and usage records of source "telemetry" (Claude Code's
own metrics, telemetry/otlp.py), which the guard receives as a UsageRecorder listener. Proxied records are not
counted again from the recorder. A counter's starting point for a period is the usage store's sum for that period,
read the first time a process (memory) or any replica (Redis) needs it.

Refusals, in Anthropic's error format, chosen for how Claude Code treats them:
- the budget is spent, or this request's upper bound does not fit in what is left: 400 `invalid_request_error`,
  "… You will regain access on 2026-08-01 at 00:00 UTC." That is what the Anthropic API itself answers when an
  organisation's spend limit is reached (see anthropics/claude-code issues #2127, #38038), and Claude Code shows it
  verbatim and does not retry: nothing changes until the period ends, so a 429 (`rate_limit_error`), which Claude
  Code and the SDKs retry with backoff up to ten times, would only repeat the refusal. `x-should-retry: false` tells
  the Stainless-generated SDKs the same; `retry-after` carries the seconds until the period ends, for scripts.
- the budget has room but requests in flight hold it: 429 `rate_limit_error` with a short retry-after: that one does
  pass, as those requests settle.
- Redis is down and the guard fails closed: 503 `api_error`, retryable.
Messages name the budget (the caller's own user, team or tenant), its period and its limit; never what anyone spent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.cost.alerts import BudgetAlert
from chamberlain.cost.spend import (
    AlertSpec,
    Counter,
    CounterStore,
    Crossing,
    Hold,
    MemoryCounters,
    MissingCounters,
    Period,
    RedisCounters,
    Refused,
    Scope,
)
from chamberlain.gateway.server_config import VaultReference
from chamberlain.net.hosts import check_off_machine_url
from chamberlain.net.resp import RedisPool, RespError, ServerError, parse_redis_url
from chamberlain.net.webhooks import AuditSink

if TYPE_CHECKING:
    from chamberlain.settings import Settings

logger = logging.getLogger(__name__)

MICROS: Final = Decimal(1_000_000)
_MAX_LIMIT_USD: Final = Decimal(1_000_000_000)  # 10¹⁵ µUSD: exact in the Redis script's numbers
BUSY_RETRY_AFTER: Final = 2  # seconds: in-flight requests settle within a response's time
_ADJECTIVE: Final[dict[Period, str]] = {"day": "daily", "week": "weekly", "month": "monthly"}


# -- configuration --------------------------------------------------------------------------------------------------


def webhook_url(url: str) -> str:
    # The alert is signed, not encrypted: it leaves the machine only over TLS.
    return check_off_machine_url(url)


class BudgetRule(BaseModel):
    """One budget: `limit_usd` per `period` for a scope; `alert_at` fractions of it alert once per period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Scope
    name: str | None = Field(None, min_length=1, max_length=200, description="the user id or team; none: each one")
    period: Period = "month"
    limit_usd: Decimal = Field(ge=0, le=_MAX_LIMIT_USD, allow_inf_nan=False)
    alert_at: tuple[float, ...] = (0.5, 0.8, 1.0)
    webhook: Annotated[str, AfterValidator(webhook_url)] | None = None
    webhook_secret: VaultReference | None = Field(None, description="SOURCE/NAME: a whsec_ secret in the vault")

    @field_validator("alert_at")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < fraction <= 1 for fraction in value):
            raise ValueError("each threshold is a fraction of the limit, above 0 and at most 1")
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.scope == "tenant" and self.name is not None:
            raise ValueError("a tenant budget has no name (it is the tenant's)")
        if (self.webhook is None) != (self.webhook_secret is None):
            raise ValueError("a webhook needs a webhook_secret to sign its alerts, and a secret needs a webhook")
        return self

    @cached_property
    def tag(self) -> str:
        """Names the rule in counters' alert marks: a changed limit or period is a new rule, alerting afresh."""
        canonical = json.dumps([self.scope, self.name, self.period, str(self.limit_usd)], separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -- periods --------------------------------------------------------------------------------------------------------


def period_bounds(period: Period, at: float) -> tuple[str, datetime, datetime]:
    """The UTC calendar period holding `at`: its name, start and end (weeks are ISO weeks, from Monday)."""
    # Floor division of the POSIX time, not datetime.fromtimestamp, which rounds to the microsecond: a moment half a
    # microsecond before midnight would land in the next day's period.
    day = _EPOCH + timedelta(days=int(at // _DAY))
    if period == "day":
        start, end, name = day, day + timedelta(days=1), day.isoformat()
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        end, name = start + timedelta(days=7), f"{year}-W{week:02d}"
    else:
        start = day.replace(day=1)
        end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
        name = f"{start.year}-{start.month:02d}"
    return name, _midnight(start), _midnight(end)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


_EPOCH: Final = date(1970, 1, 1)
_DAY: Final = 86_400  # POSIX days: every period starts at a UTC midnight, so a period is fixed by its day
_CACHED_COUNTERS: Final = 50_000
_counters: dict[tuple[str, Scope, str | None, Period, int], Counter] = {}


@lru_cache(maxsize=1024)
def _window(period: Period, day: int) -> tuple[str, float, float]:
    name, start, end = period_bounds(period, day * _DAY)
    return name, start.timestamp(), end.timestamp()


def counter_for(tenant: str, scope: Scope, subject: str | None, period: Period, at: float) -> Counter:
    """The counter of `at`'s period. Remembered: the request path asks for the same few counters again and again."""
    day = int(at // _DAY)
    key = (tenant, scope, subject, period, day)
    counter = _counters.get(key)
    if counter is None:
        if len(_counters) >= _CACHED_COUNTERS:
            _counters.clear()
        name, start, end = _window(period, day)
        counter = _counters[key] = Counter(tenant, scope, subject, period, name, start, end)
    return counter


# -- amounts --------------------------------------------------------------------------------------------------------


def micros_up(usd: Decimal) -> int:
    return int((usd * MICROS).to_integral_value(rounding=ROUND_CEILING))


def micros_down(usd: Decimal) -> int:
    return int((usd * MICROS).to_integral_value(rounding=ROUND_FLOOR))


def usd(micros: int) -> Decimal:
    return Decimal(micros) / MICROS


def _shown(amount: Decimal) -> str:
    # Cents, or four places for amounts below a dollar (one request's estimate is often a few cents).
    places = Decimal("0.01") if amount >= 1 else Decimal("0.0001")
    return str(amount.quantize(places, rounding=ROUND_CEILING))


# -- refusals -------------------------------------------------------------------------------------------------------

ErrorType = Literal["invalid_request_error", "rate_limit_error", "api_error"]
Reason = Literal["exhausted", "too_large", "busy", "unavailable"]


@dataclass(frozen=True, slots=True)
class BudgetExceeded:
    """A request the guard did not admit, as the proxy answers it (Anthropic's error format, the module docstring
    says which status when). `scope`, `period`, `limit_usd` and `resets_at` name the budget that refused; they are
    None for "unavailable" (Redis down, failing closed)."""

    status: int
    error_type: ErrorType
    message: str
    retry_after: int  # seconds, at least 1 (RFC 9110 §10.2.3 delay-seconds): until the period ends, or a moment
    retryable: bool
    reason: Reason
    scope: Scope | None = None
    period: Period | None = None
    limit_usd: Decimal | None = None
    resets_at: datetime | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after), "x-should-retry": "true" if self.retryable else "false"}

    def body(self, request_id: str | None = None) -> bytes:
        document: dict[str, Any] = {"type": "error", "error": {"type": self.error_type, "message": self.message}}
        if request_id is not None:
            document["request_id"] = request_id
        return json.dumps(document, separators=(",", ":")).encode()


# -- reservations ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Check:
    counter: Counter
    limit: int  # µUSD
    rule: BudgetRule | None  # None: the roles' monthly budget


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `reserve` held; give it back to `settle` exactly once (a second settle releases nothing twice)."""

    id: str
    tenant: str
    user: str | None
    team: str | None
    at: float
    estimate: int  # µUSD
    held: tuple[Counter, ...]
    rules: tuple[BudgetRule, ...]
    store: CounterStore | None = field(repr=False, compare=False)  # where the hold is; None: nothing held


class SpendSource(Protocol):
    """What a scope spent in a period, from the usage store (cost/records.py UsageRecord rows, both sources)."""

    async def spend(
        self, tenant: str, scope: Scope, subject: str | None, start: datetime, end: datetime
    ) -> Decimal: ...


class _Record(Protocol):
    """The fields of a UsageRecord (cost/records.py) the guard reads."""

    @property
    def tenant(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def team(self) -> str | None: ...
    @property
    def cost_usd(self) -> Decimal: ...
    @property
    def at(self) -> datetime: ...
    @property
    def source(self) -> str: ...


class AlertSink(Protocol):
    def submit(self, alert: BudgetAlert) -> None: ...


_STORAGE_ERRORS: Final = (RespError, OSError, asyncio.TimeoutError)


class BudgetGuard:
    """One per process, shared by every tenant. Counts in this process's memory, or in Redis shared by replicas
    with this process's memory as the outage fallback (unless `fail_closed`)."""

    def __init__(
        self,
        spend_source: SpendSource,
        *,
        redis_url: str | None = None,
        key_prefix: str = "chamberlain",
        fail_closed: bool = False,
        alerts: AlertSink | None = None,
        audit: AuditSink | None = None,
        rules_of: Callable[[str], Sequence[BudgetRule]] | None = None,
        hold_seconds: float = 1800.0,
        retry_interval: float = 1.0,
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
    ) -> None:
        self._source = spend_source
        self._alerts = alerts
        self._audit = audit
        self._rules_of = rules_of
        self._hold_seconds = hold_seconds
        self._fail_closed = fail_closed
        self._retry_interval = retry_interval
        self._memory = MemoryCounters()
        self._redis: RedisCounters | None = None
        self._location = ""
        self._outage_until = 0.0  # while now is before this, Redis is not tried
        self._outage_logged = False
        self._loading: dict[str, asyncio.Future[int]] = {}  # counter key -> its spend being read from the store
        self._charges: set[asyncio.Task[None]] = set()
        if redis_url is not None:
            address = parse_redis_url(redis_url)  # refuses anything but redis://, rediss:// and unix:// first
            self._location = address.location
            pool = RedisPool(address, connect_timeout=connect_timeout, timeout=timeout)
            self._redis = RedisCounters(pool, key_prefix)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        spend_source: SpendSource,
        *,
        alerts: AlertSink | None = None,
        audit: AuditSink | None = None,
        rules_of: Callable[[str], Sequence[BudgetRule]] | None = None,
        key_prefix: str = "chamberlain",
    ) -> BudgetGuard:
        return cls(
            spend_source,
            redis_url=settings.redis_url,
            key_prefix=key_prefix,
            fail_closed=settings.rate_limits_fail_closed,
            alerts=alerts,
            audit=audit,
            rules_of=rules_of,
        )

    @property
    def shared(self) -> bool:
        """True when budgets are counted in Redis (and Redis answers): replicas see each other's spend."""
        return self._redis is not None and self._outage_until <= time.time()

    # -- the request path ----------------------------------------------------------------------------------------

    async def reserve(
        self,
        tenant: str,
        rules: Sequence[BudgetRule],
        *,
        user: str | None,
        team: str | None,
        estimate_usd: Decimal,
        profile_limit: Decimal | float | None = None,
        client_id: str | None = None,
        request_id: str | None = None,
    ) -> Reservation | BudgetExceeded:
        """Holds `estimate_usd` on every budget that applies, or refuses (and records the refusal in the audit log).

        `profile_limit` is the caller's RoleProfile.monthly_budget_usd. A request no budget applies to is admitted
        without touching any store."""
        now = time.time()
        checks = _checks(tenant, rules, user, team, profile_limit, now)
        hold = Hold(os.urandom(12).hex(), micros_up(estimate_usd), now + self._hold_seconds)
        rules = tuple(rules)
        if not checks:
            return Reservation(hold.id, tenant, user, team, now, hold.amount, (), rules, None)
        # One limit per counter (the smallest), each counter once: a rule and the roles' budget may share one.
        limits: dict[str, _Check] = {}
        for check in checks:
            known = limits.get(check.counter.key)
            if known is None or check.limit < known.limit:
                limits[check.counter.key] = check
        ordered = list(limits.values())
        store = self._store(now)
        if store is None:
            return self._unavailable()
        try:
            refused = await self._reserve(store, ordered, hold, now)
        except _STORAGE_ERRORS as error:
            self._outage_began(error)
            if self._fail_closed:
                return self._unavailable()
            store = self._memory
            refused = await self._reserve(store, ordered, hold, now)
        if refused is None:
            held = tuple(check.counter for check in ordered)
            return Reservation(hold.id, tenant, user, team, now, hold.amount, held, rules, store)
        check = ordered[refused.position]
        refusal = _refusal(check, refused, hold.amount, team, now)
        if self._audit is not None:
            self._audit.record(_refusal_event(tenant, user, client_id, request_id, check, refusal))
        return refusal

    async def settle(self, reservation: Reservation, actual_usd: Decimal) -> None:
        """Releases the hold and counts `actual_usd` (what was metered; zero when nothing was used). Never raises:
        call it off the request path, also for cut-off and failed requests."""
        rules = reservation.rules
        await self._count(
            reservation.store,
            reservation.tenant,
            reservation.user,
            reservation.team,
            reservation.at,
            micros_up(max(actual_usd, Decimal(0))),
            reservation.id,
            reservation.held,
            rules,
        )

    def record_listener(self, record: _Record) -> None:
        """A UsageRecorder listener: counts telemetry records (proxied requests are counted by `settle`)."""
        if record.source != "telemetry" or record.cost_usd <= 0:
            return
        rules = tuple(self._rules_of(record.tenant)) if self._rules_of is not None else ()
        at = record.at.timestamp()
        task = asyncio.get_running_loop().create_task(
            self._count(None, record.tenant, record.user, record.team, at, micros_up(record.cost_usd), None, (), rules)
        )
        self._charges.add(task)
        task.add_done_callback(self._charges.discard)

    async def drained(self) -> None:
        """Waits for the telemetry charges under way (tests, shutdown)."""
        while self._charges:
            await asyncio.gather(*list(self._charges), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drained()
        if self._redis is not None:
            await self._redis.aclose()

    # -- internals -----------------------------------------------------------------------------------------------

    def _store(self, now: float) -> CounterStore | None:
        """Redis unless it failed within the retry interval; then memory, or None when failing closed."""
        if self._redis is None:
            return self._memory
        if now >= self._outage_until:
            return self._redis
        return None if self._fail_closed else self._memory

    async def _reserve(self, store: CounterStore, checks: list[_Check], hold: Hold, now: float) -> Refused | None:
        limits = [(check.counter, check.limit) for check in checks]
        for _ in range(3):  # a counter may expire between its initialisation and the reserve: rare, so few tries
            try:
                refused = await store.reserve(limits, hold, now)
            except MissingCounters as missing:
                await self._initialise(store, missing.counters)
                continue
            if store is self._redis:
                self._outage_recovered()
            return refused
        raise ServerError("ERR budget counters vanished while being initialised")

    async def _initialise(self, store: CounterStore, counters: list[Counter]) -> None:
        """Reads each counter's spend so far from the usage store (one read per counter at a time) and creates it."""
        spends = await asyncio.gather(*(self._spent(counter) for counter in counters))
        await store.initialise(list(zip(counters, spends, strict=True)))

    async def _spent(self, counter: Counter) -> int:
        loading = self._loading.get(counter.key)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._loading[counter.key] = future
        try:
            start, end = (datetime.fromtimestamp(moment, UTC) for moment in (counter.start, counter.end))
            spent = micros_up(await self._source.spend(counter.tenant, counter.scope, counter.subject, start, end))
            future.set_result(spent)
            return spent
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: a failure nobody else awaited is not reported as lost
            raise
        finally:
            del self._loading[counter.key]

    async def _count(
        self,
        store: CounterStore | None,
        tenant: str,
        user: str | None,
        team: str | None,
        at: float,
        amount: int,
        hold_id: str | None,
        held: tuple[Counter, ...],
        rules: tuple[BudgetRule, ...],
    ) -> None:
        """Adds `amount` to every counter of the user, team and tenant that exists, releasing the hold (in `store`,
        where it was placed; else the spend goes where counting happens now), and sends the alerts this crosses.
        Never raises."""
        spend = _spend_counters(tenant, user, team, at, rules)
        if store is None:
            store = self._store(time.time()) or self._memory
        try:
            try:
                crossings = await store.settle(hold_id, held, amount, spend)
            except _STORAGE_ERRORS as error:
                if store is not self._redis:
                    raise
                self._outage_began(error)
                # The hold stays in Redis until its deadline; this process's own counters still see the spend.
                crossings = await self._memory.settle(None, (), amount, spend)
        except Exception:
            logger.exception("budget spend of tenant %r could not be counted", tenant)
            return
        if self._alerts is not None:
            for crossing in crossings:
                self._alerts.submit(_alert(crossing, rules))

    def _unavailable(self) -> BudgetExceeded:
        retry_after = max(1, math.ceil(self._retry_interval))
        message = "Budgets cannot be checked right now; try again shortly."
        return BudgetExceeded(503, "api_error", message, retry_after, True, "unavailable")

    def _outage_began(self, error: BaseException) -> None:
        self._outage_until = time.time() + self._retry_interval
        if self._outage_logged:
            return
        self._outage_logged = True
        consequence = "requests with budgets are refused (503)" if self._fail_closed else "each process counts alone"
        reason = error.code if isinstance(error, ServerError) else type(error).__name__
        logger.warning(
            "Redis for budgets at %s failed (%s): %s until it answers again", self._location, reason, consequence
        )

    def _outage_recovered(self) -> None:
        if self._outage_logged:
            self._outage_logged = False
            # What this process counted alone is dropped: the next outage starts from the usage store again.
            self._memory = MemoryCounters()
            logger.warning("Redis for budgets at %s answers again: budgets are shared again", self._location)


def _checks(
    tenant: str,
    rules: Sequence[BudgetRule],
    user: str | None,
    team: str | None,
    profile_limit: Decimal | float | None,
    now: float,
) -> list[_Check]:
    checks: list[_Check] = []
    for rule in rules:
        subject = _subject(rule, tenant, user, team)
        if subject is not None:
            counter = counter_for(tenant, rule.scope, subject or None, rule.period, now)
            checks.append(_Check(counter, micros_down(rule.limit_usd), rule))
    if profile_limit is not None and user is not None:
        limit = micros_down(Decimal(str(profile_limit)))
        checks.append(_Check(counter_for(tenant, "user", user, "month", now), limit, None))
    return checks


def _subject(rule: BudgetRule, tenant: str, user: str | None, team: str | None) -> str | None:
    """Whose counter the rule checks for this caller: "" for the tenant's, None when the rule does not apply."""
    if rule.scope == "tenant":
        return ""
    who = user if rule.scope == "user" else team
    if who is None or (rule.name is not None and rule.name != who):
        return None
    return who


def _spend_counters(
    tenant: str, user: str | None, team: str | None, at: float, rules: tuple[BudgetRule, ...]
) -> list[tuple[Counter, list[AlertSpec]]]:
    """Every counter a cost counts in (the user's, the team's and the tenant's, each per day, week and month), with
    the alert thresholds of the rules checking it."""
    specs = _alert_specs(rules) if rules else {}
    spend: list[tuple[Counter, list[AlertSpec]]] = []
    subjects: list[tuple[Scope, str | None]] = [("tenant", None)]
    if user is not None:
        subjects.append(("user", user))
    if team is not None:
        subjects.append(("team", team))
    for scope, subject in subjects:
        for period in _PERIODS:
            counter = counter_for(tenant, scope, subject, period, at)
            named = specs.get((scope, period), ())
            spend.append((counter, [spec for name, spec in named if name is None or name == subject]))
    return spend


_PERIODS: Final[tuple[Period, ...]] = ("day", "week", "month")


@lru_cache(maxsize=256)
def _alert_specs(rules: tuple[BudgetRule, ...]) -> dict[tuple[Scope, Period], list[tuple[str | None, AlertSpec]]]:
    """The alert thresholds of a tenant's rules, by the counters they watch (computed once per rules tuple: the
    tenant's config keeps the same one until it changes)."""
    specs: dict[tuple[Scope, Period], list[tuple[str | None, AlertSpec]]] = {}
    for rule in rules:
        if rule.alert_at:
            thresholds = tuple(micros_up(rule.limit_usd * Decimal(str(fraction))) for fraction in rule.alert_at)
            specs.setdefault((rule.scope, rule.period), []).append((rule.name, AlertSpec(rule.tag, thresholds)))
    return specs


def _who(check: _Check, team: str | None) -> str:
    scope = check.counter.scope
    if check.rule is None:
        return "you under your roles"
    if scope == "user":
        return "you"
    if scope == "team":
        return f"your team '{team}'"
    return f"your organisation ('{check.counter.tenant}')"


def _refusal(check: _Check, refused: Refused, estimate: int, team: str | None, now: float) -> BudgetExceeded:
    counter = check.counter
    limit = usd(check.limit)
    resets = datetime.fromtimestamp(counter.end, UTC)
    until_reset = max(1, math.ceil(counter.end - now))
    budget = f"the {_ADJECTIVE[counter.period]} budget of USD {_shown(limit)} for {_who(check, team)}"
    regain = f"You will regain access on {resets:%Y-%m-%d} at 00:00 UTC."

    def refused_with(status: int, kind: ErrorType, message: str, retry_after: int, reason: Reason) -> BudgetExceeded:
        retryable = reason == "busy"
        return BudgetExceeded(
            status, kind, message, retry_after, retryable, reason, counter.scope, counter.period, limit, resets
        )

    if refused.spent + estimate <= check.limit:
        message = f"Requests in progress hold what is left of {budget}; try again in a few seconds."
        return refused_with(429, "rate_limit_error", message, BUSY_RETRY_AFTER, "busy")
    if refused.spent >= check.limit:
        return refused_with(
            400, "invalid_request_error", f"You have reached {budget}. {regain}", until_reset, "exhausted"
        )
    message = (
        f"This request could cost up to USD {_shown(usd(estimate))}, more than is left of {budget}: lower max_tokens "
        f"or shorten the request. The budget renews on {resets:%Y-%m-%d} at 00:00 UTC."
    )
    return refused_with(400, "invalid_request_error", message, until_reset, "too_large")


def _refusal_event(
    tenant: str, user: str | None, client_id: str | None, request_id: str | None, check: _Check, refusal: BudgetExceeded
) -> AuditEvent:
    actor = Actor("user", user) if user else Actor("client", client_id) if client_id else Actor("system", "unknown")
    counter = check.counter
    return AuditEvent(
        action=Action.BUDGET_REFUSED,
        outcome="denied",
        tenant=tenant,
        actor=actor,
        target=f"budget:{counter.scope}:{counter.subject or tenant}",
        reason=refusal.reason,
        request_id=request_id,
        details={
            "period": counter.period,
            "window": counter.window,
            "limit_usd": str(refusal.limit_usd),
            "source": "roles" if check.rule is None else "rule",
            "status": refusal.status,
        },
        subject=user,
    )


def _alert(crossing: Crossing, rules: tuple[BudgetRule, ...]) -> BudgetAlert:
    rule = next(rule for rule in rules if rule.tag == crossing.tag)
    counter = crossing.counter
    return BudgetAlert(
        tenant=counter.tenant,
        scope=counter.scope,
        subject=counter.subject,
        period=counter.period,
        period_start=counter.start,
        period_end=counter.end,
        limit_usd=rule.limit_usd,
        threshold=rule.alert_at[crossing.index],
        spent_usd=usd(crossing.spent),
        webhook=rule.webhook,
        webhook_secret=rule.webhook_secret,
    )


__all__ = [
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetRule",
    "Reservation",
    "SpendSource",
]
