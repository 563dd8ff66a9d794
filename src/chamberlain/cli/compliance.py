"""`chamberlain compliance-report` and `chamberlain security-scan`: evidence for auditors, a lint for CI."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from chamberlain.audit.reports import (
    FORMATS,
    Framework,
    Observations,
    assess,
    parse_period,
    tally_events,
)
from chamberlain.audit.security_scan import (
    SEVERITIES,
    ConfigFileText,
    Finding,
    Inventory,
    ScanLimits,
    Severity,
    audit_dependencies,
    by_severity,
    read_inventory,
    scan_configuration,
    scan_document,
)
from chamberlain.cli.common import ConfigFile, DataDir, initialised_store, reported_errors, run, settings_from
from chamberlain.crypto.master_key import load_master_key
from chamberlain.settings import CONFIG_FILE_NAME, Settings

# Exit status of security-scan when a finding is at or above --fail-on (1 is an error, 2 a usage mistake).
FINDINGS_EXIT_CODE = 3
_REPORT_TARGET_KEY = "audit-report-targets"  # HKDF purpose of the key that hashes sign-in targets in reports


def compliance_report(
    framework: Annotated[Framework, typer.Option("--framework", help="The framework whose controls to report.")],
    period_text: Annotated[
        str,
        typer.Option(
            "--period",
            help="30d (the last 30 days), 2026-01-01..2026-03-31 (UTC days, inclusive), quarter (this quarter so "
            "far) or 2026-Q1.",
        ),
    ] = "30d",
    output_format: Annotated[Literal["json", "csv", "html"], typer.Option("--format", help="Output format.")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of standard output.")
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Report which controls of a framework the audit log and the configuration evidence."""
    try:
        period = parse_period(period_text)
    except ValueError as problem:
        raise typer.BadParameter(str(problem), param_hint="'--period'") from None
    settings = settings_from(data_dir, config)

    async def build() -> str:
        async with initialised_store(settings) as database:
            master_key = load_master_key(settings.data_dir)
            inventory = await read_inventory(database, settings, master_key)
            tally = await tally_events(database, settings.tenant, period, master_key.derive(_REPORT_TARGET_KEY))
        report = assess(framework, Observations(tally, inventory, settings, period))
        return FORMATS[output_format](report)

    text = run(build())
    if output is None:
        sys.stdout.write(text)
        return
    with reported_errors():
        output.write_text(text, encoding="utf-8")


def security_scan(
    fail_on: Annotated[
        Severity, typer.Option("--fail-on", help="Exit with status 3 when a finding is at least this severe.")
    ] = "high",
    output_format: Annotated[Literal["text", "json"], typer.Option("--format", help="Output format.")] = "text",
    dependencies: Annotated[
        bool,
        typer.Option("--dependencies/--no-dependencies", help="Check installed packages with pip-audit if present."),
    ] = True,
    max_age_days: Annotated[
        int, typer.Option("--max-age-days", min=1, help="Rotation age for signing keys and upstream credentials.")
    ] = 90,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Lint the configuration and the store for settings that weaken security (exit status 3 on findings)."""
    settings = settings_from(data_dir, config)

    async def inspect() -> Inventory:
        async with initialised_store(settings) as database:
            return await read_inventory(database, settings, load_master_key(settings.data_dir))

    inventory = run(inspect())
    limits = ScanLimits(max_signing_key_age_days=max_age_days, max_credential_age_days=max_age_days)
    findings = scan_configuration(settings, inventory, _config_file(settings, config), limits=limits)
    if dependencies:
        findings += audit_dependencies(shutil.which("pip-audit"), sys.executable)
    findings = by_severity(findings)
    document = scan_document(findings, tenant=settings.tenant, fail_on=fail_on)
    if output_format == "json":
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_as_text(findings, fail_on))
    if document["failed"]:
        raise typer.Exit(FINDINGS_EXIT_CODE)


def _config_file(settings: Settings, config: Path | None) -> ConfigFileText | None:
    path = config or settings.data_dir / CONFIG_FILE_NAME
    try:
        return ConfigFileText(path, path.read_text(encoding="utf-8"))
    except OSError:
        return None  # no file: every setting is a default or from the environment


def _as_text(findings: list[Finding], fail_on: Severity) -> str:
    lines = []
    for finding in findings:
        where = f" ({finding.location})" if finding.location else ""
        lines += [
            f"{finding.severity.upper():8} {finding.id}: {finding.title}",
            f"         {finding.target}{where}: {finding.detail}",
            f"         fix: {finding.fix}",
        ]
    counts = ", ".join(f"{sum(f.severity == s for f in findings)} {s}" for s in reversed(SEVERITIES))
    lines.append(f"{len(findings)} findings ({counts}); failing on {fail_on} and above.")
    return "\n".join(lines) + "\n"
