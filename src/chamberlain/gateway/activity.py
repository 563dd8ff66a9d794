"""What this gateway process saw of each MCP server lately, for the console's servers page: calls, denials, upstream
failures and the tools called, over a sliding window.

It subscribes to the gateway's events (gateway/events.py), so it costs the request path nothing. It is per process:
with several replicas each page shows what the replica that served it saw (the audit log has everything).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from chamberlain.gateway.events import GatewayEvent

WINDOW = 3600.0  # seconds of history kept
MAX_EVENTS = 10_000  # per tenant and server: the oldest are forgotten first, so memory stays bounded
Health = Literal["idle", "ok", "degraded", "failing"]


@dataclass(frozen=True)
class ServerActivity:
    calls: int = 0
    denied: int = 0
    upstream_errors: int = 0
    last_call_at: float | None = None
    last_error: str | None = None  # the gateway's reason for the latest upstream failure (never message content)
    tools: tuple[str, ...] = field(default_factory=tuple)  # tools called, sorted

    @property
    def health(self) -> Health:
        """idle: no call in the window; failing: the latest call failed upstream; degraded: some did."""
        if self.calls == 0:
            return "idle"
        if self.last_error is not None:
            return "failing"
        return "degraded" if self.upstream_errors else "ok"


class ActivityMonitor:
    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.time) -> None:
        self._window = window
        self._clock = clock
        self._events: dict[tuple[str, str], deque[GatewayEvent]] = {}

    def record(self, event: GatewayEvent) -> None:
        """An EventBus subscriber."""
        self._events.setdefault((event.tenant, event.server), deque(maxlen=MAX_EVENTS)).append(event)

    def of(self, tenant: str, server: str) -> ServerActivity:
        events = self._events.get((tenant, server))
        if not events:
            return ServerActivity()
        horizon = self._clock() - self._window
        while events and events[0].at < horizon:
            events.popleft()
        if not events:
            return ServerActivity()
        latest = events[-1]
        return ServerActivity(
            calls=len(events),
            denied=sum(event.decision == "denied" for event in events),
            upstream_errors=sum(event.decision == "upstream_error" for event in events),
            last_call_at=latest.at,
            last_error=latest.reason if latest.decision == "upstream_error" else None,
            tools=tuple(sorted({e.target for e in events if e.method == "tools/call" and e.target is not None})),
        )
