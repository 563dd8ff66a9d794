"""Streaming the audit log to one sink: at-least-once, in chain order, surviving the sink's outages.

Each sink has a cursor per tenant in `audit_sink_cursors`: the first event it has not received. The shipper reads
the events after it, sends them as one batch, and moves the cursor only once the sink took the batch. When the
sink fails, the cursor stays, and the same events are sent again after a back-off that doubles up to
`max_backoff`. A crash between delivery and the cursor's update sends a batch twice; every message carries the
event id, so a SIEM can drop the duplicates. Nothing is lost while the events are kept (see retention): events
purged before their sink came back are skipped, since their content no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from chamberlain.audit.export.settings import SinkSettings
from chamberlain.audit.export.sinks import Sink, SinkError, build_sink
from chamberlain.audit.privacy import SubjectKeys
from chamberlain.audit.reader import read_events, tenants_with_events
from chamberlain.store.database import Database
from chamberlain.store.schema import audit_sink_cursors

logger = logging.getLogger(__name__)
TENANTS_REFRESH = 60.0  # seconds between looking for new tenants: that query scans the log's index


@dataclass
class ShipperStatus:
    delivered: int = 0  # events the sink accepted since start
    failures: int = 0  # consecutive failed attempts; 0 once a batch got through
    last_error: str | None = None  # safe to show: names no secret


class Shipper:
    """Ships one sink's events from a background task (`start`, `aclose`); `ship_pending` does one pass."""

    def __init__(
        self,
        database: Database,
        settings: SinkSettings,
        sink: Sink,
        *,
        subject_keys: SubjectKeys | None = None,
        poll_interval: float = 1.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self._database = database
        self._settings = settings
        self._sink = sink
        # Personal fields are decrypted for the sinks configured to receive them, and for no other.
        self._subject_keys = subject_keys if settings.include_personal else None
        self._poll_interval = poll_interval
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._tenants: list[str] = []
        self._tenants_read_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.status = ShipperStatus()

    @classmethod
    def from_settings(
        cls, database: Database, settings: SinkSettings, subject_keys: SubjectKeys | None = None
    ) -> Shipper:
        """Raises SinkConfigurationError when the sink cannot be built (a missing secret)."""
        return cls(database, settings, build_sink(settings), subject_keys=subject_keys)

    @property
    def name(self) -> str:
        return self._settings.cursor_name

    async def start(self) -> None:
        self._task = asyncio.create_task(self._ship_forever(), name=f"audit-shipper-{self.name}")

    async def aclose(self) -> None:
        # Both the flag and the cancellation: Python 3.11's wait_for can swallow a cancellation that arrives as
        # what it waits for completes, and the loop would then go on.
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._sink.aclose()

    async def ship_pending(self) -> int:
        """Sends every event past the cursors, batch by batch. Returns how many; raises when a batch failed."""
        shipped = 0
        for tenant in await self._known_tenants():
            while not self._closing.is_set():
                cursor = await load_cursor(self._database, self.name, tenant)
                events = await read_events(
                    self._database,
                    tenant,
                    from_seq=cursor,
                    limit=self._settings.batch_size,
                    subject_keys=self._subject_keys,
                )
                if not events:
                    break
                deliverable = [event for event in events if not event.purged]
                if deliverable:
                    await self._sink.send(deliverable)
                await advance_cursor(self._database, self.name, tenant, events[-1].seq + 1)
                shipped += len(deliverable)
                self.status.delivered += len(deliverable)
                if len(events) < self._settings.batch_size:
                    break
        return shipped

    async def _ship_forever(self) -> None:
        while not self._closing.is_set():
            try:
                await self.ship_pending()
            except Exception as problem:  # the sink or the store is down: keep the cursor and try again later
                self.status.failures += 1
                self.status.last_error = str(problem) if isinstance(problem, SinkError) else type(problem).__name__
                delay = backoff(self.status.failures, self._initial_backoff, self._max_backoff)
                logger.warning("audit sink %s: %s; retrying in %.1f s", self.name, self.status.last_error, delay)
                await self._pause(delay)
                continue
            if self.status.failures:
                logger.info("audit sink %s is delivering again", self.name)
            self.status.failures = 0
            self.status.last_error = None
            await self._pause(self._poll_interval)

    async def _pause(self, seconds: float) -> None:
        """Sleeps for `seconds`, or until the shipper is closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _known_tenants(self) -> list[str]:
        now = time.monotonic()
        if not self._tenants or now - self._tenants_read_at >= TENANTS_REFRESH:
            self._tenants = await tenants_with_events(self._database)
            self._tenants_read_at = now
        return self._tenants


def backoff(failures: int, initial: float, maximum: float) -> float:
    """Seconds to wait after the n-th consecutive failure: doubling from `initial`, never above `maximum`."""
    return min(maximum, initial * 2.0 ** min(failures - 1, 64))  # the exponent bounded: an outage may be long


async def load_cursor(database: Database, sink: str, tenant: str) -> int:
    """The seq of the first event `sink` has not received (0 for a sink that never received one)."""
    async with database.connect() as connection:
        next_seq = await connection.scalar(
            select(audit_sink_cursors.c.next_seq).where(
                audit_sink_cursors.c.sink == sink, audit_sink_cursors.c.tenant_id == tenant
            )
        )
    return int(next_seq) if next_seq is not None else 0


async def advance_cursor(database: Database, sink: str, tenant: str, next_seq: int) -> None:
    """Moves the cursor forward, never back: two processes shipping the same sink only ever duplicate."""
    where = (audit_sink_cursors.c.sink == sink, audit_sink_cursors.c.tenant_id == tenant)
    async with database.begin() as connection:
        moved = await connection.execute(
            update(audit_sink_cursors).where(*where, audit_sink_cursors.c.next_seq < next_seq).values(next_seq=next_seq)
        )
        if moved.rowcount == 0 and await connection.scalar(select(audit_sink_cursors.c.next_seq).where(*where)) is None:
            await connection.execute(insert(audit_sink_cursors).values(sink=sink, tenant_id=tenant, next_seq=next_seq))
