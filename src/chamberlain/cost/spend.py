"""Spend counters for budgets: what each scope has spent in a period and what requests in flight hold, in process
memory or in Redis shared by replicas.

A counter is one (tenant, scope, subject, period instance): the user `u` in July 2026, the team `t` in ISO week
2026-W31, the tenant on 2026-07-29. It knows nothing of limits: a reservation brings its limits (several rules can
share one counter), a settlement the alert thresholds to test. Amounts are whole micro-dollars (10⁻⁶ USD): integers
stay exact in Redis (HINCRBY) and in its Lua numbers (doubles, exact to 2⁵³ µUSD, about nine billion dollars per
counter); estimates are rounded up and limits down, so rounding never admits more than a limit.

Holds. A reservation is a *hold* on each of its counters: an id, an amount and a deadline. A counter's `reserved` is
the sum of its live holds; settling removes the hold (idempotent: a second settle finds nothing to release) and adds
the actual cost to `spent`. A hold whose process died before settling lapses at its deadline (purged the next time
the counter is checked), so a crashed replica blocks at most its in-flight estimates, and only until then.

Atomicity. Memory: every operation here is synchronous, so a check and the holds it places run without the event loop
switching to another request (the caller awaits only *before*, to load counters). Redis: one Lua script per
reserve, per settle and per initialisation; Redis runs a script alone, so a check and its holds are one step for all
replicas. Counters are created by `initialise` from the usage store's sum for the period (HSETNX: when two replicas
race, the first value stays) and expire a day after their period ends. Spend reported for a counter that does not
exist is dropped: the usage store has it and the counter will start from there.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import quote

from chamberlain.net.resp import RedisPool, Reply, RespError, ServerError, pack

Scope = Literal["user", "team", "tenant"]
Period = Literal["day", "week", "month"]

GRACE_SECONDS: Final = 86_400  # a counter outlives its period by this much, for settlements of requests spanning it


@dataclass(frozen=True, slots=True)
class Counter:
    tenant: str
    scope: Scope
    subject: str | None  # the user id or team name; None for the tenant
    period: Period
    window: str  # the period instance: "2026-07-29", "2026-W31" or "2026-07" (distinct forms: no clashes)
    start: float  # POSIX seconds, inclusive
    end: float  # exclusive
    key: str = field(init=False, compare=False)  # names the counter in memory and in Redis

    def __post_init__(self) -> None:
        # Quoted: a user id or team name may hold the separator.
        key = f"{self.tenant}/{self.scope}/{quote(self.subject or '', safe='')}/{self.window}"
        object.__setattr__(self, "key", key)


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """Soft thresholds of one rule on one counter: `tag` names the rule (an alert fires once per tag, threshold and
    counter), `thresholds` are the spend amounts in µUSD, ascending."""

    tag: str
    thresholds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold that this settlement's spend crossed first: counter, the spec's tag, the threshold's index."""

    counter: Counter
    tag: str
    index: int
    spent: int  # µUSD


@dataclass(frozen=True, slots=True)
class Refused:
    """The first counter (by position in the request) whose limit the estimate does not fit in."""

    position: int
    spent: int
    reserved: int


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    amount: int  # µUSD
    deadline: float  # POSIX seconds


class MissingCounters(Exception):
    """Raised by `reserve` before it places anything: these counters must be initialised first."""

    def __init__(self, counters: list[Counter]) -> None:
        super().__init__(f"{len(counters)} budget counter(s) to initialise")
        self.counters = counters


class CounterStore:
    """The interface both stores implement."""

    async def initialise(self, counters: Sequence[tuple[Counter, int]]) -> None:
        """Creates each counter with its spend so far (µUSD), unless it exists already."""
        raise NotImplementedError

    async def reserve(self, limits: Sequence[tuple[Counter, int]], hold: Hold, now: float) -> Refused | None:
        """Places `hold` on every counter when spent + reserved + hold fits under each limit; else places none.
        MissingCounters when a counter does not exist (the caller initialises it and tries again)."""
        raise NotImplementedError

    async def settle(
        self,
        hold_id: str | None,
        held: Sequence[Counter],
        amount: int,
        spend: Sequence[tuple[Counter, Sequence[AlertSpec]]],
    ) -> list[Crossing]:
        """Releases the hold from the counters in `held`, adds `amount` to every existing counter in `spend` and
        returns the thresholds crossed for the first time."""
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


# -- process memory -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    spent: int
    expires: float
    reserved: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (amount, deadline)
    next_deadline: float = float("inf")
    alerted: set[tuple[str, int]] = field(default_factory=set)

    def purge(self, now: float) -> None:
        if self.next_deadline > now:
            return
        self.holds = {key: hold for key, hold in self.holds.items() if hold[1] > now}
        self.reserved = sum(amount for amount, _ in self.holds.values())
        self.next_deadline = min((deadline for _, deadline in self.holds.values()), default=float("inf"))


class MemoryCounters(CounterStore):
    """One process's counters. No method suspends between reading and writing a tally."""

    def __init__(self, sweep_interval: float = 600.0) -> None:
        self._tallies: dict[str, _Tally] = {}
        self._sweep_interval = sweep_interval
        self._next_sweep = time.time() + sweep_interval

    def __len__(self) -> int:
        return len(self._tallies)

    async def initialise(self, counters: Sequence[tuple[Counter, int]]) -> None:
        for counter, spent in counters:
            self._tallies.setdefault(counter.key, _Tally(spent, counter.end + GRACE_SECONDS))

    async def reserve(self, limits: Sequence[tuple[Counter, int]], hold: Hold, now: float) -> Refused | None:
        self._sweep(now)
        missing = [counter for counter, _ in limits if counter.key not in self._tallies]
        if missing:
            raise MissingCounters(missing)
        tallies: list[_Tally] = []
        for position, (counter, limit) in enumerate(limits):
            tally = self._tallies[counter.key]
            tally.purge(now)
            if tally.spent + tally.reserved + hold.amount > limit:
                return Refused(position, tally.spent, tally.reserved)
            tallies.append(tally)
        for tally in tallies:
            tally.reserved += hold.amount
            tally.holds[hold.id] = (hold.amount, hold.deadline)
            tally.next_deadline = min(tally.next_deadline, hold.deadline)
        return None

    async def settle(
        self,
        hold_id: str | None,
        held: Sequence[Counter],
        amount: int,
        spend: Sequence[tuple[Counter, Sequence[AlertSpec]]],
    ) -> list[Crossing]:
        if hold_id is not None:
            for counter in held:
                tally = self._tallies.get(counter.key)
                released = None if tally is None else tally.holds.pop(hold_id, None)
                if tally is not None and released is not None:
                    tally.reserved -= released[0]
        crossed: list[Crossing] = []
        for counter, specs in spend:
            tally = self._tallies.get(counter.key)
            if tally is None:
                continue
            tally.spent += amount
            for spec in specs:
                for index, threshold in enumerate(spec.thresholds):
                    if tally.spent >= threshold and (spec.tag, index) not in tally.alerted:
                        tally.alerted.add((spec.tag, index))
                        crossed.append(Crossing(counter, spec.tag, index, tally.spent))
        return crossed

    def _sweep(self, now: float) -> None:
        # Counters of periods long gone are dropped (their spend is in the usage store anyway).
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        for key in [key for key, tally in self._tallies.items() if tally.expires <= now]:
            del self._tallies[key]


# -- Redis -----------------------------------------------------------------------------------------------------------

# A counter is one hash: `s` spent, `r` reserved (the sum of the live holds), `n` the earliest hold deadline (ms),
# `h:{id}` one hold as "{amount}:{deadline ms}", `a:{tag}:{index}` an alert already fired. Amounts travel as the
# decimal strings the caller sent (Lua's tostring would print 15-digit numbers in exponent form) and are formatted
# with %d where the script computes them.
_PURGE: Final = """
local function purge(key, now)
  local fields = redis.call('hgetall', key)
  local held, earliest = 0, nil
  for j = 1, #fields, 2 do
    local name = fields[j]
    if string.sub(name, 1, 2) == 'h:' then
      local value = fields[j + 1]
      local sep = string.find(value, ':', 1, true)
      local due = tonumber(string.sub(value, sep + 1))
      if due <= now then
        redis.call('hdel', key, name)
      else
        held = held + tonumber(string.sub(value, 1, sep - 1))
        if earliest == nil or due < earliest then earliest = due end
      end
    end
  end
  redis.call('hset', key, 'r', string.format('%d', held))
  if earliest then redis.call('hset', key, 'n', string.format('%d', earliest)) else redis.call('hdel', key, 'n') end
end
"""

# KEYS: the counters. ARGV: now (ms), the hold's deadline (ms), its id, its amount, then one limit per counter.
# Returns {1, positions...} when counters are missing, {2, position, spent, reserved} when one refuses, 0 when held.
_RESERVE: Final = (
    _PURGE
    + """
local now, deadline, id, amount = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local missing = {}
for i = 1, #KEYS do
  if redis.call('exists', KEYS[i]) == 0 then missing[#missing + 1] = i end
end
if #missing > 0 then
  table.insert(missing, 1, 1)
  return missing
end
for i = 1, #KEYS do
  local key = KEYS[i]
  local earliest = tonumber(redis.call('hget', key, 'n'))
  if earliest and earliest <= now then purge(key, now) end
  local spent = tonumber(redis.call('hget', key, 's')) or 0
  local held = tonumber(redis.call('hget', key, 'r')) or 0
  if spent + held + tonumber(amount) > tonumber(ARGV[4 + i]) then
    return {2, i, spent, held}
  end
end
for i = 1, #KEYS do
  local key = KEYS[i]
  redis.call('hincrby', key, 'r', amount)
  redis.call('hset', key, 'h:' .. id, amount .. ':' .. deadline)
  local earliest = tonumber(redis.call('hget', key, 'n'))
  if earliest == nil or tonumber(deadline) < earliest then redis.call('hset', key, 'n', deadline) end
end
return 0
"""
)

# KEYS: the counters to create. ARGV: per counter its spend so far and when it expires (POSIX seconds).
_INITIALISE: Final = """
for i = 1, #KEYS do
  if redis.call('hsetnx', KEYS[i], 's', ARGV[2 * i - 1]) == 1 then
    redis.call('expireat', KEYS[i], ARGV[2 * i])
  end
end
return 0
"""

# KEYS: the counters holding the hold, then the counters to add spend to. ARGV: the hold's id ("" for none), the
# amount, the number of held counters; then per spend counter: its number of specs, and per spec its tag, its number
# of thresholds and the thresholds. Returns the crossings, flat: spend position, spec position, threshold position,
# spent.
_SETTLE: Final = """
local id, amount, held = ARGV[1], ARGV[2], tonumber(ARGV[3])
if id ~= '' then
  for i = 1, held do
    local hold = redis.call('hget', KEYS[i], 'h:' .. id)
    if hold then
      redis.call('hdel', KEYS[i], 'h:' .. id)
      redis.call('hincrby', KEYS[i], 'r', '-' .. string.sub(hold, 1, string.find(hold, ':', 1, true) - 1))
    end
  end
end
local crossed = {}
local a = 4
for k = held + 1, #KEYS do
  local key = KEYS[k]
  local exists = redis.call('exists', key) == 1
  local spent = 0
  if exists then spent = redis.call('hincrby', key, 's', amount) end
  local specs = tonumber(ARGV[a])
  a = a + 1
  for s = 1, specs do
    local tag, count = ARGV[a], tonumber(ARGV[a + 1])
    a = a + 2
    for t = 1, count do
      if exists and spent >= tonumber(ARGV[a]) and redis.call('hsetnx', key, 'a:' .. tag .. ':' .. t, 1) == 1 then
        crossed[#crossed + 1] = k - held
        crossed[#crossed + 1] = s
        crossed[#crossed + 1] = t
        crossed[#crossed + 1] = spent
      end
      a = a + 1
    end
  end
end
return crossed
"""


class ScriptReplyError(RespError):
    """A script answered in a form it never uses: treated as Redis failing."""


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1 (EVALSHA)

    async def run(self, pool: RedisPool, keys: Sequence[bytes], args: Sequence[bytes | str | int]) -> Reply:
        try:
            return await pool.execute_packed(pack(b"EVALSHA", self.sha, len(keys), *keys, *args))
        except ServerError as error:
            if error.code != "NOSCRIPT":
                raise
        # After a restart or SCRIPT FLUSH: EVAL runs it and caches it for the EVALSHAs after.
        return await pool.execute_packed(pack(b"EVAL", self.source, len(keys), *keys, *args))


class RedisCounters(CounterStore):
    """Counters in Redis under "{prefix}:budget:", shared by every replica; one script per operation."""

    _reserve = _Script(_RESERVE)
    _initialise = _Script(_INITIALISE)
    _settle = _Script(_SETTLE)

    def __init__(self, pool: RedisPool, key_prefix: str) -> None:
        self.pool = pool
        self._prefix = key_prefix + ":budget:"

    def redis_key(self, counter: Counter) -> bytes:
        return (self._prefix + counter.key).encode()

    async def initialise(self, counters: Sequence[tuple[Counter, int]]) -> None:
        if not counters:
            return
        args: list[bytes | str | int] = []
        for counter, spent in counters:
            args += [spent, int(counter.end) + GRACE_SECONDS]
        await self._initialise.run(self.pool, [self.redis_key(counter) for counter, _ in counters], args)

    async def reserve(self, limits: Sequence[tuple[Counter, int]], hold: Hold, now: float) -> Refused | None:
        keys = [self.redis_key(counter) for counter, _ in limits]
        args: list[bytes | str | int] = [int(now * 1000), int(hold.deadline * 1000), hold.id, hold.amount]
        args += [limit for _, limit in limits]
        reply = await self._reserve.run(self.pool, keys, args)
        if reply == 0:
            return None
        numbers = _integers(reply)
        if numbers and numbers[0] == 1 and len(numbers) > 1:
            raise MissingCounters([limits[position - 1][0] for position in numbers[1:]])
        if numbers and numbers[0] == 2 and len(numbers) == 4:
            return Refused(numbers[1] - 1, numbers[2], numbers[3])
        raise ScriptReplyError("the budget reserve script answered in an unexpected form")

    async def settle(
        self,
        hold_id: str | None,
        held: Sequence[Counter],
        amount: int,
        spend: Sequence[tuple[Counter, Sequence[AlertSpec]]],
    ) -> list[Crossing]:
        keys = [self.redis_key(counter) for counter in held] + [self.redis_key(counter) for counter, _ in spend]
        args: list[bytes | str | int] = [hold_id or "", amount, len(held)]
        for _, specs in spend:
            args.append(len(specs))
            for spec in specs:
                args += [spec.tag, len(spec.thresholds), *spec.thresholds]
        reply = await self._settle.run(self.pool, keys, args)
        numbers = _integers(reply)
        if numbers is None or len(numbers) % 4:
            raise ScriptReplyError("the budget settle script answered in an unexpected form")
        crossed: list[Crossing] = []
        for offset in range(0, len(numbers), 4):
            position, spec_position, index, spent = numbers[offset : offset + 4]
            counter, specs = spend[position - 1]
            crossed.append(Crossing(counter, specs[spec_position - 1].tag, index - 1, spent))
        return crossed

    async def aclose(self) -> None:
        await self.pool.aclose()


def _integers(reply: Reply) -> list[int] | None:
    if isinstance(reply, list) and all(isinstance(item, int) for item in reply):
        return [item for item in reply if isinstance(item, int)]
    return None
