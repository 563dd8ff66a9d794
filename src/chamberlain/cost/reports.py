"""Cost reports from the usage records: spend by model, user or team; a team summary; the month-end forecast;
efficiency figures against an earlier period. The CLI (`chamberlain cost`) and the admin API (/cost/…) share them.

Money: records hold list cost; volume discounts (cost/pricing.py) apply to a tenant's calendar-month (UTC) list
spend, so a period's net cost takes, for the part of it in each month, that month's discount rate (the whole month
for a past one, the month so far for the current one) and each group gets its share. Amounts are Decimal, exact to
the record, shown to the micro-dollar. Periods: `24h` and `7d` end now; `month` is the current calendar month so
far; `last-month` the previous one, whole.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from chamberlain.cost.pricing import Pricing
from chamberlain.store.usage import Dimension, UsageRepository, UsageTotals

PeriodName = Literal["24h", "7d", "month", "last-month"]
PERIODS: tuple[PeriodName, ...] = ("24h", "7d", "month", "last-month")
Grouping = Literal["model", "user", "team"]
Comparison = Literal["last-month", "previous", "none"]
MICRO = Decimal("0.000001")
_ZERO = Decimal(0)
_RECENT = timedelta(days=7)  # the forecast projects the month's rest at the rate of the last seven days


def usd(amount: Decimal) -> Decimal:
    return amount.quantize(MICRO)


# -- periods -----------------------------------------------------------------------------------------------------


class Window(BaseModel):
    label: str
    since: datetime
    until: datetime = Field(description="exclusive")


def month_start(at: datetime) -> datetime:
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def previous_month(start: datetime) -> datetime:
    return datetime(start.year - (start.month == 1), (start.month - 2) % 12 + 1, 1, tzinfo=UTC)


def window(period: PeriodName, now: datetime) -> Window:
    if period == "24h":
        return Window(label=period, since=now - timedelta(hours=24), until=now)
    if period == "7d":
        return Window(label=period, since=now - timedelta(days=7), until=now)
    this_month = month_start(now)
    if period == "month":
        return Window(label=f"{this_month:%Y-%m} to date", since=this_month, until=now)
    last = previous_month(this_month)
    return Window(label=f"{last:%Y-%m}", since=last, until=this_month)


def compared_window(current: Window, comparison: Comparison, now: datetime) -> Window | None:
    if comparison == "none":
        return None
    if comparison == "last-month":
        return window("last-month", now)
    length = current.until - current.since
    since = current.since - length
    return Window(label=f"{since:%Y-%m-%d %H:%M}..{current.since:%Y-%m-%d %H:%M} UTC", since=since, until=current.since)


# -- net cost: the volume discount of each month a window touches ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slice:
    since: datetime
    until: datetime
    discount_rate: Decimal  # the fraction of list cost taken off in this slice's month


async def _slices(repository: UsageRepository, pricing: Pricing, span: Window, now: datetime) -> list[_Slice]:
    slices = []
    start = month_start(span.since)
    while start < span.until:
        end = next_month(start)
        month_spend = await repository.spend(start, min(end, now))
        discount = pricing.volume_discount(month_spend, at=start)
        rate = discount / month_spend if month_spend > 0 else _ZERO
        slices.append(_Slice(max(start, span.since), min(end, span.until), rate))
        start = end
    return slices


async def _net_costs(
    repository: UsageRepository, slices: Sequence[_Slice], by: Sequence[Dimension]
) -> dict[tuple[str | None, ...], Decimal]:
    """Net cost per group over the slices."""
    net: dict[tuple[str | None, ...], Decimal] = {}
    for part in slices:
        for totals in await repository.totals(part.since, part.until, by):
            net[totals.key] = net.get(totals.key, _ZERO) + totals.cost_usd * (1 - part.discount_rate)
    return net


# -- report by model, user or team -------------------------------------------------------------------------------


class GroupCost(BaseModel):
    key: str | None = Field(description="the model, user id or team; null: records without one (no team)")
    name: str | None = Field(None, description="the user's name, when the user id is one of the tenant's users")
    requests: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    users: int
    incomplete: int = Field(description="responses cut off mid-stream")
    list_cost_usd: Decimal
    net_cost_usd: Decimal = Field(description="after the volume discount")
    share: float = Field(description="of the period's list cost, 0 to 1")


class CostReport(BaseModel):
    report: Literal["cost"] = "cost"
    tenant: str
    by: Grouping
    window: Window
    generated_at: datetime
    groups: list[GroupCost]
    total: GroupCost
    volume_discount_usd: Decimal


def _group(totals: UsageTotals, net: Decimal, whole: Decimal, *, key: str | None, name: str | None = None) -> GroupCost:
    return GroupCost(
        key=key,
        name=name,
        requests=totals.requests,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cache_write_tokens=totals.cache_creation_input_tokens,
        cache_read_tokens=totals.cache_read_input_tokens,
        users=totals.users,
        incomplete=totals.incomplete,
        list_cost_usd=usd(totals.cost_usd),
        net_cost_usd=usd(net),
        share=float(totals.cost_usd / whole) if whole > 0 else 0.0,
    )


async def cost_report(
    repository: UsageRepository,
    pricing: Pricing,
    *,
    tenant: str,
    by: Grouping,
    period: PeriodName,
    now: datetime,
    names: Mapping[str, str] | None = None,
) -> CostReport:
    """Spend per model, user or team over the period, largest first. `names` maps user ids to display names."""
    span = window(period, now)
    slices = await _slices(repository, pricing, span, now)
    groups = await repository.totals(span.since, span.until, (by,))
    (overall,) = await repository.totals(span.since, span.until)
    net = await _net_costs(repository, slices, (by,))
    total_net = sum(net.values(), _ZERO)
    whole = overall.cost_usd
    return CostReport(
        tenant=tenant,
        by=by,
        window=span,
        generated_at=now,
        groups=[
            _group(
                totals,
                net.get(totals.key, _ZERO),
                whole,
                key=totals.key[0],
                name=(names or {}).get(totals.key[0] or "") if by == "user" else None,
            )
            for totals in groups
        ],
        total=_group(overall, total_net, whole, key=None),
        volume_discount_usd=usd(whole - total_net),
    )


# -- team summary ------------------------------------------------------------------------------------------------


class TeamSummaryRow(BaseModel):
    team: str | None = Field(description="null: users in no team")
    users: int
    requests: int
    list_cost_usd: Decimal
    net_cost_usd: Decimal
    cost_per_user_usd: Decimal | None
    cache_hit_rate: float | None = Field(description="cache reads over all prompt tokens")
    top_model: str | None = Field(description="the model with the largest list cost")


class TeamSummary(BaseModel):
    report: Literal["team-summary"] = "team-summary"
    tenant: str
    window: Window
    generated_at: datetime
    teams: list[TeamSummaryRow]
    list_cost_usd: Decimal
    net_cost_usd: Decimal


async def team_summary(
    repository: UsageRepository, pricing: Pricing, *, tenant: str, period: PeriodName, now: datetime
) -> TeamSummary:
    span = window(period, now)
    slices = await _slices(repository, pricing, span, now)
    teams = await repository.totals(span.since, span.until, ("team",))
    top_models: dict[str | None, str | None] = {}
    for totals in await repository.totals(span.since, span.until, ("team", "model")):  # largest cost first
        top_models.setdefault(totals.key[0], totals.key[1])
    net = await _net_costs(repository, slices, ("team",))
    rows = [
        TeamSummaryRow(
            team=totals.key[0],
            users=totals.users,
            requests=totals.requests,
            list_cost_usd=usd(totals.cost_usd),
            net_cost_usd=usd(net.get(totals.key, _ZERO)),
            cost_per_user_usd=usd(totals.cost_usd / totals.users) if totals.users else None,
            cache_hit_rate=_cache_hit_rate(totals),
            top_model=top_models.get(totals.key[0]),
        )
        for totals in teams
    ]
    return TeamSummary(
        tenant=tenant,
        window=span,
        generated_at=now,
        teams=rows,
        list_cost_usd=usd(sum((totals.cost_usd for totals in teams), _ZERO)),
        net_cost_usd=usd(sum(net.values(), _ZERO)),
    )


def _cache_hit_rate(totals: UsageTotals) -> float | None:
    prompt = totals.prompt_tokens
    return totals.cache_read_input_tokens / prompt if prompt else None


# -- forecast ----------------------------------------------------------------------------------------------------


class GroupForecast(BaseModel):
    key: str | None
    spend_to_date_usd: Decimal = Field(description="list cost, month to date")
    projected_usd: Decimal = Field(description="list cost at month end")


class Forecast(BaseModel):
    report: Literal["forecast"] = "forecast"
    tenant: str
    month: str
    generated_at: datetime
    spend_to_date_usd: Decimal = Field(description="list cost, month to date")
    daily_rate_usd: Decimal = Field(description="list cost per day over the last seven days of the month")
    projected_list_usd: Decimal
    projected_volume_discount_usd: Decimal
    projected_net_usd: Decimal = Field(description="what the month is projected to cost, after volume discounts")
    last_month_net_usd: Decimal
    alert_at_usd: Decimal | None
    alert: bool | None = Field(description="projected_net_usd reaches alert_at_usd (null: no threshold given)")
    by: Grouping | None = None
    groups: list[GroupForecast] = Field(default_factory=list)


async def forecast(
    repository: UsageRepository,
    pricing: Pricing,
    *,
    tenant: str,
    now: datetime,
    alert_at: Decimal | None = None,
    by: Grouping | None = None,
) -> Forecast:
    """Month-end projection: the month's spend so far plus the rest of the month at the recent daily rate."""
    start = month_start(now)
    end = next_month(start)
    recent_since = max(start, now - _RECENT)
    recent_days = Decimal((now - recent_since).total_seconds()) / 86_400
    remaining_days = Decimal((end - now).total_seconds()) / 86_400

    def projected(to_date: Decimal, recent: Decimal) -> tuple[Decimal, Decimal]:
        rate = recent / recent_days if recent_days > 0 else _ZERO
        return rate, to_date + rate * remaining_days

    spend_to_date = await repository.spend(start, now)
    rate, projected_list = projected(spend_to_date, await repository.spend(recent_since, now))
    discount = pricing.volume_discount(projected_list, at=start)
    last_start = previous_month(start)
    last_month_list = await repository.spend(last_start, start)
    last_month_net = last_month_list - pricing.volume_discount(last_month_list, at=last_start)
    groups = []
    if by is not None:
        recent = {totals.key: totals.cost_usd for totals in await repository.totals(recent_since, now, (by,))}
        for totals in await repository.totals(start, now, (by,)):
            _, group_projection = projected(totals.cost_usd, recent.get(totals.key, _ZERO))
            groups.append(
                GroupForecast(
                    key=totals.key[0], spend_to_date_usd=usd(totals.cost_usd), projected_usd=usd(group_projection)
                )
            )
        groups.sort(key=lambda group: -group.projected_usd)
    projected_net = projected_list - discount
    return Forecast(
        tenant=tenant,
        month=f"{start:%Y-%m}",
        generated_at=now,
        spend_to_date_usd=usd(spend_to_date),
        daily_rate_usd=usd(rate),
        projected_list_usd=usd(projected_list),
        projected_volume_discount_usd=usd(discount),
        projected_net_usd=usd(projected_net),
        last_month_net_usd=usd(last_month_net),
        alert_at_usd=alert_at,
        alert=None if alert_at is None else projected_net >= alert_at,
        by=by,
        groups=groups,
    )


# -- efficiency --------------------------------------------------------------------------------------------------


class ModelShare(BaseModel):
    model: str
    requests: int
    list_cost_usd: Decimal
    cost_share: float
    request_share: float


class EfficiencyFigures(BaseModel):
    window: Window
    requests: int
    list_cost_usd: Decimal
    cache_hit_rate: float | None = Field(description="cache reads over all prompt tokens")
    cost_per_request_usd: Decimal | None
    sessions: int = Field(description="distinct Claude Code sessions (known from telemetry)")
    cost_per_session_usd: Decimal | None = Field(description="over the records that name a session")
    users: int
    cost_per_user_usd: Decimal | None
    incomplete_share: float | None = Field(description="of requests, cut off mid-stream")
    model_mix: list[ModelShare]


class Efficiency(BaseModel):
    report: Literal["efficiency"] = "efficiency"
    tenant: str
    generated_at: datetime
    current: EfficiencyFigures
    previous: EfficiencyFigures | None
    changes: dict[str, float | None] = Field(
        description="relative change of each figure from previous to current (0.1 is 10% more); null when either "
        "side has no value or the previous one is zero"
    )


_COMPARED = (
    "requests",
    "list_cost_usd",
    "cache_hit_rate",
    "cost_per_request_usd",
    "cost_per_session_usd",
    "cost_per_user_usd",
)


async def efficiency(
    repository: UsageRepository, *, tenant: str, period: PeriodName, compare: Comparison, now: datetime
) -> Efficiency:
    """List-cost figures (a discount tier crossed would otherwise read as a gain in efficiency)."""
    current_window = window(period, now)
    earlier = compared_window(current_window, compare, now)
    current = await _figures(repository, current_window)
    previous = await _figures(repository, earlier) if earlier is not None else None
    changes: dict[str, float | None] = {}
    if previous is not None:
        for name in _COMPARED:
            now_value, then_value = getattr(current, name), getattr(previous, name)
            changes[name] = (
                None if now_value is None or not then_value else float((now_value - then_value) / then_value)
            )
    return Efficiency(tenant=tenant, generated_at=now, current=current, previous=previous, changes=changes)


async def _figures(repository: UsageRepository, span: Window) -> EfficiencyFigures:
    (totals,) = await repository.totals(span.since, span.until)
    by_model = await repository.totals(span.since, span.until, ("model",))
    cost = totals.cost_usd
    return EfficiencyFigures(
        window=span,
        requests=totals.requests,
        list_cost_usd=usd(cost),
        cache_hit_rate=_cache_hit_rate(totals),
        cost_per_request_usd=usd(cost / totals.requests) if totals.requests else None,
        sessions=totals.sessions,
        cost_per_session_usd=usd(totals.session_cost_usd / totals.sessions) if totals.sessions else None,
        users=totals.users,
        cost_per_user_usd=usd(cost / totals.users) if totals.users else None,
        incomplete_share=totals.incomplete / totals.requests if totals.requests else None,
        model_mix=[
            ModelShare(
                model=model.key[0] or "",
                requests=model.requests,
                list_cost_usd=usd(model.cost_usd),
                cost_share=float(model.cost_usd / cost) if cost > 0 else 0.0,
                request_share=model.requests / totals.requests if totals.requests else 0.0,
            )
            for model in by_model
        ],
    )


# -- CSV ---------------------------------------------------------------------------------------------------------


def report_csv(report: CostReport | TeamSummary) -> str:
    """One row per group (CostReport) or team (TeamSummary), with a header; amounts in USD as plain decimals."""
    rows: list[BaseModel] = list(report.groups) if isinstance(report, CostReport) else list(report.teams)
    fields = list((GroupCost if isinstance(report, CostReport) else TeamSummaryRow).model_fields)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        values = row.model_dump(mode="json")
        writer.writerow(["" if values[field] is None else _csv_safe(str(values[field])) for field in fields])
    return out.getvalue()


def _csv_safe(value: str) -> str:
    # A spreadsheet runs a cell starting with =, +, - or @ as a formula (CSV injection, OWASP); names come from
    # users and clients. Negative numbers never occur here.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
