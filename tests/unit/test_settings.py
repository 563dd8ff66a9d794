"""Settings: YAML + environment, and mistakes reported with the key's name and where it was set."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.settings import SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chamberlain.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.public_url == "http://127.0.0.1:8080"
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'chamberlain.db'}"
    assert settings.tokens.access_token_ttl == 600
    assert not settings.cookies_secure


def test_yaml_values_are_read_from_the_data_dir(tmp_path: Path) -> None:
    write(tmp_path, "issuer: https://gw.example.com\ntokens:\n  access_token_ttl: 300\n")
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.public_url == "https://gw.example.com"
    assert settings.tokens.access_token_ttl == 300
    assert settings.cookies_secure


def test_environment_overrides_yaml_and_reaches_nested_keys(tmp_path: Path) -> None:
    write(tmp_path, "port: 9000\ntokens:\n  access_token_ttl: 300\n")
    environ = {"CHAMBERLAIN_PORT": "9100", "CHAMBERLAIN_TOKENS__ACCESS_TOKEN_TTL": "120"}
    settings = load_settings(data_dir=tmp_path, environ=environ)
    assert settings.port == 9100
    assert settings.tokens.access_token_ttl == 120


def test_command_line_overrides_everything(tmp_path: Path) -> None:
    write(tmp_path, "port: 9000\n")
    settings = load_settings(data_dir=tmp_path, overrides={"port": 9200}, environ={"CHAMBERLAIN_PORT": "9100"})
    assert settings.port == 9200


def test_unknown_key_names_the_key_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\ntokens:\n  access_token_ttl: 300\n  acess_token_tll: 5\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(data_dir=tmp_path, environ={})
    assert str(raised.value) == f"{path}:4: unknown setting 'tokens.acess_token_tll'"


def test_wrong_value_names_the_key_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "host: 127.0.0.1\nport: eighty\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(data_dir=tmp_path, environ={})
    message = str(raised.value)
    assert message.startswith(f"{path}:2: setting 'port':")


def test_wrong_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(data_dir=tmp_path, environ={"CHAMBERLAIN_TOKENS__ACCESS_TOKEN_TTL": "5"})
    assert "environment variable CHAMBERLAIN_TOKENS__ACCESS_TOKEN_TTL" in str(raised.value)
    assert "tokens.access_token_ttl" in str(raised.value)


@pytest.mark.parametrize(
    "variable",
    ["CHAMBERLAIN_MASTER_KEY", "CHAMBERLAIN_VAULT_KEK", "CHAMBERLAIN_URL", "CHAMBERLAIN_ALLOW_INSECURE_KEYCHAIN"],
)
def test_variables_other_modules_read_are_not_settings(tmp_path: Path, variable: str) -> None:
    # A replica takes its master key from the environment (deploy/kubernetes): settings must not refuse it.
    assert load_settings(data_dir=tmp_path, environ={variable: "x" * 43}).port == 8080
    with pytest.raises(SettingsError, match="CHAMBERLAIN_MASTER_KEYS"):
        load_settings(data_dir=tmp_path, environ={"CHAMBERLAIN_MASTER_KEYS": "x"})  # a typo is still named


def test_issuer_with_trailing_slash_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "issuer: https://gw.example.com/\n")
    with pytest.raises(SettingsError, match="issuer"):
        load_settings(data_dir=tmp_path, environ={})


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\ntokens: [unclosed\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(data_dir=tmp_path, environ={})
    assert str(raised.value).startswith(f"{path}:")
    assert "not valid YAML" in str(raised.value)


def test_a_list_at_the_top_level_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "- port\n- 9000\n")
    with pytest.raises(SettingsError, match="top level must be a mapping"):
        load_settings(data_dir=tmp_path, environ={})
    assert path.exists()


def test_a_missing_explicit_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(data_dir=tmp_path, config_file=tmp_path / "absent.yaml", environ={})


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200))
def test_any_file_content_loads_or_fails_with_a_settings_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "chamberlain.yaml").write_text(text, encoding="utf-8")
        try:
            load_settings(data_dir=Path(directory), environ={})
        except SettingsError as error:
            message = str(error)
        else:
            message = "loaded"
        assert message


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        (
            "tenants:\n  acme:\n    rate_limits:\n      per_user: lots\n",
            4,
            "tenants.acme.rate_limits.per_user",
            "not a rate limit",
        ),
        ("tenants:\n  Acme:\n    name: x\n", 2, "tenants.Acme", "invalid tenant id"),
        (
            "tenants:\n  acme:\n    quotas:\n      users: -1\n",
            4,
            "tenants.acme.quotas.users",
            "greater than or equal to 0",
        ),
        ("tenants:\n  acme:\n    sesions: {}\n", 3, "tenants.acme.sesions", "unknown setting"),
        ("redis_url: http://127.0.0.1:6379\n", 1, "redis_url", "redis://"),
    ],
)
def test_tenant_and_redis_settings_name_the_key_and_line(
    tmp_path: Path, text: str, line: int, key: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as raised:
        load_settings(data_dir=tmp_path, environ={})
    assert str(raised.value).startswith(f"{path}:{line}: ")
    assert key in str(raised.value)
    assert message in str(raised.value)


def test_a_tenant_section_loads(tmp_path: Path) -> None:
    write(tmp_path, "tenants:\n  acme:\n    rate_limits: {per_user: 600/minute}\n    quotas: {servers: 5}\n")
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.tenants["acme"].rate_limits.per_user == "600/minute"
    assert settings.tenants["acme"].quotas.servers == 5
