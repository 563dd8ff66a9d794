"""Writing the audit log: off the request path, in group commits, durable first where the action demands it.

`record()` appends to an in-memory queue and returns (a deque append: well under the 20 µs the request path may
spend). A background task takes up to `batch_size` queued events, links them into their tenant's chain and writes
them in one transaction. `record_durably()` waits for that commit; if the log cannot be written it raises
`AuditUnavailable` and the caller refuses its action. Events that are not durable yet are kept, in order, and
retried with back-off (at most every 5 s) while the process lives, so a store outage delays them and loses none; the
outage is logged when it begins and when it ends (store/errors.py WriteFailures). The queue is bounded by
`queue_limit`: beyond it new events are refused, counted and logged (durable ones raise instead). A batch is one
transaction, so a crash leaves whole batches or nothing, never a broken chain.
Several processes may write one tenant's chain: on PostgreSQL they take turns (a transaction-scoped advisory lock
per chain, store/locks.py); and the (tenant, seq) key makes a second writer of the same position fail (a head
cached before another wrote), after which it re-reads the head and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from chamberlain.audit.events import Action, AuditEvent, AuditLevel
from chamberlain.audit.privacy import SubjectKeys, seal_personal
from chamberlain.audit.records import canonical_body, genesis_hash, record_hash
from chamberlain.audit.settings import AuditSettings
from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import Connection, Database, insert_rows
from chamberlain.store.errors import WriteFailures
from chamberlain.store.locks import lock_for_transaction
from chamberlain.store.schema import audit_events

logger = logging.getLogger(__name__)
_HASH = [column.name for column in audit_events.columns].index("hash")


class AuditUnavailable(Exception):
    """The audit log could not record an event that had to be durable: the action it records must be refused."""


_Pending = tuple[AuditEvent, "asyncio.Future[None] | None"]


class AuditLog:
    def __init__(self, database: Database, master_key: MasterKey, settings: AuditSettings) -> None:
        self._database = database
        self._settings = settings
        self._fail_closed = frozenset(settings.fail_closed)
        self._subject_keys = SubjectKeys(master_key)
        self._queue: deque[_Pending] = deque()
        self._heads: dict[str, tuple[int, bytes]] = {}  # tenant -> (next seq, hash of the last record)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing is queued or being written
        self._drained.set()
        self._closing = False
        self._durable_waiting = 0  # durable events in the queue: they cut the group-commit wait short
        self._hurry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # events refused because the queue was full (never durable ones: those raise)
        self._dropped_logged = 0

    # -- the request path ----------------------------------------------------------------------------------------

    def record(self, event: AuditEvent) -> None:
        """Queues an event. Never blocks and never raises: a full queue drops and counts."""
        if not self._settings.enabled:
            return
        if len(self._queue) >= self._settings.queue_limit:
            self.dropped += 1
            self._wake.set()  # the writer logs the count
            return
        self._queue.append((event, None))
        self._drained.clear()
        self._wake.set()

    async def record_durably(self, event: AuditEvent) -> None:
        """Returns once the event is committed. Raises AuditUnavailable when it cannot be."""
        if not self._settings.enabled:
            return
        if self._task is None or self._closing or len(self._queue) >= self._settings.queue_limit:
            raise AuditUnavailable("the audit log is not accepting events")
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((event, committed))
        self._durable_waiting += 1
        self._drained.clear()
        self._wake.set()
        self._hurry.set()
        await committed

    async def record_as_configured(self, event: AuditEvent) -> None:
        """Durable when the action is configured fail-closed, queued otherwise."""
        if event.action in self._fail_closed:
            await self.record_durably(event)
        else:
            self.record(event)

    def must_be_durable(self, action: Action) -> bool:
        return action in self._fail_closed

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever())

    async def aclose(self) -> None:
        """Writes what is queued (retrying a few times), then stops."""
        self._closing = True
        self._wake.set()
        self._hurry.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, committed in self._queue:
            if committed is not None and not committed.done():
                committed.set_exception(AuditUnavailable("the audit log shut down"))
        self._log_drops()
        if self._queue:
            logger.error("the audit log stopped with %d events unwritten", len(self._queue))

    async def flush(self, within: float = 30.0) -> None:
        """Waits until everything queued so far is committed. Raises AuditUnavailable after `within` seconds."""
        try:
            await asyncio.wait_for(self._drained.wait(), within)
        except TimeoutError:
            raise AuditUnavailable("the audit log could not write its queue in time") from None

    # -- writing -------------------------------------------------------------------------------------------------

    async def _write_forever(self) -> None:
        failures = WriteFailures(logger, "audit events")
        while True:
            self._log_drops()
            if not self._queue:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                if not self._closing and not self._durable_waiting:
                    # Group commit: let a trickle of events gather, so that light traffic does not pay a whole
                    # transaction per event. Durable events skip the wait: their callers are holding an action.
                    await self._lingering()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._settings.batch_size))]
            self._durable_waiting -= sum(1 for _, committed in batch if committed is not None)
            try:
                await self._commit([event for event, _ in batch])
            except Exception as problem:  # the store is down or refused: durable callers are told, the rest retried
                # Back at the head of the queue in their order: when the store returns they are chained and written
                # exactly as they would have been (the head is re-read only after a commit that succeeded).
                for event, committed in reversed(batch):
                    if committed is None:
                        self._queue.appendleft((event, None))
                    elif not committed.done():
                        committed.set_exception(AuditUnavailable("the audit log cannot be written"))
                delay = failures.failed(len(self._queue), problem)
                if self._closing and failures.given_up:
                    return
                await asyncio.sleep(delay)
                continue
            failures.succeeded()
            for _, committed in batch:
                if committed is not None and not committed.done():
                    committed.set_result(None)
            if not self._queue:
                self._drained.set()

    def _log_drops(self) -> None:
        if self.dropped != self._dropped_logged:
            logger.error(
                "audit queue full (%d events): %d events refused (%d in all)",
                self._settings.queue_limit,
                self.dropped - self._dropped_logged,
                self.dropped,
            )
            self._dropped_logged = self.dropped

    async def _lingering(self) -> None:
        """Waits up to `commit_delay` for more events, returning early when a batch is full, a durable event
        arrives or the log closes."""
        self._hurry.clear()
        deadline = asyncio.get_running_loop().time() + self._settings.commit_delay
        while len(self._queue) < self._settings.batch_size and not self._closing and not self._durable_waiting:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), remaining)
            self._hurry.clear()

    async def _commit(self, events: list[AuditEvent]) -> None:
        by_tenant: dict[str, list[AuditEvent]] = {}
        for event in events:
            by_tenant.setdefault(event.tenant, []).append(event)
        for attempt in range(3):
            try:
                await self._commit_once(by_tenant)
                return
            except IntegrityError:
                # Another writer took these positions: forget what we believed the heads were and retry.
                for tenant in by_tenant:
                    self._heads.pop(tenant, None)
                if attempt == 2:
                    raise

    async def _commit_once(self, by_tenant: dict[str, list[AuditEvent]]) -> None:
        heads: dict[str, tuple[int, bytes]] = {}
        keys_read: dict[str, dict[str, bytes | None]] = {}
        async with self._database.begin() as connection:
            # Sorted: writers lock the chains of a batch in one order, so two of them never wait on each other.
            for tenant, events in sorted(by_tenant.items()):
                # Replicas write one tenant's chain one at a time, so the head read next is the latest; without the
                # lock, writers racing for the same position kept failing on the (tenant, seq) key under load.
                await lock_for_transaction(self._database, connection, "chamberlain.audit.chain", tenant)
                seq, previous = await self._head(connection, tenant)
                subjects = {subject for event in events if event.personal and (subject := _subject_of(event))}
                keys = await self._subject_keys.keys(connection, tenant, subjects, create=True) if subjects else {}
                rows: list[tuple[Any, ...]] = []
                for event in events:
                    row = self._row(event, seq, previous, keys)
                    rows.append(row)
                    previous = row[_HASH]
                    seq += 1
                await insert_rows(connection, audit_events, rows)
                heads[tenant] = (seq, previous)
                keys_read[tenant] = keys
        self._heads.update(heads)
        for tenant, keys in keys_read.items():
            self._subject_keys.remember(tenant, keys)

    def _row(self, event: AuditEvent, seq: int, previous: bytes, keys: dict[str, bytes | None]) -> tuple[Any, ...]:
        """The record's values, in the column order of `audit_events`."""
        level = self._settings.level_for(event.classification)
        public = event.public_fields()
        public["details"] = _details_at(level, public["details"])
        subject = _subject_of(event)
        key = keys.get(subject) if subject is not None else None
        ciphertext = (
            seal_personal(self._subject_keys.cipher(key), event.id, dict(event.personal))
            if event.personal and key
            else None
        )
        public["subject"] = subject
        body = canonical_body(public, level, ciphertext)
        return (
            event.tenant,
            seq,
            event.id,
            event.time,
            str(event.action),
            event.outcome,
            event.classification,
            subject,
            body,
            previous,
            record_hash(previous, body),
        )

    async def _head(self, connection: Connection, tenant: str) -> tuple[int, bytes]:
        cached = self._heads.get(tenant)
        if cached is not None:
            return cached
        row = (
            await connection.execute(
                select(audit_events.c.seq, audit_events.c.hash)
                .where(audit_events.c.tenant_id == tenant)
                .order_by(audit_events.c.seq.desc())
                .limit(1)
            )
        ).first()
        return (0, genesis_hash(tenant)) if row is None else (row.seq + 1, row.hash)


def _subject_of(event: AuditEvent) -> str | None:
    """Whose personal data the event carries: the named subject, else the user who acted."""
    if event.subject is not None:
        return event.subject
    return event.actor.id if event.actor.type == "user" else None


def _details_at(level: AuditLevel, details: dict[str, Any]) -> dict[str, Any]:
    # summary: who, what, outcome; detailed: plus details; forensic: plus request and response bodies.
    if level == "summary":
        return {}
    if level == "detailed" and "bodies" in details:
        return {key: value for key, value in details.items() if key != "bodies"}
    return details  # already the event's own copy (public_fields)
