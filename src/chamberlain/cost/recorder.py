"""Recording usage off the request path: a queue the request path appends to, written in batches by a task.

`record()` tells the listeners (budgets count spend from there, at once, before anything is written) and appends
to a bounded in-memory queue: no await, no I/O, and nothing it does raises into the request that called it. A
background task takes up to `batch_size` records, waiting up to `commit_delay` for a trickle to gather, and appends
them in one transaction (COPY on PostgreSQL). When the store fails, the batch goes back to the head of the queue
and is retried with backoff; when the queue is full, new records are dropped and counted, and the count is logged,
so a store outage costs memory up to a bound and never the gateway. `aclose()` writes what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from chamberlain.cost.records import UsageRecord
from chamberlain.store.database import Database
from chamberlain.store.errors import WriteFailures
from chamberlain.store.usage import append_usage, usage_row

logger = logging.getLogger(__name__)

Listener = Callable[[UsageRecord], None]


class UsageRecorder:
    def __init__(
        self,
        database: Database,
        *,
        queue_limit: int = 100_000,
        batch_size: int = 500,
        commit_delay: float = 0.05,
    ) -> None:
        self._database = database
        self._queue_limit = queue_limit
        self._batch_size = batch_size
        self._commit_delay = commit_delay
        self._queue: deque[UsageRecord] = deque()
        self._listeners: list[Listener] = []
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing is queued or being written
        self._drained.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # records refused because the queue was full
        self._dropped_logged = 0

    # -- the request path ----------------------------------------------------------------------------------------

    def record(self, record: UsageRecord) -> None:
        """Notifies the listeners and queues the record. Never blocks, never raises."""
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # a listener's fault must not fail the request, nor keep the others from hearing
                logger.exception("a usage listener failed")
        if len(self._queue) >= self._queue_limit:
            self.dropped += 1
            self._wake.set()  # the writer logs the count
            return
        self._queue.append(record)
        self._drained.clear()
        self._wake.set()

    def subscribe(self, listener: Listener) -> None:
        """`listener(record)` is called at each record(), on the caller's path: it must be quick and not block."""
        self._listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever(), name="usage-recorder")

    async def aclose(self) -> None:
        """Writes what is queued (retrying a few times when the store fails), then stops."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._log_drops()
        if self._queue:
            logger.error("the usage recorder stopped with %d records unwritten", len(self._queue))

    async def drained(self) -> None:
        """Returns once everything queued so far is written."""
        await self._drained.wait()

    # -- writing -------------------------------------------------------------------------------------------------

    async def _write_forever(self) -> None:
        failures = WriteFailures(logger, "usage records")
        while True:
            self._log_drops()
            if not self._queue:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                if not self._closing:
                    await self._lingering()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._batch_size))]
            rows = []
            for record in batch:
                try:
                    rows.append(usage_row(record))
                except Exception:  # a malformed record is dropped, never retried for ever with its batch
                    logger.exception("dropped a usage record that cannot be stored")
            try:
                if rows:
                    async with self._database.begin() as connection:
                        await append_usage(connection, rows)
            except Exception as problem:  # the store is down or refused: keep the records and try again
                self._queue.extendleft(reversed(batch))
                delay = failures.failed(len(self._queue), problem)
                if self._closing and failures.given_up:
                    return
                await asyncio.sleep(delay)
                continue
            failures.succeeded()
            if not self._queue:
                self._drained.set()

    async def _lingering(self) -> None:
        """Group commit: waits up to `commit_delay` for more records unless a batch fills or the recorder closes."""
        deadline = asyncio.get_running_loop().time() + self._commit_delay
        while len(self._queue) < self._batch_size and not self._closing:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
            self._wake.clear()

    def _log_drops(self) -> None:
        if self.dropped != self._dropped_logged:
            logger.warning(
                "usage queue full: %d records dropped (%d in all)",
                self.dropped - self._dropped_logged,
                self.dropped,
            )
            self._dropped_logged = self.dropped
