"""What the gateway decided, as structured events, delivered off the request path.

The request path only appends to a queue; a background task hands events to subscribers (the audit log records
them) and to the `chamberlain.events` logger. A subscriber that fails is logged and does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

logger = logging.getLogger("chamberlain.events")

Decision = Literal["allowed", "denied", "upstream_error"]
Subscriber = Callable[["GatewayEvent"], None]


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    decision: Decision
    server: str
    method: str | None  # the JSON-RPC method, or the HTTP method for GET/DELETE
    target: str | None  # the tool, prompt or resource named by the request
    tenant: str
    subject: str
    client_id: str
    reason: str | None = None  # why it was denied or failed; never message contents or credentials
    request_id: str | None = None  # the HTTP request's id (X-Request-Id), for correlation
    at: float = field(default_factory=time.time)


class EventBus:
    def __init__(self, max_queued: int = 100_000) -> None:
        self._queue: deque[GatewayEvent] = deque()
        self._max_queued = max_queued
        self._subscribers: list[Subscriber] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Adds a subscriber; returns the function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def emit(self, event: GatewayEvent) -> None:
        if len(self._queue) >= self._max_queued:
            self.dropped += 1  # never block or grow without bound on the request path
            return
        self._queue.append(event)
        self._ready.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._deliver_forever())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._deliver_queued()

    async def _deliver_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            self._deliver_queued()

    def _deliver_queued(self) -> None:
        debug = logger.isEnabledFor(logging.DEBUG)
        while self._queue:
            event = self._queue.popleft()
            if debug:
                logger.debug(json.dumps(asdict(event), separators=(",", ":")))
            for subscriber in list(self._subscribers):
                try:
                    subscriber(event)
                except Exception:
                    logger.exception("an event subscriber failed")
