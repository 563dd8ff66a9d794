"""/cost: the tenant's LLM spend by model, user or team, the team summary, the month-end forecast and efficiency.

Read-only, for administrators and for roles with `audit_access: read` (the gate lets those through on these routes
only; admin/auth.py). The same reports as `chamberlain cost` (cost/reports.py), priced with the tenant's
`llm.pricing_file` over the built-in prices. Amounts are USD decimals, as strings, exact to the micro-dollar.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from chamberlain.admin.auth import Admin, Administrator
from chamberlain.admin.common import problems
from chamberlain.admin.problems import ProblemError
from chamberlain.cost.pricing import Pricing, PricingError
from chamberlain.cost.reports import (
    Comparison,
    CostReport,
    Efficiency,
    Forecast,
    Grouping,
    PeriodName,
    TeamSummary,
    cost_report,
    efficiency,
    forecast,
    report_csv,
    team_summary,
)
from chamberlain.store.usage import UsageRepository

router = APIRouter(prefix="/cost", tags=["cost"])

Period = Annotated[
    PeriodName,
    Query(description="24h or 7d (ending now), month (this calendar month, UTC, so far) or last-month"),
]
Format = Annotated[Literal["json", "csv"], Query(description="csv: one row per group, with a header")]
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "The report"}
}
_CSV_MEDIA_TYPE = "text/csv; charset=utf-8"


def cost_reader(admin: Admin) -> Administrator:
    profile = admin.tenant.policy.profile(admin.user.roles)
    if not (profile.administrative or profile.audit_read):
        raise ProblemError(403, "reading cost reports needs administrative functions or audit_access: read")
    return admin


Reader = Annotated[Administrator, Depends(cost_reader)]


def _pricing(admin: Administrator) -> Pricing:
    try:
        return admin.tenant.shared.llm.pricing(admin.tenant)  # read once per file, as the LLM proxy prices with it
    except PricingError as problem:
        raise ProblemError(
            409, f"the tenant's pricing file cannot be used: {problem}", kind="invalid-pricing"
        ) from None


def _usage(admin: Administrator) -> UsageRepository:
    return UsageRepository(admin.tenant.database, admin.tenant.id)


def _csv_or(report: CostReport | TeamSummary, output: str) -> Any:
    if output == "csv":
        return Response(report_csv(report), media_type=_CSV_MEDIA_TYPE)
    return report


@router.get(
    "/report",
    response_model=CostReport,
    responses={**problems(409), **_CSV},
    summary="Spend by model, user or team",
)
async def get_cost_report(
    reader: Reader,
    by: Annotated[Grouping, Query(description="group by model, user or team")] = "model",
    period: Period = "month",
    output: Annotated[Format, Query(alias="format")] = "json",
) -> Any:
    names = {user.id: user.username for user in await reader.tenant.users.list()} if by == "user" else None
    report = await cost_report(
        _usage(reader),
        _pricing(reader),
        tenant=reader.tenant.id,
        by=by,
        period=period,
        now=datetime.now(UTC),
        names=names,
    )
    return _csv_or(report, output)


@router.get(
    "/team-summary",
    response_model=TeamSummary,
    responses={**problems(409), **_CSV},
    summary="Per team: users, requests, cost, cost per user, cache hits, top model",
)
async def get_team_summary(
    reader: Reader, period: Period = "month", output: Annotated[Format, Query(alias="format")] = "json"
) -> Any:
    summary = await team_summary(
        _usage(reader), _pricing(reader), tenant=reader.tenant.id, period=period, now=datetime.now(UTC)
    )
    return _csv_or(summary, output)


@router.get(
    "/forecast",
    response_model=Forecast,
    responses=problems(409),
    summary="This month's projected cost",
    description="The month so far plus the rest of it at the last seven days' daily rate; `alert` says whether the "
    "projected net cost reaches `alert_at`.",
)
async def get_forecast(
    reader: Reader,
    alert_at: Annotated[Decimal | None, Query(ge=0, le=10**12, description="USD")] = None,
    by: Annotated[Grouping | None, Query(description="also project each model, user or team")] = None,
) -> Forecast:
    return await forecast(
        _usage(reader), _pricing(reader), tenant=reader.tenant.id, now=datetime.now(UTC), alert_at=alert_at, by=by
    )


@router.get(
    "/efficiency",
    response_model=Efficiency,
    responses=problems(),
    summary="Cache hit rate, cost per request, session and user, model mix, against an earlier period",
)
async def get_efficiency(
    reader: Reader,
    period: Period = "month",
    compare: Annotated[
        Comparison, Query(description="last-month (the previous calendar month), previous (the period before), none")
    ] = "last-month",
) -> Efficiency:
    return await efficiency(
        _usage(reader), tenant=reader.tenant.id, period=period, compare=compare, now=datetime.now(UTC)
    )
