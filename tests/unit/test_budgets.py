"""Budgets in one process: rules, UTC periods, reservations and settlements, refusals and the alerts they cross."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chamberlain.audit.events import Action, AuditEvent
from chamberlain.cost.alerts import BudgetAlert
from chamberlain.cost.budgets import (
    BudgetExceeded,
    BudgetGuard,
    BudgetRule,
    Reservation,
    micros_down,
    micros_up,
    period_bounds,
)
from chamberlain.cost.spend import Scope


@dataclass
class Spend:
    """A usage store stand-in: fixed sums per (scope, subject), and every read it was asked for."""

    sums: dict[tuple[str, str | None], Decimal] = field(default_factory=dict)
    reads: list[tuple[str, str, str | None, datetime, datetime]] = field(default_factory=list)

    async def spend(self, tenant: str, scope: Scope, subject: str | None, start: datetime, end: datetime) -> Decimal:
        self.reads.append((tenant, scope, subject, start, end))
        await asyncio.sleep(0)  # a real store suspends here
        return self.sums.get((scope, subject), Decimal(0))


@dataclass
class Alerts:
    sent: list[BudgetAlert] = field(default_factory=list)

    def submit(self, alert: BudgetAlert) -> None:
        self.sent.append(alert)


@dataclass
class Audit:
    events: list[AuditEvent] = field(default_factory=list)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


def rule(**values: Any) -> BudgetRule:
    return BudgetRule.model_validate(values)


def guard(spend: Spend | None = None, **options: Any) -> BudgetGuard:
    return BudgetGuard(spend or Spend(), **options)


async def reserve(
    budgets: BudgetGuard, rules: list[BudgetRule], estimate: str, *, user: str | None = "alice", team: str | None = None
) -> Reservation | BudgetExceeded:
    return await budgets.reserve("acme", rules, user=user, team=team, estimate_usd=Decimal(estimate))


# -- configuration ----------------------------------------------------------------------------------------------


def test_a_rule_takes_its_documented_fields_and_nothing_else() -> None:
    parsed = rule(scope="team", name="platform", period="week", limit_usd="250.50", alert_at=[0.9, 0.5, 0.9])
    assert parsed.limit_usd == Decimal("250.50")
    assert parsed.alert_at == (0.5, 0.9)  # sorted, each once
    with pytest.raises(ValidationError, match="Extra inputs"):
        rule(scope="user", limit_usd=1, limt_usd=2)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"scope": "tenant", "name": "acme", "limit_usd": 1}, "tenant budget has no name"),
        ({"scope": "user", "limit_usd": -1}, "greater than or equal"),
        ({"scope": "user", "limit_usd": "NaN"}, "finite"),
        ({"scope": "user", "limit_usd": 1, "alert_at": [0]}, "above 0"),
        ({"scope": "user", "limit_usd": 1, "alert_at": [1.5]}, "at most 1"),
        ({"scope": "user", "limit_usd": 1, "period": "year"}, "day"),
        ({"scope": "user", "limit_usd": 1, "webhook": "https://hooks.example/b"}, "webhook_secret"),
        ({"scope": "user", "limit_usd": 1, "webhook_secret": "vault/hook"}, "webhook_secret"),
        ({"scope": "user", "limit_usd": 1, "webhook": "http://hooks.example/b", "webhook_secret": "v/h"}, "https"),
        ({"scope": "user", "limit_usd": 1, "webhook": "https://u:p@hooks.example/", "webhook_secret": "v/h"}, "user"),
        ({"scope": "user", "limit_usd": 1, "webhook": "https://hooks.example/", "webhook_secret": "nope"}, "SOURCE"),
    ],
)
def test_a_wrong_rule_is_refused_with_a_reason(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        rule(**values)


def test_plain_http_webhooks_are_allowed_on_loopback_only() -> None:
    parsed = rule(scope="tenant", limit_usd=5, webhook="http://127.0.0.1:9000/hook", webhook_secret="hooks/budget")
    assert parsed.webhook == "http://127.0.0.1:9000/hook"


# -- periods ----------------------------------------------------------------------------------------------------


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_periods_are_utc_calendar_days_iso_weeks_and_months() -> None:
    moment = at("2026-12-31T23:59:59")
    assert period_bounds("day", moment)[0] == "2026-12-31"
    name, start, end = period_bounds("week", moment)  # a Thursday; ISO week 53 of 2026 runs to Sunday 3 January
    assert (name, start.isoformat(), end.isoformat()) == (
        "2026-W53",
        "2026-12-28T00:00:00+00:00",
        "2027-01-04T00:00:00+00:00",
    )
    name, start, end = period_bounds("month", moment)
    assert (name, start.day, end.isoformat()) == ("2026-12", 1, "2027-01-01T00:00:00+00:00")
    assert period_bounds("month", at("2028-02-29T12:00:00"))[2].isoformat() == "2028-03-01T00:00:00+00:00"
    # The first second of a period belongs to it, the last to the one before.
    assert period_bounds("day", at("2026-07-30T00:00:00"))[0] == "2026-07-30"
    assert period_bounds("day", at("2026-07-30T00:00:00") - 0.001)[0] == "2026-07-29"


@given(st.floats(min_value=0, max_value=4_102_444_800), st.sampled_from(["day", "week", "month"]))
def test_every_moment_lies_in_exactly_one_period(moment: float, period: Any) -> None:
    name, start, end = period_bounds(period, moment)
    assert start.timestamp() <= moment < end.timestamp()
    assert period_bounds(period, end.timestamp())[1] == end  # the next period starts where this one ends
    assert period_bounds(period, start.timestamp())[0] == name


def test_amounts_round_against_the_caller() -> None:
    assert micros_up(Decimal("0.0000001")) == 1  # an estimate never rounds down to nothing
    assert micros_down(Decimal("9.9999999")) == 9_999_999  # a limit never rounds up


# -- reserve and settle -----------------------------------------------------------------------------------------


async def test_reservations_hold_the_estimate_until_settled_to_the_actual_cost() -> None:
    budgets = guard()
    rules = [rule(scope="user", limit_usd=10)]
    first = await reserve(budgets, rules, "6")
    assert isinstance(first, Reservation)
    busy = await reserve(budgets, rules, "6")  # 6 held + 6 > 10, but 0 spent + 6 fits: in flight, not spent
    assert isinstance(busy, BudgetExceeded)
    assert (busy.status, busy.error_type, busy.reason, busy.retryable) == (429, "rate_limit_error", "busy", True)
    await budgets.settle(first, Decimal("1.25"))
    second = await reserve(budgets, rules, "6")  # 1.25 spent + 6 fits now
    assert isinstance(second, Reservation)
    await budgets.settle(second, Decimal("8"))  # 9.25 spent: an estimate can be low when max_tokens is not known
    exhausted = await reserve(budgets, rules, "0.75")
    assert isinstance(exhausted, Reservation)  # exactly up to the limit
    await budgets.settle(exhausted, Decimal("0.75"))
    refused = await reserve(budgets, rules, "0.01")
    assert isinstance(refused, BudgetExceeded)
    assert (refused.status, refused.error_type, refused.reason, refused.retryable) == (
        400,
        "invalid_request_error",
        "exhausted",
        False,
    )


async def test_a_second_settlement_releases_nothing_and_counts_nothing_twice_within_the_hold() -> None:
    budgets = guard()
    rules = [rule(scope="user", limit_usd=10)]
    held = await reserve(budgets, rules, "5")
    assert isinstance(held, Reservation)
    await budgets.settle(held, Decimal(0))
    await budgets.settle(held, Decimal(0))
    # Nothing spent, nothing held: the whole budget is there (a double release would let 15 through).
    assert isinstance(await reserve(budgets, rules, "10"), Reservation)
    assert isinstance(await reserve(budgets, rules, "0.01"), BudgetExceeded)


async def test_a_request_too_large_for_what_is_left_is_refused_for_good_with_advice() -> None:
    budgets = guard(Spend({("user", "alice"): Decimal("9")}))
    refused = await reserve(budgets, [rule(scope="user", limit_usd=10)], "2.5")
    assert isinstance(refused, BudgetExceeded)
    assert (refused.status, refused.reason) == (400, "too_large")
    assert "max_tokens" in refused.message
    assert "USD 2.50" in refused.message
    assert isinstance(await reserve(budgets, [rule(scope="user", limit_usd=10)], "1"), Reservation)


async def test_the_refusal_speaks_anthropic_and_names_only_the_callers_own_budget() -> None:
    now = datetime.now(UTC)
    budgets = guard(Spend({("team", "platform"): Decimal("500")}))
    refused = await reserve(budgets, [rule(scope="team", limit_usd=500)], "0.10", team="platform")
    assert isinstance(refused, BudgetExceeded)
    _, _, end = period_bounds("month", now.timestamp())
    assert refused.message == (
        f"You have reached the monthly budget of USD 500.00 for your team 'platform'. "
        f"You will regain access on {end:%Y-%m-%d} at 00:00 UTC."
    )
    assert refused.resets_at == end
    assert abs(refused.retry_after - (end - now).total_seconds()) <= 2
    assert refused.headers == {"retry-after": str(refused.retry_after), "x-should-retry": "false"}
    assert json.loads(refused.body("req_1")) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": refused.message},
        "request_id": "req_1",
    }
    assert "alice" not in refused.message
    assert "500.0" not in refused.message.replace("500.00", "")


async def test_spend_starts_from_the_usage_store_read_once_per_counter() -> None:
    spend = Spend({("user", "alice"): Decimal("7"), ("tenant", None): Decimal("40")})
    budgets = guard(spend)
    rules = [rule(scope="user", limit_usd=10), rule(scope="tenant", period="day", limit_usd=50)]
    results = await asyncio.gather(*(reserve(budgets, rules, "1") for _ in range(5)))
    assert sum(isinstance(result, Reservation) for result in results) == 3  # 7 + 3 x 1 = 10
    assert sorted((scope, subject) for _, scope, subject, _, _ in spend.reads) == [("tenant", None), ("user", "alice")]
    tenant_read = next(read for read in spend.reads if read[1] == "tenant")
    assert tenant_read[4] - tenant_read[3] == timedelta(days=1)


async def test_rules_apply_to_whom_they_name() -> None:
    budgets = guard()
    rules = [
        rule(scope="user", name="bob", limit_usd=0),
        rule(scope="team", name="data", limit_usd=0),
        rule(scope="team", limit_usd=1),
    ]
    # alice (team platform): bob's and data's budgets are not hers; every team has 1.
    assert isinstance(await reserve(budgets, rules, "1", team="platform"), Reservation)
    assert isinstance(await reserve(budgets, rules, "0.5", user="bob"), BudgetExceeded)
    assert isinstance(await reserve(budgets, rules, "0.5", team="data"), BudgetExceeded)
    assert isinstance(await reserve(budgets, rules, "1", team="research"), Reservation)  # a team of its own
    # No team, no user (a client acting for itself): only what applies to it, here nothing.
    assert isinstance(await reserve(budgets, rules, "5", user=None), Reservation)


async def test_the_roles_monthly_budget_is_a_per_user_hard_limit() -> None:
    budgets = guard()
    held = await budgets.reserve("acme", [], user="alice", team=None, estimate_usd=Decimal(3), profile_limit=5.0)
    assert isinstance(held, Reservation)
    await budgets.settle(held, Decimal(3))
    refused = await budgets.reserve("acme", [], user="alice", team=None, estimate_usd=Decimal(3), profile_limit=5.0)
    assert isinstance(refused, BudgetExceeded)
    assert refused.reason == "too_large"
    assert "your roles" in refused.message
    # The roles' budget and a rule on the same counter: the smaller limit decides.
    rules = [rule(scope="user", limit_usd=100)]
    again = await budgets.reserve("acme", rules, user="alice", team=None, estimate_usd=Decimal(3), profile_limit=5.0)
    assert isinstance(again, BudgetExceeded)


async def test_no_budget_no_store() -> None:
    spend = Spend()
    budgets = guard(spend)
    held = await reserve(budgets, [], "1000")
    assert isinstance(held, Reservation)
    assert held.held == ()
    await budgets.settle(held, Decimal(999))
    assert spend.reads == []


async def test_a_hold_lapses_at_its_deadline_when_nobody_settles_it() -> None:
    budgets = guard(hold_seconds=0.2)
    rules = [rule(scope="user", limit_usd=1)]
    assert isinstance(await reserve(budgets, rules, "1"), Reservation)  # its process "dies": never settled
    assert isinstance(await reserve(budgets, rules, "1"), BudgetExceeded)
    await asyncio.sleep(0.3)
    assert isinstance(await reserve(budgets, rules, "1"), Reservation)


async def test_refusals_are_audited_without_the_estimate_or_anyones_spend() -> None:
    audit = Audit()
    budgets = guard(Spend({("user", "alice"): Decimal(2)}), audit=audit)
    await budgets.reserve(
        "acme",
        [rule(scope="user", limit_usd=2)],
        user="alice",
        team=None,
        estimate_usd=Decimal(1),
        client_id="cli",
        request_id="r-1",
    )
    (event,) = audit.events
    assert (event.action, event.outcome, event.actor.id, event.request_id) == (
        Action.BUDGET_REFUSED,
        "denied",
        "alice",
        "r-1",
    )
    assert event.reason == "exhausted"
    assert event.details["limit_usd"] == "2"


# -- alerts -----------------------------------------------------------------------------------------------------


async def test_each_threshold_alerts_once_per_period_and_scope() -> None:
    alerts = Alerts()
    budgets = guard(alerts=alerts)
    team_rule = rule(
        scope="team",
        limit_usd=100,
        alert_at=[0.5, 0.8, 1.0],
        webhook="https://hooks.example/b",
        webhook_secret="hooks/budget",
    )
    rules = [team_rule, rule(scope="user", limit_usd=1000, alert_at=[])]
    for actual in ("30", "25", "10", "30"):  # 30, 55 (0.5), 65, 95 (0.8)
        held = await reserve(budgets, rules, "30", team="platform")
        assert isinstance(held, Reservation)
        await budgets.settle(held, Decimal(actual))
    assert [(alert.threshold, alert.spent_usd) for alert in alerts.sent] == [(0.5, Decimal(55)), (0.8, Decimal(95))]
    alert = alerts.sent[0]
    assert (alert.tenant, alert.scope, alert.subject, alert.period, alert.limit_usd) == (
        "acme",
        "team",
        "platform",
        "month",
        Decimal(100),
    )
    assert (alert.webhook, alert.webhook_secret) == ("https://hooks.example/b", "hooks/budget")
    # Another team crosses the same rule's thresholds on its own counter.
    other = await reserve(budgets, rules, "60", team="data")
    assert isinstance(other, Reservation)
    await budgets.settle(other, Decimal(60))
    assert [(alert.subject, alert.threshold) for alert in alerts.sent[2:]] == [("data", 0.5)]


async def test_telemetry_records_count_against_budgets_and_proxied_records_do_not() -> None:
    @dataclass(frozen=True)
    class Record:
        tenant: str
        user: str | None
        team: str | None
        cost_usd: Decimal
        at: datetime
        source: str

    rules = [rule(scope="user", limit_usd=10, alert_at=[0.5])]
    alerts = Alerts()
    budgets = guard(alerts=alerts, rules_of=lambda tenant: rules)
    assert isinstance(await reserve(budgets, rules, "1"), Reservation)  # creates alice's counter
    now = datetime.now(UTC)
    budgets.record_listener(Record("acme", "alice", None, Decimal(6), now, "telemetry"))
    budgets.record_listener(Record("acme", "alice", None, Decimal(6), now, "proxy"))  # settle() counts those
    await budgets.drained()
    assert [alert.threshold for alert in alerts.sent] == [0.5]
    refused = await reserve(budgets, rules, "4")  # 6 spent, 1 held: 4 more would pass 10
    assert isinstance(refused, BudgetExceeded)
    assert refused.reason == "busy"
