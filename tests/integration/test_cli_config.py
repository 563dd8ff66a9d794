"""`chamberlain config set|show` on a real initialised store: values validated against TenantConfig (the error names
the setting), stored in the tenant's configuration next to its other sections, audited first, and shown back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli_sso import Home, one_line


@pytest.fixture
def home(tmp_path: Path) -> Home:
    initialised = Home(tmp_path)
    initialised.ok("init")
    return initialised


def test_mfa_enforced_persists_and_is_shown(home: Home) -> None:
    home.ok("config", "set", "mfa", "enforced")
    assert home.stored()["sso"] == {"mfa": "enforced"}
    assert "mfa: enforced" in home.ok("config", "show").output
    (change,) = [event for event in json.loads(home.audit_text()) if event["target"] == "tenant:default/sso"]
    assert change["details"]["before"] == {"sso": None}
    assert change["details"]["after"] == {"sso": {"mfa": "enforced"}}


@pytest.mark.parametrize("value", ["always", "", "ENFORCED "])
def test_an_invalid_mfa_value_is_refused_naming_the_setting(home: Home, value: str) -> None:
    refused = home.cli("config", "set", "mfa", value)
    assert refused.exit_code == 2
    text = one_line(refused.output)
    assert text.startswith("error: mfa:")
    assert "'off', 'optional' or 'enforced'" in text
    assert "Traceback" not in refused.output
    assert "sso" not in home.stored()


def test_session_timeout_is_stored_in_seconds(home: Home) -> None:
    home.ok("config", "set", "session-timeout", "480")
    assert home.stored()["sessions"] == {"idle_timeout": 480 * 60}
    assert "session-timeout: 480 minutes" in home.ok("config", "show").output


@pytest.mark.parametrize("value", ["0", "10081", "eight hours", "1.5"])
def test_an_out_of_range_session_timeout_is_refused_naming_the_setting(home: Home, value: str) -> None:
    refused = home.cli("config", "set", "session-timeout", value)
    assert refused.exit_code == 2
    assert one_line(refused.output).startswith("error: session-timeout:")
    assert "1 to 10080" in refused.output
    assert "sessions" not in home.stored()


def test_an_unknown_setting_is_refused(home: Home) -> None:
    refused = home.cli("config", "set", "colour", "blue")
    assert refused.exit_code == 2
    assert "colour" in refused.output


def test_settings_keep_the_rest_of_the_configuration(home: Home) -> None:
    home.add_okta()
    home.ok("config", "set", "mfa", "optional")
    home.ok("config", "set", "session-timeout", "60")
    stored = home.stored()
    assert stored["sso"]["mfa"] == "optional"
    assert set(stored["sso"]["providers"]) == {"okta"}
    assert stored["sessions"]["idle_timeout"] == 3600
    shown = home.ok("config", "show").output
    assert "okta: oidc, domains company.com" in shown
    assert json.dumps(stored).count("client-secret") == 0


def test_show_without_settings_gives_the_defaults(home: Home) -> None:
    shown = home.ok("config", "show").output
    assert "mfa: off" in shown
    assert "login.session_ttl" in shown
    assert "identity providers: 0" in shown
