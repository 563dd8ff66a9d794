"""`/readyz`: whether this replica can serve, i.e. its store answers, its schema is current and Redis answers.

A load balancer (or a Kubernetes readiness probe) stops sending traffic to a replica that answers 503 here and
resumes when it answers 200; liveness (`/healthz`) stays a constant answer, so a store outage takes replicas out
of rotation without the kubelet restarting them (restarting would not bring the store back).

Each probe is bounded by `timeout` so a store that accepts connections but never answers cannot hold probe requests
open. The migration check reads the schema's revision and the code's head (Alembic parses every migration script
for the latter): its answer is kept for `migrations_ttl` seconds, since migrations change only when an operator
runs `chamberlain migrate`. The body names which dependency failed and how in a few words (the exception's type),
never a URL, host name or message that could carry credentials.

Graceful shutdown: from SIGTERM on, the replica is draining and /readyz answers 503 at once, without probing. With a
drain delay, the signal reaches uvicorn only that many seconds later, so a load balancer that polls /readyz (rather
than Kubernetes, whose preStop pause does the same) stops sending while the replica still serves; then uvicorn
stops accepting, lets in-flight requests and streams finish (bounded by its `timeout_graceful_shutdown`) and the
lifespan's shutdown flushes the queued audit events and usage records (AppState.close).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chamberlain.net.resp import RedisPool, parse_redis_url
from chamberlain.store.database import Database, pending_migrations

_SELECT_ONE: Final = text("SELECT 1")


@dataclass(frozen=True, slots=True)
class Report:
    checks: dict[str, str]  # dependency -> "ok" or why not, e.g. "timeout", "OSError", "pending migrations"

    @property
    def ready(self) -> bool:
        return all(state == "ok" for state in self.checks.values())


@dataclass
class Readiness:
    """Probes the store (and Redis when `redis_url` is set). One per process, shared by every probe request."""

    database: Database
    redis_url: str | None = None
    timeout: float = 1.0
    migrations_ttl: float = 10.0
    report_ttl: float = 1.0
    _redis: RedisPool | None = field(default=None, init=False)
    _migrations: tuple[float, str] | None = field(default=None, init=False)  # (checked at, answer)
    _last: tuple[float, Report] | None = field(default=None, init=False)
    draining: bool = field(default=False, init=False)  # set at SIGTERM: never ready again

    def __post_init__(self) -> None:
        if self.redis_url is not None:
            # A connection of its own, not the rate limiter's: a probe must not queue behind (or break the pipeline
            # of) the requests' commands, and it must see Redis itself, not the limiter's outage memory. One idle
            # connection per replica; it opens on the first probe and again after a failure (net/resp.py).
            self._redis = RedisPool(parse_redis_url(self.redis_url), connect_timeout=self.timeout, timeout=self.timeout)

    async def check(self) -> Report:
        """The dependencies' states, probed at most once per `report_ttl`: /readyz is reachable by anyone who can
        reach the port, and a flood of probes must not become a flood of store queries."""
        if self.draining:
            return _DRAINING
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.report_ttl:
            return self._last[1]
        checks = {"store": await self._bounded(self._store)}
        if checks["store"] == "ok":
            checks["migrations"] = await self._bounded(self._current_schema)
        if self._redis is not None:
            checks["redis"] = await self._bounded(self._ping)
        report = Report(checks)
        self._last = (now, report)
        return report

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def _bounded(self, probe: Callable[[], Awaitable[str]]) -> str:
        try:
            return await asyncio.wait_for(probe(), self.timeout)
        except TimeoutError:
            return "timeout"
        except Exception as failure:  # any failure is "not ready"; its type says enough, its message may not be safe
            return type(failure).__name__

    async def _store(self) -> str:
        async with self.database.connect() as connection:
            await connection.scalar(_SELECT_ONE)
        return "ok"

    async def _current_schema(self) -> str:
        now = time.monotonic()
        if self._migrations is not None and now - self._migrations[0] < self.migrations_ttl:
            return self._migrations[1]
        answer = "pending migrations" if await pending_migrations(self.database) else "ok"
        self._migrations = (now, answer)
        return answer

    async def _ping(self) -> str:
        assert self._redis is not None
        reply = await self._redis.execute(b"PING")
        return "ok" if reply == b"PONG" else "unexpected reply"


_DRAINING: Final = Report({"shutdown": "draining"})


def drain_on_sigterm(readiness: Readiness, delay: float = 0.0) -> Callable[[], None]:
    """Marks `readiness` draining at SIGTERM, then hands the signal to the handler installed before (uvicorn's,
    which starts its graceful shutdown) after `delay` seconds; a second SIGTERM hands it over at once. Returns the
    function that puts the previous handler back. Does nothing off the main thread (signals are delivered there) or
    when no Python handler was installed (no server to hand the signal to)."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        return lambda: None
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        first = not readiness.draining
        readiness.draining = True
        if first and delay > 0:
            # A signal handler runs between two bytecodes of the loop's thread: schedule through the thread-safe
            # entry (it wakes the loop), not call_later directly.
            loop.call_soon_threadsafe(loop.call_later, delay, previous, signum, None)
        else:
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore


async def readyz(request: Request) -> Response:
    """GET /readyz: 200 when every dependency answers, else 503 naming the ones that did not."""
    readiness: Readiness = request.state.readiness  # lifespan state (app.py)
    report = await readiness.check()
    return JSONResponse(
        {"status": "ready" if report.ready else "not ready", "checks": report.checks},
        200 if report.ready else 503,
        headers={"Cache-Control": "no-store"},
    )
