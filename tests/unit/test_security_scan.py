"""`security-scan` checks: each fires on the weakness it names and stays quiet on the safe configuration."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from chamberlain.audit.security_scan import (
    DAY,
    SCAN_JSON_SCHEMA,
    ConfigFileText,
    CredentialFacts,
    Finding,
    Inventory,
    SigningKeyFacts,
    UserFacts,
    audit_dependencies,
    by_severity,
    fails,
    scan_configuration,
    scan_document,
)
from chamberlain.settings import Settings
from chamberlain.store.clients import ClientRecord

NOW = 1_800_000_000.0
LOOPBACK = "http://127.0.0.1:8080"
PUBLIC = "https://gateway.example.com"


def settings(**values: Any) -> Settings:
    return Settings.model_validate({"issuer": LOOPBACK, "registration": {"dynamic_registration": False}, **values})


def user(name: str, *, admin: bool = False, mfa: bool = True, disabled: bool = False) -> UserFacts:
    return UserFacts(name, ("admin",) if admin else ("developer",), mfa, disabled, admin, NOW)


def client(client_id: str, *redirect_uris: str) -> ClientRecord:
    return ClientRecord(client_id, "default", "dynamic", None, {"redirect_uris": list(redirect_uris)}, NOW, None)


def inventory(**facts: Any) -> Inventory:
    defaults: dict[str, Any] = {
        "users": (user("admin", admin=True),),
        "signing_keys": (SigningKeyFacts("k1", NOW - DAY, signing=True),),
        "credentials": (),
        "clients": (),
        "built_in_servers": (),
    }
    return Inventory(**{**defaults, **facts})


def scan(
    config: Settings | None = None, facts: Inventory | None = None, config_text: str | None = None
) -> list[Finding]:
    file = ConfigFileText(Path("chamberlain.yaml"), config_text) if config_text is not None else None
    return scan_configuration(config or settings(), facts or inventory(), file, now=NOW)


def ids(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(finding.id, finding.severity, finding.target) for finding in findings]


def test_a_safe_configuration_has_no_findings() -> None:
    assert scan() == []


# -- MFA ---------------------------------------------------------------------------------------------------------


def test_an_administrator_without_totp_is_high() -> None:
    findings = scan(facts=inventory(users=(user("root", admin=True, mfa=False), user("dev"))))
    assert ids(findings) == [("mfa-not-enforced", "high", "user:root")]


def test_users_without_totp_are_counted_in_one_medium_finding() -> None:
    findings = scan(facts=inventory(users=(user("admin", admin=True), user("a", mfa=False), user("b", mfa=False))))
    assert ids(findings) == [("mfa-not-enforced", "medium", "users")]
    assert "2 of 3" in findings[0].detail


def test_disabled_accounts_are_not_asked_for_a_second_factor() -> None:
    assert scan(facts=inventory(users=(user("admin", admin=True), user("gone", mfa=False, disabled=True)))) == []


# -- lifetimes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "target", "severity"),
    [
        ({"login": {"session_ttl": 86_400}}, "login.session_ttl", "medium"),
        ({"tokens": {"refresh_token_ttl": 180 * 86_400}}, "tokens.refresh_token_ttl", "medium"),
        ({"tokens": {"access_token_ttl": 4 * 3600}}, "tokens.access_token_ttl", "low"),
        (
            {"roles": {"enterprise_roles": {"ops": {"mcp_servers": ["demo"], "session_duration": 24 * 60}}}},
            "roles.enterprise_roles.ops.session_duration",
            "medium",
        ),
    ],
)
def test_long_lifetimes_are_reported(values: dict[str, Any], target: str, severity: str) -> None:
    assert ids(scan(settings(**values))) == [("long-session-lifetime", severity, target)]


def test_lifetimes_at_the_limits_are_fine() -> None:
    roles = {"enterprise_roles": {"ops": {"mcp_servers": ["demo"], "session_duration": 12 * 60}}}
    config = settings(
        login={"session_ttl": 12 * 3600},
        tokens={"refresh_token_ttl": 90 * 86_400, "access_token_ttl": 3600},
        roles=roles,
    )
    assert scan(config) == []


# -- roles -------------------------------------------------------------------------------------------------------


def test_a_wildcard_role_without_administrative_functions_is_high() -> None:
    roles = {
        "enterprise_roles": {
            "admin": {"mcp_servers": "*", "data_classification_access": "*", "administrative_functions": True},
            "analyst": {"mcp_servers": "*", "data_classification_access": "*"},
        }
    }
    assert ids(scan(settings(roles=roles))) == [
        ("wildcard-role", "high", "roles.enterprise_roles.analyst.mcp_servers"),
        ("wildcard-role", "medium", "roles.enterprise_roles.analyst.data_classification_access"),
    ]


def test_the_default_roles_have_no_wildcard_finding() -> None:
    assert scan(settings()) == []  # the default admin role is "*" with administrative_functions


# -- plaintext secrets -------------------------------------------------------------------------------------------

SECRET = "sk-live-0123456789abcdef"
PLAINTEXT = f"""\
issuer: {LOOPBACK}
servers:
  github:
    url: https://mcp.example.com/mcp
    credential:
      type: header
      value: {SECRET}
  tracker:
    command: tracker-mcp
    env:
      TRACKER_API_TOKEN: {SECRET}
      LOG_LEVEL: debug
  billing:
    url: https://billing.example.com/mcp
    credential:
      type: client_credentials
      token_endpoint: https://auth.example.com/token
      client_id: gateway
      client_secret: {SECRET}
database_url: postgresql://chamberlain:{SECRET}@db.example.com/chamberlain
"""
REFERENCED = f"""\
issuer: {LOOPBACK}
servers:
  github:
    url: https://mcp.example.com/mcp
    credential:
      type: header
      value_env: GITHUB_TOKEN
  tracker:
    command: tracker-mcp
    env:
      LOG_LEVEL: debug
database_url: postgresql://chamberlain@db.example.com/chamberlain
"""


def test_secrets_written_in_the_file_are_found_with_their_line_and_never_repeated() -> None:
    findings = scan(config_text=PLAINTEXT)
    assert [(finding.target, finding.location) for finding in findings] == [
        ("servers.github.credential.value", "chamberlain.yaml:7"),
        ("servers.tracker.env.TRACKER_API_TOKEN", "chamberlain.yaml:11"),
        ("servers.billing.credential.client_secret", "chamberlain.yaml:19"),
        ("database_url", "chamberlain.yaml:20"),
    ]
    assert {finding.severity for finding in findings} == {"high"}
    assert SECRET not in json.dumps([finding.as_dict() for finding in findings])


def test_secrets_named_by_environment_variable_are_fine() -> None:
    assert scan(config_text=REFERENCED) == []


# -- issuer, registration, demo ----------------------------------------------------------------------------------


def test_a_plain_http_issuer_on_a_network_address_is_critical() -> None:
    assert ids(scan(settings(issuer="http://gateway.example.com"))) == [("http-issuer", "critical", "issuer")]


@pytest.mark.parametrize("issuer", [LOOPBACK, "http://localhost:8080", "http://[::1]:8080", PUBLIC])
def test_https_and_loopback_issuers_are_fine(issuer: str) -> None:
    assert scan(settings(issuer=issuer)) == []


def test_private_network_fetches_are_high() -> None:
    config = settings(registration={"dynamic_registration": False, "allow_private_networks": True})
    assert ids(scan(config)) == [("private-network-fetches", "high", "registration.allow_private_networks")]


def test_open_dynamic_registration_is_low_in_production_and_info_on_loopback() -> None:
    registration = {"dynamic_registration": True}
    assert ids(scan(settings(issuer=PUBLIC, registration=registration))) == [
        ("open-dynamic-registration", "low", "registration.dynamic_registration")
    ]
    assert [finding.severity for finding in scan(settings(registration=registration))] == ["info"]


def test_the_demo_server_on_a_network_address_is_reported() -> None:
    facts = inventory(built_in_servers=("demo",))
    assert ids(scan(settings(issuer=PUBLIC), facts)) == [("demo-server-exposed", "medium", "server:demo")]
    assert scan(settings(), facts) == []  # on loopback it is what a developer tries out


# -- rotation ----------------------------------------------------------------------------------------------------


def test_an_old_signing_key_is_reported_and_a_retiring_one_is_not() -> None:
    old = inventory(signing_keys=(SigningKeyFacts("k-old", NOW - 120 * DAY, signing=True),))
    assert ids(scan(facts=old)) == [("signing-key-not-rotated", "medium", "signing_key:k-old")]
    retiring = inventory(
        signing_keys=(
            SigningKeyFacts("k-old", NOW - 120 * DAY, signing=False),
            SigningKeyFacts("k-new", NOW - DAY, signing=True),
        )
    )
    assert scan(facts=retiring) == []


def test_upstream_credentials_past_rotation_or_without_a_date_are_reported() -> None:
    facts = inventory(
        credentials=(
            CredentialFacts("fresh", "database", NOW - 10 * DAY),
            CredentialFacts("stale", "database", NOW - 100 * DAY),
            CredentialFacts("unknown", "config", None),
        )
    )
    assert ids(scan(facts=facts)) == [
        ("credential-not-rotated", "medium", "servers.stale.credential"),
        ("credential-not-rotated", "low", "servers.unknown.credential"),
    ]


# -- redirect URIs -----------------------------------------------------------------------------------------------


def test_permissive_redirect_uris_are_high() -> None:
    facts = inventory(
        clients=(
            client("plain", "http://app.example.com/callback"),
            client("wild", "https://*.example.com/callback"),
        )
    )
    assert ids(scan(facts=facts)) == [
        ("permissive-redirect-uri", "high", "client:plain"),
        ("permissive-redirect-uri", "high", "client:wild"),
    ]


def test_exact_https_and_loopback_redirect_uris_are_fine() -> None:
    facts = inventory(
        clients=(
            client("web", "https://app.example.com/callback"),
            client("cli", "http://127.0.0.1:33418/callback", "http://localhost/callback"),
            client("native", "com.example.app:/callback"),
        )
    )
    assert scan(facts=facts) == []


# -- dependencies (pip-audit is faked by a local script: tests never reach a network) ----------------------------


def fake_pip_audit(tmp_path: Path, report: object) -> str:
    script = tmp_path / "pip-audit"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({json.dumps(report)!r})\nsys.exit(1)\n")
    script.chmod(0o755)
    return str(script)


def test_known_vulnerabilities_reported_by_pip_audit_are_high(tmp_path: Path) -> None:
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.2", "vulns": [{"id": "GHSA-h5c8", "fix_versions": ["3.1.3"]}]},
            {"name": "pyyaml", "version": "6.0.2", "vulns": []},
        ],
        "fixes": [],
    }
    findings = audit_dependencies(fake_pip_audit(tmp_path, report), sys.executable)
    assert ids(findings) == [("vulnerable-dependency", "high", "dependency:jinja2")]
    assert "3.1.3" in findings[0].fix


def test_a_clean_pip_audit_report_has_no_findings(tmp_path: Path) -> None:
    report = {"dependencies": [{"name": "pyyaml", "version": "6.0.2", "vulns": []}], "fixes": []}
    assert audit_dependencies(fake_pip_audit(tmp_path, report), sys.executable) == []


def test_without_pip_audit_the_scan_says_so_and_does_not_fail() -> None:
    findings = audit_dependencies(None, sys.executable)
    assert ids(findings) == [("dependency-audit-skipped", "info", "dependencies")]
    assert not fails(findings, "low")


def test_a_pip_audit_that_prints_no_report_is_a_low_finding(tmp_path: Path) -> None:
    script = tmp_path / "pip-audit"
    script.write_text(f"#!{sys.executable}\nraise SystemExit('boom')\n")
    script.chmod(0o755)
    assert ids(audit_dependencies(str(script), sys.executable)) == [("dependency-audit-failed", "low", "dependencies")]


# -- output ------------------------------------------------------------------------------------------------------


def test_the_json_document_matches_its_schema_and_fails_at_the_threshold() -> None:
    findings = by_severity(
        scan(settings(issuer="http://gateway.example.com"), config_text=PLAINTEXT)
        + audit_dependencies(None, sys.executable)
    )
    assert [finding.severity for finding in findings][:2] == ["critical", "high"]
    document = scan_document(findings, tenant="default", fail_on="critical", now=time.time())
    jsonschema.validate(document, SCAN_JSON_SCHEMA)
    assert document["failed"] is True
    assert document["summary"] == {"info": 1, "low": 0, "medium": 0, "high": 4, "critical": 1}
    info_only = scan_document(audit_dependencies(None, sys.executable), tenant="default", fail_on="low")
    jsonschema.validate(info_only, SCAN_JSON_SCHEMA)
    assert info_only["failed"] is False
