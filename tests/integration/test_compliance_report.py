"""`chamberlain compliance-report` and `chamberlain security-scan` on a real store with events written through the
audit log: figures, evidence, escaping, period selection and exit codes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import Result
from typer.testing import CliRunner

from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.audit.reports import FRAMEWORKS, REPORT_JSON_SCHEMA
from chamberlain.audit.security_scan import SCAN_JSON_SCHEMA
from chamberlain.cli.compliance import FINDINGS_EXIT_CODE
from chamberlain.cli.main import app
from chamberlain.crypto.master_key import load_master_key
from chamberlain.settings import load_settings
from chamberlain.store.clients import ClientRepository
from chamberlain.store.database import create_database

runner = CliRunner()
SCRIPT = "<script>alert(1)</script>"


def invoke(data_dir: Path, *args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, [*args, "--data-dir", str(data_dir)], input=stdin, env={})


def write_events(data_dir: Path, events: Iterable[AuditEvent]) -> None:
    async def write() -> None:
        settings = load_settings(data_dir=data_dir, environ={})
        database = create_database(settings.effective_database_url)
        log = AuditLog(database, load_master_key(data_dir, environ={}), settings.audit)
        await log.start()
        try:
            for event in events:
                log.record(event)
            await log.flush()
        finally:
            await log.aclose()
            await database.dispose()

    asyncio.run(write())


def event(action: Action, outcome: str = "success", **fields: Any) -> AuditEvent:
    fields.setdefault("actor", Actor("user", "u-admin"))
    return AuditEvent(action=action, outcome=outcome, tenant="default", **fields)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two users (one with TOTP), three CLI admin changes, and a period's worth of events."""
    data_dir = tmp_path_factory.mktemp("compliance")
    assert invoke(data_dir, "init").exit_code == 0
    added = invoke(data_dir, "users", "add", "carol", "--role", "developer", "--password-stdin", stdin="pass-word-1\n")
    assert added.exit_code == 0, added.output
    assert invoke(data_dir, "users", "totp", "carol").exit_code == 0
    forty_days_ago = time.time() - 40 * 86_400
    write_events(
        data_dir,
        [
            *(event(Action.SIGN_IN, "failure", target="user:u-carol", reason="bad_password") for _ in range(3)),
            event(Action.SIGN_IN, "failure", actor=Actor("user", "unknown:1"), details={"username_hash": "ab12"}),
            *(event(Action.SIGN_IN, target="user:u-carol") for _ in range(2)),
            event(Action.SIGN_IN, "failure", target="user:u-carol", time=forty_days_ago),
            *(event(Action.MCP_REQUEST, target="mcp:demo/tools/echo") for _ in range(4)),
            event(Action.MCP_REQUEST, "denied", target="mcp:demo/tools/echo", reason=SCRIPT),
            event(Action.DLP_DETECTION, target="mcp:demo/tools/echo", details={"action": "redacted"}),
            event(Action.ADMIN_CHANGE, target="role:developer"),  # no before and after: a change-management gap
            event(Action.CREDENTIAL_ROTATED, target="server:github"),
            event(Action.AUDIT_ERASURE, target="subject:u-gone"),
        ],
    )
    return data_dir


def report(store: Path, framework: str, *options: str) -> dict[str, Any]:
    result = invoke(store, "compliance-report", "--framework", framework, *options)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(document, REPORT_JSON_SCHEMA)
    return document


def control(document: dict[str, Any], control_id: str) -> dict[str, Any]:
    return next(found for found in document["controls"] if found["id"] == control_id)


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_every_framework_reports_each_of_its_controls(store: Path, framework: str) -> None:
    document = report(store, framework)
    assert [found["id"] for found in document["controls"]] == [found.id for found in FRAMEWORKS[framework]]
    assert sum(document["summary"].values()) == len(document["controls"])


def test_mfa_coverage_counts_enrolled_users(store: Path) -> None:
    mfa = control(report(store, "soc2"), "soc2-cc6.1-mfa")
    assert mfa["status"] == "gap"  # the bootstrap admin has no second factor
    assert mfa["figures"]["users"] == 2
    assert mfa["figures"]["enrolled"] == 1
    assert mfa["figures"]["coverage_percent"] == 50.0
    assert mfa["figures"]["administrators_enrolled"] == 0


def test_failed_sign_ins_are_counted_per_target_by_keyed_hash(store: Path) -> None:
    sign_ins = control(report(store, "hipaa"), "hipaa-164.308a5iiC")
    figures = sign_ins["figures"]
    assert sign_ins["status"] == "evidenced"
    assert (figures["sign_in_attempts"], figures["failed"], figures["distinct_targets"]) == (6, 4, 2)
    top = figures["top_targets_by_keyed_hash"][0]
    assert top["count"] == 3
    assert len(top["value"]) == 16
    assert "carol" not in json.dumps(sign_ins)
    assert sign_ins["evidence"]["event_count"] == 4
    assert len(sign_ins["evidence"]["event_ids"]) == 4
    again = control(report(store, "hipaa"), "hipaa-164.308a5iiC")
    assert again["figures"]["top_targets_by_keyed_hash"][0]["value"] == top["value"]  # stable across reports


def test_the_period_selects_the_events(store: Path) -> None:
    today = datetime.now(UTC).date()
    whole = f"{today - timedelta(days=45)}..{today}"
    assert control(report(store, "sox", "--period", whole), "sox-itgc-operations")["figures"]["failed"] == 5
    future = f"{today + timedelta(days=2)}..{today + timedelta(days=3)}"
    quiet = control(report(store, "sox", "--period", future), "sox-itgc-operations")
    assert quiet["status"] == "gap"
    assert quiet["figures"]["sign_in_attempts"] == 0


def test_privileged_actions_and_changes(store: Path) -> None:
    document = report(store, "sox")
    privileged = control(document, "sox-itgc-access-privileged")
    # users add, users totp (both by the CLI, with before and after) and the role change written above.
    assert privileged["figures"]["admin_changes"] == 3
    assert privileged["status"] == "evidenced"  # admin changes and credential reads are fail-closed by default
    change = control(document, "sox-itgc-change")
    assert change["status"] == "gap"
    assert change["figures"]["without_before_and_after"] == 1
    assert len(change["evidence"]["event_ids"]) == 1


def test_dlp_erasure_and_access_decisions(store: Path) -> None:
    gdpr = report(store, "gdpr")
    assert control(gdpr, "gdpr-art17")["figures"]["erasures"] == 1
    assert control(gdpr, "gdpr-art33-detection")["status"] == "evidenced"
    access = control(gdpr, "gdpr-art32-access")["figures"]
    assert (access["requests_allowed"], access["requests_denied"]) == (4, 1)
    assert access["top_denial_reasons"] == [{"value": SCRIPT, "count": 1}]


def test_the_html_report_escapes_event_fields(store: Path) -> None:
    result = invoke(store, "compliance-report", "--framework", "soc2", "--format", "html")
    assert result.exit_code == 0, result.output
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in result.stdout
    assert SCRIPT not in result.stdout
    assert "<script" not in result.stdout  # no script of its own either: the file is inert


def test_the_csv_report_has_one_row_per_control(store: Path, tmp_path: Path) -> None:
    output = tmp_path / "soc2.csv"
    result = invoke(store, "compliance-report", "--framework", "soc2", "--format", "csv", "--output", str(output))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert [row["control_id"] for row in rows] == [found.id for found in FRAMEWORKS["soc2"]]
    mfa = next(row for row in rows if row["control_id"] == "soc2-cc6.1-mfa")
    assert mfa["status"] == "gap"
    assert json.loads(mfa["figures"])["coverage_percent"] == 50.0


@pytest.mark.parametrize(
    ("option", "value"),
    [("--period", "fortnight"), ("--period", "2026-03-31..2026-01-01"), ("--framework", "iso27001")],
)
def test_invalid_options_are_named(store: Path, option: str, value: str) -> None:
    arguments = {"--framework": "soc2", "--period": "30d", option: value}
    result = invoke(store, "compliance-report", *(part for pair in arguments.items() for part in pair))
    assert result.exit_code == 2
    assert f"'{option}'" in result.output
    assert "Traceback" not in result.output


# -- security-scan -----------------------------------------------------------------------------------------------


def scan(data_dir: Path, *options: str) -> tuple[int, dict[str, Any]]:
    result = invoke(data_dir, "security-scan", "--format", "json", "--no-dependencies", *options)
    document: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(document, SCAN_JSON_SCHEMA)
    return result.exit_code, document


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    assert invoke(tmp_path, "init").exit_code == 0
    return tmp_path


def test_the_exit_code_follows_fail_on(fresh: Path) -> None:
    code, document = scan(fresh)
    assert code == FINDINGS_EXIT_CODE  # the bootstrap admin has no second factor (high)
    assert ("mfa-not-enforced", "user:admin") in {(found["id"], found["target"]) for found in document["findings"]}
    assert scan(fresh, "--fail-on", "critical")[0] == 0
    assert invoke(fresh, "users", "totp", "admin").exit_code == 0
    code, document = scan(fresh)
    assert code == 0
    assert document["failed"] is False


def test_the_text_output_lists_findings_and_their_fixes(fresh: Path) -> None:
    result = invoke(fresh, "security-scan", "--no-dependencies")
    assert result.exit_code == FINDINGS_EXIT_CODE
    assert "HIGH     mfa-not-enforced" in result.stdout
    assert "fix: chamberlain users totp admin" in result.stdout


def test_the_scan_reads_the_configuration_file_and_the_store(fresh: Path) -> None:
    secret = "ghp_0123456789abcdefghij"
    (fresh / "chamberlain.yaml").write_text(
        f"servers:\n  github:\n    url: https://mcp.example.com/mcp\n    credential:\n      type: header\n"
        f"      value: {secret}\n"
    )

    async def add_clients() -> None:
        settings = load_settings(data_dir=fresh, environ={})
        database = create_database(settings.effective_database_url)
        try:
            clients = ClientRepository(database, settings.tenant)
            await clients.add("open", "static", {"redirect_uris": ["http://app.example.com/cb"]}, None)
            await clients.add("gone", "static", {"redirect_uris": ["http://old.example.com/cb"]}, None)
            await clients.revoke("gone")
        finally:
            await database.dispose()

    asyncio.run(add_clients())
    _, document = scan(fresh)
    found = {(finding["id"], finding["target"]): finding for finding in document["findings"]}
    assert found[("plaintext-secret", "servers.github.credential.value")]["location"] == "chamberlain.yaml:6"
    assert ("permissive-redirect-uri", "client:open") in found
    assert ("permissive-redirect-uri", "client:gone") not in found  # revoked clients cannot use their URIs
    # A server from the file has no registration date: its credential's age is unknown until it is rotated.
    assert found[("credential-not-rotated", "servers.github.credential")]["severity"] == "low"
    assert secret not in json.dumps(document)

    write_events(fresh, [event(Action.CREDENTIAL_ROTATED, target="server:github")])
    _, document = scan(fresh)
    assert "credential-not-rotated" not in {finding["id"] for finding in document["findings"]}
