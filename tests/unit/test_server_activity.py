"""gateway/activity.py: what the console's servers page says of each server, from the gateway's events."""

from __future__ import annotations

from chamberlain.gateway.activity import ActivityMonitor
from chamberlain.gateway.events import Decision, GatewayEvent


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def event(
    decision: Decision, at: float, *, tool: str = "add", tenant: str = "acme", reason: str | None = None
) -> GatewayEvent:
    return GatewayEvent(decision, "demo", "tools/call", tool, tenant, "user-1", "client-1", reason=reason, at=at)


def test_health_follows_the_calls_in_the_window() -> None:
    clock = Clock()
    monitor = ActivityMonitor(window=60, clock=clock)
    assert monitor.of("acme", "demo").health == "idle"
    monitor.record(event("allowed", clock.now, tool="add"))
    monitor.record(event("denied", clock.now, tool="drop_table"))
    assert monitor.of("acme", "demo").health == "ok"
    monitor.record(event("upstream_error", clock.now, tool="echo", reason="upstream_unreachable"))
    failing = monitor.of("acme", "demo")
    assert (failing.health, failing.last_error) == ("failing", "upstream_unreachable")
    assert (failing.calls, failing.denied, failing.upstream_errors) == (3, 1, 1)
    assert failing.tools == ("add", "drop_table", "echo")
    monitor.record(event("allowed", clock.now, tool="add"))
    assert monitor.of("acme", "demo").health == "degraded"  # recovered, with a failure in the window
    clock.now += 61
    assert monitor.of("acme", "demo").health == "idle"  # all of it left the window


def test_tenants_are_apart() -> None:
    monitor = ActivityMonitor(clock=Clock())
    monitor.record(event("upstream_error", Clock()(), tenant="other", reason="timeout"))
    assert monitor.of("acme", "demo").calls == 0
    assert monitor.of("other", "demo").health == "failing"
