"""The `chamberlain` command: every mistake is one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from chamberlain.cli.main import app
from chamberlain.settings import load_settings
from chamberlain.store.clients import ClientRepository
from chamberlain.store.database import create_database

runner = CliRunner()


def invoke(
    *args: str, data_dir: Path | None = None, stdin: str | None = None, env: dict[str, str] | None = None
) -> Result:
    argv = [*args, "--data-dir", str(data_dir)] if data_dir is not None else list(args)
    return runner.invoke(app, argv, input=stdin, env=env or {})


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    result = invoke("init", data_dir=tmp_path)
    assert result.exit_code == 0, result.output
    return tmp_path


def test_init_prints_a_one_time_password_once(tmp_path: Path) -> None:
    first = invoke("init", data_dir=tmp_path)
    assert first.exit_code == 0
    assert re.search(r"one-time password: \S{20,}", first.output)
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    second = invoke("init", data_dir=tmp_path)
    assert second.exit_code == 0
    assert "Already initialised" in second.output
    assert "password" not in second.output


def test_data_dir_comes_from_the_environment(tmp_path: Path) -> None:
    result = invoke("init", env={"CHAMBERLAIN_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "chamberlain.db").exists()


def test_commands_on_an_uninitialised_data_dir_say_what_to_do(tmp_path: Path) -> None:
    result = invoke("users", "list", data_dir=tmp_path / "empty")
    assert result.exit_code == 1
    assert "run 'chamberlain init' first" in result.output
    assert "Traceback" not in result.output


def test_users_add_and_list(data_dir: Path) -> None:
    added = invoke(
        "users", "add", "bob", "--role", "developer", "--password-stdin", data_dir=data_dir, stdin="s3cret-pass\n"
    )
    assert added.exit_code == 0, added.output
    listed = invoke("users", "list", data_dir=data_dir)
    assert "bob" in listed.output
    assert "developer" in listed.output
    assert "admin" in listed.output


def test_duplicate_user_is_refused(data_dir: Path) -> None:
    invoke("users", "add", "carol", "--role", "developer", "--password-stdin", data_dir=data_dir, stdin="password-1\n")
    again = invoke(
        "users", "add", "carol", "--role", "developer", "--password-stdin", data_dir=data_dir, stdin="password-2\n"
    )
    assert again.exit_code == 1
    assert "already exists" in again.output


def test_short_password_and_missing_stdin_flag_are_refused(data_dir: Path) -> None:
    short = invoke(
        "users", "add", "dave", "--role", "developer", "--password-stdin", data_dir=data_dir, stdin="short\n"
    )
    assert short.exit_code == 1
    assert "at least 8 characters" in short.output
    no_flag = invoke("users", "add", "dave", "--role", "developer", data_dir=data_dir)
    assert no_flag.exit_code == 1
    assert "--password-stdin" in no_flag.output


def test_servers_add_list_remove(data_dir: Path) -> None:
    added = invoke("servers", "add", "github", "--url", "https://mcp.example.com/mcp", data_dir=data_dir)
    assert added.exit_code == 0, added.output
    assert "/mcp/github" in added.output
    listed = invoke("servers", "list", data_dir=data_dir)
    assert "github" in listed.output
    assert "demo" in listed.output
    removed = invoke("servers", "remove", "github", data_dir=data_dir)
    assert removed.exit_code == 0
    gone = invoke("servers", "remove", "github", data_dir=data_dir)
    assert gone.exit_code == 1
    assert "no server named 'github'" in gone.output


@pytest.mark.parametrize(
    ("name", "url", "message"),
    [
        ("Bad Name", "https://mcp.example.com", "invalid server name"),
        ("../etc", "https://mcp.example.com", "invalid server name"),
        ("llm", "https://mcp.example.com", "reserved for the gateway's own credentials"),  # LLM API keys' binding
        ("budget-alerts", "https://mcp.example.com", "reserved for the gateway's own credentials"),
        ("ok", "ftp://mcp.example.com", "invalid --url"),
        ("ok", "not a url", "invalid --url"),
    ],
)
def test_servers_add_refuses_bad_input(data_dir: Path, name: str, url: str, message: str) -> None:
    result = invoke("servers", "add", name, "--url", url, data_dir=data_dir)
    assert result.exit_code == 1
    assert message in result.output


def test_duplicate_server_is_refused(data_dir: Path) -> None:
    result = invoke("servers", "add", "demo", "--url", "https://mcp.example.com", data_dir=data_dir)
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_keys_rotate_keeps_the_old_key_for_verification(data_dir: Path) -> None:
    before = invoke("keys", "list", data_dir=data_dir)
    assert before.output.count("signing") == 1
    rotated = invoke("keys", "rotate", data_dir=data_dir)
    assert rotated.exit_code == 0, rotated.output
    after = invoke("keys", "list", data_dir=data_dir)
    assert after.output.count("signing") == 1
    assert after.output.count("retiring") == 1


def test_clients_list_show_revoke(data_dir: Path) -> None:
    async def add_client() -> None:
        settings = load_settings(data_dir=data_dir, environ={})
        engine = create_database(settings.effective_database_url)
        try:
            await ClientRepository(engine, settings.tenant).add(
                "client-1", "dynamic", {"client_name": "Editor", "token_endpoint_auth_method": "none"}, None
            )
        finally:
            await engine.dispose()

    asyncio.run(add_client())
    assert "Editor" in invoke("clients", "list", data_dir=data_dir).output
    shown = invoke("clients", "show", "client-1", data_dir=data_dir)
    assert shown.exit_code == 0
    assert '"client_name": "Editor"' in shown.output
    revoked = invoke("clients", "revoke", "client-1", data_dir=data_dir)
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in invoke("clients", "list", data_dir=data_dir).output
    again = invoke("clients", "revoke", "client-1", data_dir=data_dir)
    assert again.exit_code == 1
    missing = invoke("clients", "show", "nobody", data_dir=data_dir)
    assert missing.exit_code == 1
    assert "no client 'nobody'" in missing.output


def test_serve_refuses_an_http_issuer_off_loopback(data_dir: Path) -> None:
    result = invoke("serve", "--issuer", "http://gateway.example.com", data_dir=data_dir)
    assert result.exit_code == 1
    assert "http issuer is accepted only on loopback" in result.output


def test_a_configuration_mistake_names_the_key_and_file(data_dir: Path) -> None:
    (data_dir / "chamberlain.yaml").write_text("port: 8080\nlogn:\n  max_failed_attempts: 3\n")
    result = invoke("users", "list", data_dir=data_dir)
    assert result.exit_code == 1
    assert f"{data_dir / 'chamberlain.yaml'}:2: unknown setting 'logn'" in result.output.replace("\n", "")


def test_serve_on_an_uninitialised_data_dir_says_what_to_do(tmp_path: Path) -> None:
    result = invoke("serve", "--port", "0", data_dir=tmp_path / "empty")
    assert result.exit_code == 1
    assert "chamberlain init" in result.output
    assert "Traceback" not in result.output


SERVER_SECRET = "upstream-secret-4f9c2a"


@pytest.mark.parametrize(
    ("credential_args", "shown"),
    [
        (["--header-credential", "X-Api-Key"], ["credential header:", "X-Api-Key", "credential value:"]),
        (
            ["--client-credentials", "https://idp.example.com/token", "--client-id", "gw", "--token-scope", "read"],
            ["client_credentials", "https://idp.example.com/token", "credential client secret:", "read"],
        ),
        (
            ["--token-exchange", "https://idp.example.com/token", "--client-id", "gw", "--audience", "files-api"],
            ["token_exchange", "credential audience:", "files-api", "credential client secret:"],
        ),
    ],
)
@pytest.mark.parametrize("from_stdin", [True, False])
def test_servers_add_takes_each_credential_and_show_never_prints_its_secret(
    data_dir: Path, credential_args: list[str], shown: list[str], from_stdin: bool
) -> None:
    source = [] if from_stdin else ["--secret-env", "UPSTREAM_SECRET"]
    added = invoke(
        "servers",
        "add",
        "wiki",
        "--url",
        "https://wiki.example.com/mcp",
        "--external",
        *credential_args,
        *source,
        data_dir=data_dir,
        stdin=f"{SERVER_SECRET}\n" if from_stdin else None,
        env=None if from_stdin else {"UPSTREAM_SECRET": SERVER_SECRET},
    )
    assert added.exit_code == 0, added.output
    shown_output = invoke("servers", "show", "wiki", data_dir=data_dir).output
    for text in [*shown, "https://wiki.example.com/mcp", "external:"]:
        assert text in shown_output
    assert re.search(r"^credential (value|client secret):\s+set$", shown_output, re.MULTILINE)
    assert SERVER_SECRET not in shown_output
    assert SERVER_SECRET not in invoke("servers", "list", data_dir=data_dir).output
    stored = b"".join(path.read_bytes() for path in data_dir.glob("chamberlain.db*"))  # with the WAL
    assert b"wiki.example.com" in stored
    assert SERVER_SECRET.encode() not in stored


def test_servers_add_takes_the_data_protection_marks(data_dir: Path) -> None:
    args = ["--url", "https://crm.example.com/mcp", "--external-tool", "enrich", "--external-tool", "lookup"]
    added = invoke("servers", "add", "crm", *args, "--classification", "confidential", data_dir=data_dir)
    assert added.exit_code == 0, added.output
    shown = " ".join(invoke("servers", "show", "crm", data_dir=data_dir).output.split())
    assert "external tools: enrich, lookup" in shown
    assert "classification: confidential" in shown
    wrong = invoke("servers", "add", "crm2", "--url", "https://crm.example.com/mcp", "--classification", "secret",
                   data_dir=data_dir)  # fmt: skip
    assert wrong.exit_code == 2
    assert "'secret' is not one of" in " ".join(wrong.output.split())


def test_servers_add_a_stdio_command_split_like_a_shell(data_dir: Path) -> None:
    added = invoke(
        "servers",
        "add",
        "files",
        "--command",
        "python -m files_server --root '/srv/shared files'",
        "--env",
        f"API_TOKEN={SERVER_SECRET}",
        "--timeout",
        "5",
        "--max-message-bytes",
        "65536",
        "--scope",
        "mcp:tools",
        "--scope",
        "mcp:resources",
        data_dir=data_dir,
    )
    assert added.exit_code == 0, added.output
    shown = invoke("servers", "show", "files", data_dir=data_dir).output
    assert "python -m files_server --root '/srv/shared files'" in shown
    assert re.search(r"env API_TOKEN:\s+set", shown)
    assert re.search(r"timeout:\s+5 s", shown)
    assert "65536" in shown
    assert "mcp:tools mcp:resources" in shown
    assert SERVER_SECRET not in shown
    listed = invoke("servers", "list", data_dir=data_dir).output
    assert re.search(r"files\s+│\s+command", listed)
    assert re.search(r"demo\s+│\s+built-in", listed)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --url (streamable HTTP) and --command (stdio)"),
        (["--url", "https://a.example.com", "--command", "x"], "give exactly one of --url"),
        (["--command", "'unclosed"], "invalid --command: No closing quotation"),
        (["--url", "https://a.example.com", "--env", "A=1"], "--env applies only to --command"),
        (["--command", "x", "--env", "NO_EQUALS"], "invalid --env 'NO_EQUALS'"),
        (["--url", "https://a.example.com", "--client-id", "c"], "--client-id applies only to --client-credentials"),
        (["--url", "https://a.example.com", "--client-credentials", "https://t.example.com"], "needs --client-id"),
        (
            ["--url", "https://a.example.com", "--header-credential", "X", "--token-exchange", "https://t.example.com"],
            "give at most one credential",
        ),
        (
            [
                "--url",
                "https://a.example.com",
                "--client-credentials",
                "https://t",
                "--client-id",
                "c",
                "--audience",
                "a",
            ],
            "--audience applies only to --token-exchange",
        ),
        (["--url", "https://a.example.com", "--secret-env", "V"], "--secret-env applies only to"),
        (
            ["--url", "https://a.example.com", "--header-credential", "X", "--secret-env", "UNSET_VARIABLE"],
            "UNSET_VARIABLE is not set",
        ),
        (["--url", "https://a.example.com", "--header-credential", "bad header"], "invalid --header-credential"),
        (["--url", "https://a.example.com", "--timeout", "0"], "invalid --timeout"),
        (["--url", "https://a.example.com", "--max-message-bytes", "10"], "invalid --max-message-bytes"),
        (["--url", "https://a.example.com", "--header-credential", "X"], "no value of the X header given"),
    ],
)
def test_servers_add_mistakes_are_one_line_and_a_non_zero_exit(data_dir: Path, args: list[str], message: str) -> None:
    result = invoke("servers", "add", "wiki", *args, data_dir=data_dir, stdin="")
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("error:") == 1
    assert "Traceback" not in result.output
    assert "wiki" not in invoke("servers", "list", data_dir=data_dir).output


def test_servers_from_the_configuration_file_win_and_are_changed_there(data_dir: Path) -> None:
    (data_dir / "chamberlain.yaml").write_text(
        "servers:\n"
        "  demo:\n"
        "    url: https://wiki.example.com/mcp\n"
        "    credential:\n"
        "      type: header\n"
        "      value_env: WIKI_TOKEN\n"
    )
    missing = invoke("servers", "list", data_dir=data_dir)
    assert missing.exit_code == 1
    assert "chamberlain.yaml:6: setting 'servers.demo.credential.value_env'" in missing.output.replace("\n", "")
    assert "WIKI_TOKEN is not set" in missing.output.replace("\n", "")

    env = {"WIKI_TOKEN": SERVER_SECRET}
    listed = invoke("servers", "list", data_dir=data_dir, env=env).output
    assert "'demo' in the database is overridden by the configuration file." in listed
    shown = invoke("servers", "show", "demo", data_dir=data_dir, env=env).output
    assert "configuration file" in shown
    assert "https://wiki.example.com/mcp" in shown
    assert SERVER_SECRET not in shown
    again = invoke("servers", "add", "demo", "--url", "https://x.example.com", data_dir=data_dir, env=env)
    assert again.exit_code == 1
    assert "defined in the configuration file" in again.output
    assert invoke("servers", "remove", "demo", data_dir=data_dir, env=env).exit_code == 0  # the database's row
    only_in_file = invoke("servers", "remove", "demo", data_dir=data_dir, env=env)
    assert only_in_file.exit_code == 1
    assert "remove it there" in only_in_file.output


def test_servers_show_an_unknown_name(data_dir: Path) -> None:
    result = invoke("servers", "show", "nobody", data_dir=data_dir)
    assert result.exit_code == 1
    assert "no server named 'nobody'" in result.output
