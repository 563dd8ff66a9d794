"""The Overview (today's figures) and Cost pages: the same reports as the admin API's /cost (cost/reports.py),
aggregated in the database over bounded windows (today, this month, the last 30 days)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import get_args

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from chamberlain.console.access import Viewer
from chamberlain.console.audit import chain_status
from chamberlain.console.charts import bar_chart
from chamberlain.console.queries import daily_spend, today_counts, usernames
from chamberlain.cost.budgets import period_bounds
from chamberlain.cost.pricing import Pricing, PricingError
from chamberlain.cost.reports import Grouping, forecast, month_start, usd
from chamberlain.store.usage import UsageRepository

CHART_DAYS = 30


@dataclass(frozen=True)
class MonthGroup:
    key: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    net_cost_usd: Decimal
    share: float


async def month_reports(usage: UsageRepository, pricing: Pricing, now: datetime) -> dict[Grouping, list[MonthGroup]]:
    """This month's spend by model, user and team: cost/reports.py's `cost_report` for period "month", in one scan
    per grouping instead of four (within one calendar month the volume discount is one rate for every group)."""
    start = month_start(now)
    (overall,) = await usage.totals(start, now)
    whole = overall.cost_usd
    rate = pricing.volume_discount(whole, at=start) / whole if whole > 0 else Decimal(0)
    reports: dict[Grouping, list[MonthGroup]] = {}
    for by in get_args(Grouping):
        reports[by] = [
            MonthGroup(
                key=totals.key[0],
                requests=totals.requests,
                input_tokens=totals.input_tokens,
                output_tokens=totals.output_tokens,
                net_cost_usd=usd(totals.cost_usd * (1 - rate)),
                share=float(totals.cost_usd / whole) if whole > 0 else 0.0,
            )
            for totals in await usage.totals(start, now, (by,))
        ]
    return reports


async def overview(request: Request, viewer: Viewer) -> Response:
    tenant = viewer.tenant
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    usage = UsageRepository(tenant.database, tenant.id)
    today = await today_counts(tenant.database, tenant.id, now)
    (llm,) = await usage.totals(midnight, now)
    requests = today.requests + llm.requests
    context = {
        "title": "Overview",
        "today": today,
        "requests": requests,
        "error_rate": f"{today.errors / requests:.1%}" if requests else "0.0%",
        "spend_today": await usage.spend(midnight, now),
        "spend_month": await usage.spend(month_start(now), now),
        "chain": chain_status(tenant.database, tenant.id),
    }
    return viewer.render("overview.html", context)


async def cost(request: Request, viewer: Viewer) -> Response:
    tenant = viewer.tenant
    now = datetime.now(UTC)
    usage = UsageRepository(tenant.database, tenant.id)
    try:
        pricing = tenant.shared.llm.pricing(tenant)  # read once per file, as the LLM proxy prices with it
    except PricingError:
        raise HTTPException(409, "The tenant's pricing file cannot be used; fix llm.pricing_file.") from None
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [midnight - timedelta(days=back) for back in range(CHART_DAYS - 1, -1, -1)]
    daily = await daily_spend(tenant.database, tenant.id, starts, now)
    days = [(f"{start:%m-%d}", float(amount)) for start, amount in zip(starts, daily, strict=True)]
    chart = bar_chart(
        days,
        title=f"Daily spend over the last {CHART_DAYS} days (USD)",
        testid="cost-chart",
        chart_id="cost-chart",
        unit="$",
        label_every=5,
    )
    reports = await month_reports(usage, pricing, now)
    # Names for the users in the report only (a tenant may have many thousands).
    user_keys = [group.key for group in reports["user"] if group.key]
    names = await usernames(tenant.database, tenant.id, user_keys)
    budgets = []
    for rule in tenant.config.budgets:
        _, since, until = period_bounds(rule.period, now.timestamp())
        spent = await usage.spend(
            since,
            min(until, now),
            user=rule.name if rule.scope == "user" else None,
            team=rule.name if rule.scope == "team" else None,
        )
        share = spent / rule.limit_usd if rule.limit_usd else Decimal(0)
        budgets.append(
            {
                "rule": rule,
                "spent": spent,
                "share": f"{share:.0%}",
                "per_subject": rule.name is None and rule.scope != "tenant",
            }
        )
    context = {
        "title": "Cost",
        "chart": chart,
        "days": days,
        "reports": reports,
        "names": names,
        "budgets": budgets,
        "forecast": await forecast(usage, pricing, tenant=tenant.id, now=now),
    }
    return viewer.render("cost.html", context)
