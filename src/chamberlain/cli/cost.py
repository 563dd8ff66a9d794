"""`chamberlain cost`: spend by model, user or team, a team summary, the month-end forecast and efficiency figures.

Reports read the usage records (cost/reports.py) with the tenant's prices (`llm.pricing_file` over the built-in
ones) for its volume discounts. Text goes to the terminal; `--export csv|json` (report) and `--format json` (the
others) write machine-readable output to standard output or `--output`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel
from rich.table import Table

from chamberlain.cli.common import (
    ConfigFile,
    DataDir,
    Tenant,
    console,
    reported_errors,
    run,
    settings_from,
    tenant_store,
)
from chamberlain.cost.pricing import Pricing
from chamberlain.cost.reports import (
    Comparison,
    CostReport,
    Efficiency,
    EfficiencyFigures,
    Forecast,
    GroupCost,
    Grouping,
    PeriodName,
    TeamSummary,
    cost_report,
    efficiency,
    forecast,
    report_csv,
    team_summary,
)
from chamberlain.settings import Settings
from chamberlain.store.usage import UsageRepository
from chamberlain.store.users import UserRepository
from chamberlain.tenancy.effective import load_effective_config

app = typer.Typer(help="LLM usage and cost: reports, forecast and efficiency.", no_args_is_help=True)
# Exit status of `forecast` when the projection reaches --alert-at (1 is an error, 2 a usage mistake).
ALERT_EXIT_CODE = 3

PeriodOption = Annotated[
    PeriodName,
    typer.Option("--period", help="24h or 7d (ending now), month (this calendar month, UTC, so far) or last-month."),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of standard output.")
]
FormatOption = Annotated[Literal["text", "json"], typer.Option("--format", help="Output format.")]


@dataclass(frozen=True)
class _Opened:
    repository: UsageRepository
    pricing: Pricing
    tenant: str
    users: UserRepository


@contextlib.asynccontextmanager
async def _opened(settings: Settings, tenant: str | None) -> AsyncIterator[_Opened]:
    async with tenant_store(settings, tenant) as (database, tenant_id):
        config = await load_effective_config(database, settings, tenant_id)
        pricing = Pricing.load(config.llm.pricing_file)
        yield _Opened(UsageRepository(database, tenant_id), pricing, tenant_id, UserRepository(database, tenant_id))


@app.command("report")
def report(
    by: Annotated[Grouping, typer.Option("--by", help="Group by model, user or team.")] = "model",
    period: PeriodOption = "month",
    summary: Annotated[
        bool,
        typer.Option("--team-summary", help="Per team: users, requests, cost, cost per user, cache hits, top model."),
    ] = False,
    export: Annotated[
        Literal["csv", "json"] | None, typer.Option("--export", help="Write CSV or JSON instead of a table.")
    ] = None,
    output: OutputOption = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Spend over a period by model, user or team (list cost, and net of volume discounts)."""
    settings = settings_from(data_dir, config)

    async def build() -> CostReport | TeamSummary:
        async with _opened(settings, tenant) as opened:
            now = datetime.now(UTC)
            if summary:
                return await team_summary(
                    opened.repository, opened.pricing, tenant=opened.tenant, period=period, now=now
                )
            names = {user.id: user.username for user in await opened.users.list()} if by == "user" else None
            return await cost_report(
                opened.repository, opened.pricing, tenant=opened.tenant, by=by, period=period, now=now, names=names
            )

    result = run(build())
    if export == "csv":
        _write(report_csv(result), output)
    elif export == "json":
        _write(_json(result), output)
    elif isinstance(result, TeamSummary):
        console.print(_team_table(result))
    else:
        console.print(_report_table(result))


@app.command("forecast")
def forecast_command(
    alert_at: Annotated[
        float | None,
        typer.Option(
            "--alert-at", min=0, metavar="USD", help=f"Exit {ALERT_EXIT_CODE} when the projection reaches it."
        ),
    ] = None,
    by: Annotated[Grouping | None, typer.Option("--by", help="Also project each model, user or team.")] = None,
    output_format: FormatOption = "text",
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Project this month's cost to its end from the spend so far and the last seven days' daily rate."""
    settings = settings_from(data_dir, config)
    threshold = Decimal(str(alert_at)) if alert_at is not None else None

    async def build() -> Forecast:
        async with _opened(settings, tenant) as opened:
            return await forecast(
                opened.repository,
                opened.pricing,
                tenant=opened.tenant,
                now=datetime.now(UTC),
                alert_at=threshold,
                by=by,
            )

    result = run(build())
    if output_format == "json":
        _write(_json(result), None)
    else:
        _print_forecast(result)
    if result.alert:
        raise typer.Exit(ALERT_EXIT_CODE)


@app.command("efficiency")
def efficiency_command(
    period: PeriodOption = "month",
    compare: Annotated[
        Comparison,
        typer.Option(
            "--compare", help="last-month (the previous calendar month), previous (the period before) or none."
        ),
    ] = "last-month",
    output_format: FormatOption = "text",
    tenant: Tenant = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Cache hit rate, cost per request, session and user, and the model mix, against an earlier period."""
    settings = settings_from(data_dir, config)

    async def build() -> Efficiency:
        async with _opened(settings, tenant) as opened:
            return await efficiency(
                opened.repository, tenant=opened.tenant, period=period, compare=compare, now=datetime.now(UTC)
            )

    result = run(build())
    if output_format == "json":
        _write(_json(result), None)
    else:
        _print_efficiency(result)


# -- output ------------------------------------------------------------------------------------------------------


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    with reported_errors():
        output.write_text(text, encoding="utf-8")


def _json(result: BaseModel) -> str:
    return json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def _money(amount: Decimal | None) -> str:
    if amount is None:
        return "-"
    return f"${amount:,.2f}" if abs(amount) >= 1 or amount == 0 else f"${amount:,.4f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _report_table(result: CostReport) -> Table:
    table = Table(
        result.by.capitalize(),
        "Requests",
        "Input",
        "Output",
        "Cache write",
        "Cache read",
        "List cost",
        "Net cost",
        "Share",
        title=f"{result.tenant}: cost by {result.by}, {result.window.label}",
    )
    for group in result.groups:
        label = group.name or group.key or "(none)"
        table.add_row(label, *_figures(group), _rate(group.share))
    total = result.total
    table.add_row("Total", *_figures(total), "", style="bold")
    if result.volume_discount_usd:
        table.caption = f"volume discount {_money(result.volume_discount_usd)}"
    return table


def _figures(group: GroupCost) -> list[str]:
    return [
        f"{group.requests:,}",
        f"{group.input_tokens:,}",
        f"{group.output_tokens:,}",
        f"{group.cache_write_tokens:,}",
        f"{group.cache_read_tokens:,}",
        _money(group.list_cost_usd),
        _money(group.net_cost_usd),
    ]


def _team_table(result: TeamSummary) -> Table:
    table = Table(
        "Team",
        "Users",
        "Requests",
        "List cost",
        "Net cost",
        "Per user",
        "Cache hits",
        "Top model",
        title=f"{result.tenant}: teams, {result.window.label}",
    )
    for row in result.teams:
        table.add_row(
            row.team or "(no team)",
            f"{row.users:,}",
            f"{row.requests:,}",
            _money(row.list_cost_usd),
            _money(row.net_cost_usd),
            _money(row.cost_per_user_usd),
            _rate(row.cache_hit_rate),
            row.top_model or "-",
        )
    table.add_row("Total", "", "", _money(result.list_cost_usd), _money(result.net_cost_usd), "", "", "", style="bold")
    return table


def _print_forecast(result: Forecast) -> None:
    console.print(f"{result.tenant}: {result.month}", style="bold", highlight=False)
    console.print(f"spent so far      {_money(result.spend_to_date_usd)} (list)", highlight=False)
    console.print(f"daily rate        {_money(result.daily_rate_usd)} (last 7 days)", highlight=False)
    console.print(f"projected         {_money(result.projected_list_usd)} (list)", highlight=False)
    if result.projected_volume_discount_usd:
        console.print(f"volume discount   {_money(result.projected_volume_discount_usd)}", highlight=False)
    console.print(f"projected net     {_money(result.projected_net_usd)}", highlight=False)
    console.print(f"last month (net)  {_money(result.last_month_net_usd)}", highlight=False)
    if result.groups:
        table = Table((result.by or "").capitalize(), "So far", "Projected")
        for group in result.groups:
            table.add_row(group.key or "(none)", _money(group.spend_to_date_usd), _money(group.projected_usd))
        console.print(table)
    if result.alert:
        console.print(f"[bold red]alert:[/] the projection reaches {_money(result.alert_at_usd)}", highlight=False)


def _print_efficiency(result: Efficiency) -> None:
    previous = result.previous
    columns = [result.current.window.label] + ([previous.window.label, "Change"] if previous is not None else [])
    table = Table("", *columns, title=f"{result.tenant}: efficiency")
    rows: list[tuple[str, str, Callable[[EfficiencyFigures], str]]] = [
        ("Requests", "requests", lambda figures: f"{figures.requests:,}"),
        ("List cost", "list_cost_usd", lambda figures: _money(figures.list_cost_usd)),
        ("Cache hit rate", "cache_hit_rate", lambda figures: _rate(figures.cache_hit_rate)),
        ("Cost per request", "cost_per_request_usd", lambda figures: _money(figures.cost_per_request_usd)),
        ("Cost per session", "cost_per_session_usd", lambda figures: _money(figures.cost_per_session_usd)),
        ("Cost per user", "cost_per_user_usd", lambda figures: _money(figures.cost_per_user_usd)),
        ("Cut off", "", lambda figures: _rate(figures.incomplete_share)),
    ]
    for label, key, show in rows:
        cells = [show(result.current)]
        if previous is not None:
            change = result.changes.get(key)
            cells += [show(previous), "-" if change is None else f"{change:+.1%}"]
        table.add_row(label, *cells)
    console.print(table)
    mix = Table("Model", "Requests", "List cost", "Cost share", title="model mix")
    for share in result.current.model_mix:
        mix.add_row(share.model, f"{share.requests:,}", _money(share.list_cost_usd), _rate(share.cost_share))
    console.print(mix)
