"""One request's usage as it is recorded: who, which model, what it used and what it cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from chamberlain.cost.usage import TokenUsage

Source = Literal["proxy", "telemetry"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    tenant: str
    user: str | None  # the subject (user id); None for a client acting for itself
    team: str | None
    client_id: str | None
    model: str  # the model served (after routing)
    requested_model: str | None  # what the client asked for, when routing rewrote it
    usage: TokenUsage
    cost_usd: Decimal  # list cost (Pricing.cost at `at`); volume discounts are applied by reports
    latency_ms: float | None
    at: datetime  # UTC
    source: Source  # "proxy": metered by the LLM proxy; "telemetry": reported by Claude Code (OTLP)
    request_id: str | None = None
    session_id: str | None = None  # Claude Code's session.id (telemetry) when known
    complete: bool = True  # False for a response cut off mid-stream
