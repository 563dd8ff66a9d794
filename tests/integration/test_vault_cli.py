"""`chamberlain vault`: values in only through standard input, a file, the environment or generation; out only
through `get`'s standard output; every read and change audited first; and a canary value that appears nowhere else:
not in any other output, audit event or the database file, raw, base64 or URL-encoded (issue 6, acceptance 4 for
the CLI)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from click.testing import Result
from typer.testing import CliRunner

from chamberlain.audit.reader import read_events
from chamberlain.cli.main import app
from chamberlain.cli.vault import parse_dotenv
from chamberlain.crypto.master_key import load_master_key
from chamberlain.settings import Settings, load_settings
from chamberlain.store.database import Database, create_database
from chamberlain.store.schema import vault_credentials
from chamberlain.vault.backend import SecretRef
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import KekRing, LocalKek
from chamberlain.vault.settings import DAY
from tests.conftest import require_postgres
from tests.support.canary import CANARY, watch
from tests.support.server import postgres_database

T = TypeVar("T")
SECOND = "second-canary-0c55aa91d"
watch(SECOND, "second canary")  # searched for in the whole run, as CANARY is


def encodings(value: str) -> list[str]:
    raw = value.encode()
    return [
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        quote(value),
    ]


@dataclass
class Home:
    """An initialised data directory driven through the CLI; every output kept for the canary scan."""

    data_dir: Path
    database_url: str | None = None
    outputs: list[str] = field(default_factory=list)

    def cli(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        environment = {"COLUMNS": "250"}  # wide enough that table cells are not folded
        if self.database_url:
            environment["CHAMBERLAIN_DATABASE_URL"] = self.database_url
        result = CliRunner().invoke(
            app, [*args, "--data-dir", str(self.data_dir)], input=stdin, env={**environment, **(env or {})}
        )
        if args[:2] != ("vault", "get"):
            self.outputs.append(result.output)
        else:
            self.outputs.append(result.stderr)
        return result

    def ok(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        result = self.cli(*args, stdin=stdin, env=env)
        assert result.exit_code == 0, result.output
        return result

    @property
    def settings(self) -> Settings:
        return load_settings(data_dir=self.data_dir, overrides={"database_url": self.database_url}, environ={})

    def run(self, work: Callable[[Database], Awaitable[T]]) -> T:
        async def opened() -> T:
            async with self.database() as database:
                return await work(database)

        return asyncio.run(opened())

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[Database]:
        database = create_database(self.settings.effective_database_url)
        try:
            yield database
        finally:
            await database.dispose()

    def events(self, tenant: str = "default") -> list[dict[str, Any]]:
        return [event.public for event in self.run(lambda database: read_events(database, tenant, limit=10_000))]

    def assert_no_leak(self, *values: str) -> None:
        events = repr(self.events())
        for value in values:
            for form in encodings(value):
                for output in self.outputs:
                    assert form not in output, f"{form!r} in CLI output"
                assert form not in events, f"{form!r} in an audit event"
        if self.database_url is None:
            raw = b"".join(path.read_bytes() for path in sorted(self.data_dir.glob("chamberlain.db*")))
            for value in values:
                for form in encodings(value):
                    assert form.encode() not in raw, f"{form!r} in the database file"


def initialised(data_dir: Path, database_url: str | None = None) -> Home:
    home = Home(data_dir, database_url)
    home.ok("init")
    home.ok("servers", "add", "github", "--url", "https://mcp.example.com/mcp")
    home.ok("servers", "add", "confluence", "--url", "https://wiki.example.com/mcp")
    return home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return initialised(tmp_path)


def one_line(result: Result) -> str:
    """The output on one line, with rich's wrapping and table borders undone."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", result.output).split())


# -- set, get, list, rm --------------------------------------------------------------------------------------------


def test_set_then_get_prints_exactly_the_value_and_both_are_audited(home: Home) -> None:
    stored = home.ok("vault", "set", "github", "token", "--from-stdin", "--bind", "github", stdin=CANARY + "\n")
    assert "Stored github/token (api_key); usable by: github." in one_line(stored)
    read = home.cli("vault", "get", "github", "token")
    assert read.exit_code == 0, read.output
    assert read.stdout == CANARY  # nothing else on standard output, no newline added when piped
    events = [event for event in home.events() if event["target"] == "credential:default/github/token"]
    assert [event["action"] for event in events] == ["admin.change"]
    assert events[0]["details"]["after"]["bindings"] == ["github"]
    [read_event] = [event for event in home.events() if event["action"] == "credential.read"]
    assert read_event["target"] == "default/github/token"
    assert read_event["details"]["purpose"] == "admin read"
    assert read_event["actor"]["id"].startswith("os:")
    home.assert_no_leak(CANARY)


def test_versions_are_kept_and_an_older_one_can_be_read(home: Home) -> None:
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin="first-value")
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin="second-value")
    assert home.cli("vault", "get", "github", "token").stdout == "second-value"
    assert home.cli("vault", "get", "github", "token", "--version", "1").stdout == "first-value"
    missing = home.cli("vault", "get", "github", "token", "--version", "7")
    assert missing.exit_code == 1
    assert "no secret default/github/token version 7" in missing.output
    purged = home.ok("vault", "purge", "github", "token", "--keep", "1")
    assert "Dropped 1 old versions" in purged.output
    assert home.cli("vault", "get", "github", "token", "--version", "1").exit_code == 1


def test_list_shows_metadata_and_never_a_value(home: Home) -> None:
    home.ok("users", "add", "bob", "--role", "developer", "--password-stdin", stdin="a long password\n")
    home.ok(
        "vault", "set", "confluence", "bob-grant", "--from-stdin", "--kind", "refresh_token",
        "--bind", "confluence", "--user", "bob", "--owner", "wiki-team", stdin=CANARY,
    )  # fmt: skip
    home.ok("vault", "set", "github", "token", "--from-stdin", "--max-age", "30", stdin=SECOND)
    listed = home.ok("vault", "list")
    text = one_line(listed)
    for expected in ("bob-grant", "refresh_token", "confluence", "bob", "wiki-team", "token", "30 d"):
        assert expected in text
    only = one_line(home.ok("vault", "list", "github"))
    assert "token" in only
    assert "bob-grant" not in only
    home.assert_no_leak(CANARY, SECOND)


def test_a_value_from_a_file_loses_one_trailing_newline_only(home: Home, tmp_path: Path) -> None:
    path = tmp_path / "value.txt"
    path.write_bytes(b"line one\nline two\n")
    home.ok("vault", "set", "github", "multi", "--from-file", str(path))
    assert home.cli("vault", "get", "github", "multi").stdout == "line one\nline two"


def test_the_gateways_own_bindings_need_no_server(home: Home) -> None:
    home.ok("vault", "set", "anthropic", "api-key", "--from-stdin", "--bind", "llm", stdin="sk-ant-v1")
    home.ok("vault", "set", "alerts", "webhook", "--from-stdin", "--bind", "budget-alerts", stdin="whsec_v1")
    listed = one_line(home.ok("vault", "list"))
    assert "llm" in listed
    assert "budget-alerts" in listed


def test_an_existing_credential_keeps_what_the_options_do_not_change(home: Home) -> None:
    home.ok("vault", "set", "github", "token", "--from-stdin", "--bind", "github", "--kind", "header", stdin="v1")
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin="v2")
    text = one_line(home.ok("vault", "list"))
    assert "header" in text
    assert "github" in text.split("token", 1)[1]
    home.ok("vault", "set", "github", "token", "--from-stdin", "--bind", "confluence", stdin="v3")
    after = [event for event in home.events() if event["action"] == "admin.change"][-1]
    assert after["details"]["before"]["bindings"] == ["github"]
    assert after["details"]["after"]["bindings"] == ["confluence"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("vault", "set", "github", "token"), "x", "give exactly one of --from-stdin, --from-file PATH and --generate"),
        (("vault", "set", "github", "token", "--from-stdin", "--generate"), "x", "give exactly one of"),
        (("vault", "set", "github", "../etc", "--from-stdin"), "x", "invalid secret name '../etc'"),
        (("vault", "set", "github", "token", "--from-stdin", "--bind", "nowhere"), "x", "no server named 'nowhere'"),
        (("vault", "set", "github", "token", "--from-stdin", "--user", "nobody"), "x", "no user named 'nobody'"),
        (("vault", "set", "github", "token", "--from-stdin"), "", "the secret is empty"),
        (("vault", "set", "github", "token", "--from-stdin", "--pg-role", "app"), "x", "go together"),
        (("vault", "set", "github", "token", "--from-stdin", "--prefix", "k_"), "x", "only to --generate"),
        (("vault", "set", "db", "pw", "--from-stdin", "--pg-role", "app", "--pg-admin", "admin"), "x", "no secret db"),
        (("vault", "set", "github", "token", "--from-stdin", "--tenant", "nope"), "x", "no tenant 'nope'"),
    ],
)
def test_set_refuses_mistakes_and_stores_nothing(home: Home, args: tuple[str, ...], stdin: str, message: str) -> None:
    result = home.cli(*args, stdin=stdin)
    assert result.exit_code != 0
    assert message in one_line(result)
    assert "Traceback" not in result.output
    assert "credential:" not in repr(home.events())


def test_a_value_is_never_taken_as_an_argument(home: Home) -> None:
    result = home.cli("vault", "set", "github", "token", CANARY)
    assert result.exit_code == 2  # usage error: there is no such argument
    assert "values such as secrets are never taken on the command line" in one_line(result)
    assert CANARY not in result.output  # Click's own message would quote the argument
    listed = home.ok("vault", "list")
    assert "token" not in listed.output


def test_rm_removes_every_version(home: Home) -> None:
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin="v1")
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin="v2")
    assert "Removed github/token and all its versions" in one_line(home.ok("vault", "rm", "github", "token"))
    gone = home.cli("vault", "get", "github", "token")
    assert gone.exit_code == 1
    assert "no secret default/github/token" in gone.output
    again = home.cli("vault", "rm", "github", "token")
    assert again.exit_code == 1
    assert "no secret github/token" in again.output


def test_tenants_have_their_own_namespaces(home: Home) -> None:
    home.ok("tenants", "add", "acme")
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin="default-value")
    home.ok("vault", "set", "github", "token", "--from-stdin", "--tenant", "acme", stdin="acme-value")
    assert home.cli("vault", "get", "github", "token").stdout == "default-value"
    assert home.cli("vault", "get", "github", "token", "--tenant", "acme").stdout == "acme-value"
    home.ok("vault", "rm", "github", "token", "--tenant", "acme")
    assert home.cli("vault", "get", "github", "token").stdout == "default-value"
    # Binding to a server checks the tenant's own servers: acme has none named github.
    refused = home.cli("vault", "set", "github", "x", "--from-stdin", "--bind", "github", "--tenant", "acme", stdin="v")
    assert "no server named 'github' in tenant 'acme'" in one_line(refused)


# -- rotate --------------------------------------------------------------------------------------------------------


def test_a_generated_key_is_rotated_and_a_foreign_one_is_not(home: Home) -> None:
    home.ok("vault", "set", "gateway", "ci-bot", "--generate", "--prefix", "cgw_", "--bind", "github")
    first = home.cli("vault", "get", "gateway", "ci-bot").stdout
    assert first.startswith("cgw_")
    rotated = home.ok("vault", "rotate", "gateway", "ci-bot")
    assert "version 2 is current" in one_line(rotated)
    second = home.cli("vault", "get", "gateway", "ci-bot").stdout
    assert second.startswith("cgw_")
    assert second != first
    assert home.cli("vault", "get", "gateway", "ci-bot", "--version", "1").stdout == first
    stages = [event["details"].get("stage") for event in home.events() if event["action"] == "credential.rotated"]
    assert stages == ["starting", "done"]

    home.ok("vault", "set", "github", "pat", "--from-stdin", stdin="a personal token")
    refused = home.cli("vault", "rotate", "github", "pat")
    assert refused.exit_code == 1
    assert "rotate it at its source, then store the new value with 'chamberlain vault set'" in one_line(refused)
    home.assert_no_leak(first, second)


def test_rotation_check_lists_what_is_due_with_owners(home: Home) -> None:
    home.ok("vault", "set", "github", "old", "--from-stdin", "--owner", "platform-team", stdin="v")
    home.ok("vault", "set", "github", "near", "--from-stdin", "--max-age", "10", "--owner", "sre", stdin="v")
    home.ok("vault", "set", "github", "fresh", "--from-stdin", stdin="v")
    assert "No credential is past or near its maximum age" in home.ok("vault", "audit", "--rotation-check").output

    async def age(database: Database) -> None:
        now = time.time()
        async with database.begin() as connection:
            for name, days in (("old", 100), ("near", 9.5)):
                await connection.execute(
                    vault_credentials.update()
                    .where(vault_credentials.c.name == name)
                    .values(rotated_at=now - days * DAY)
                )

    home.run(age)
    report = one_line(home.ok("vault", "audit", "--rotation-check"))
    assert "github/old api_key platform-team 100 d 90 d overdue" in report
    assert (
        "github/near api_key sre 10 d 10 d due soon" in report or "github/near api_key sre 9 d 10 d due soon" in report
    )
    assert "fresh" not in report
    assert "1 overdue, 1 due within 10% of their maximum age." in report


def test_vault_audit_shows_reads_refusals_and_rotations(home: Home) -> None:
    home.ok("vault", "set", "gateway", "bot", "--generate")
    home.cli("vault", "get", "gateway", "bot")
    home.ok("vault", "rotate", "gateway", "bot")
    shown = one_line(home.ok("vault", "audit", "--days", "1"))
    assert "credential.read" in shown
    assert "credential.rotated" in shown
    assert "admin read" in shown


# -- import --------------------------------------------------------------------------------------------------------


def test_import_from_the_environment(home: Home) -> None:
    env = {"JIRA_API_TOKEN": CANARY, "JIRA_USER_PASSWORD": SECOND, "OTHER_TOKEN": "not imported", "JIRA_": "x"}
    imported = home.ok("vault", "import", "jira", "--env", "JIRA_", "--kind", "api_key", env=env)
    text = one_line(imported)
    assert "Imported 2 secrets into jira: api_token, user_password." in text
    assert "skipped JIRA_" in text
    assert "remove these variables" in text
    assert home.cli("vault", "get", "jira", "api_token").stdout == CANARY
    assert home.cli("vault", "get", "jira", "other_token").exit_code == 1
    home.assert_no_leak(CANARY, SECOND)


def test_import_from_a_dotenv_file_then_asks_to_delete_it(home: Home, tmp_path: Path) -> None:
    dotenv = tmp_path / "service.env"
    dotenv.write_text(
        "# credentials\n"
        f"export API_TOKEN={CANARY}\n"
        "QUOTED='single # not a comment'\n"
        'ESCAPED="line\\nnext \\"q\\""\n'
        "PLAIN=value # a comment\n"
        "EMPTY=\n"
    )
    imported = home.ok("vault", "import", "svc", "--dotenv", str(dotenv), "--bind", "github")
    text = one_line(imported)
    assert "Imported 4 secrets into svc: api_token, quoted, escaped, plain." in text
    assert f"Now delete {dotenv}" in text
    assert "skipped EMPTY" in text
    assert home.cli("vault", "get", "svc", "api_token").stdout == CANARY
    assert home.cli("vault", "get", "svc", "quoted").stdout == "single # not a comment"
    assert home.cli("vault", "get", "svc", "escaped").stdout == 'line\nnext "q"'
    assert home.cli("vault", "get", "svc", "plain").stdout == "value"
    home.assert_no_leak(CANARY)


def test_a_malformed_dotenv_line_is_named_without_its_value(home: Home, tmp_path: Path) -> None:
    dotenv = tmp_path / "broken.env"
    dotenv.write_text(f"GOOD=1\nBAD='{CANARY}\n")
    result = home.cli("vault", "import", "svc", "--dotenv", str(dotenv))
    assert result.exit_code == 1
    assert f"{dotenv}:2: BAD: the quoted value is not closed on its line" in one_line(result)
    assert CANARY not in result.output
    assert home.cli("vault", "get", "svc", "good").exit_code == 1  # nothing imported


def test_parse_dotenv_lines() -> None:
    text = "A=1\n\n# comment\nexport B = two\nC=\"x\\\\y\"\nD='a\\nb'\n"
    assert parse_dotenv(text, "f") == [("A", "1"), ("B", "two"), ("C", "x\\y"), ("D", "a\\nb")]
    with pytest.raises(ValueError, match="f:1: expected NAME=VALUE"):
        parse_dotenv("1BAD=x", "f")


# -- the audit log fails closed ------------------------------------------------------------------------------------


def make_audit_unwritable(home: Home) -> None:
    with contextlib.closing(sqlite3.connect(home.data_dir / "chamberlain.db")) as connection:
        connection.execute(
            "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit storage is read-only'); END"
        )
        connection.commit()


def vault_rows(home: Home) -> list[Any]:
    with contextlib.closing(sqlite3.connect(home.data_dir / "chamberlain.db")) as connection:
        return connection.execute("SELECT * FROM vault_secret_versions ORDER BY source, name, version").fetchall()


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (("vault", "set", "github", "token", "--from-stdin"), "new-value"),
        (("vault", "rm", "github", "token"), None),
        (("vault", "rotate", "gateway", "bot"), None),
        (("vault", "purge", "github", "token"), None),
        (("vault", "rotate-kek", "--new-key-file", "new.kek"), None),
        (("vault", "import", "github", "--env", "VAULT_TEST_"), None),
    ],
    ids=["set", "rm", "rotate", "purge", "rotate-kek", "import"],
)
def test_a_change_that_cannot_be_audited_is_refused_and_changes_nothing(
    home: Home, args: tuple[str, ...], stdin: str | None
) -> None:
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin="v1")
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin="v2")
    home.ok("vault", "set", "gateway", "bot", "--generate")
    before = vault_rows(home)
    make_audit_unwritable(home)
    refused = home.cli(*args, stdin=stdin, env={"VAULT_TEST_TOKEN": "from-env"})
    assert refused.exit_code == 1
    assert "the audit log cannot be written" in one_line(refused)
    assert "Traceback" not in refused.output
    assert vault_rows(home) == before


def test_a_read_that_cannot_be_audited_prints_nothing(home: Home) -> None:
    home.ok("vault", "set", "github", "token", "--from-stdin", stdin=CANARY)
    make_audit_unwritable(home)
    refused = home.cli("vault", "get", "github", "token")
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert "the audit log cannot be written, so the credential was not read" in one_line(refused)
    assert CANARY not in refused.output


# -- key-encryption key rotation -----------------------------------------------------------------------------------


def test_rotate_kek_rewraps_every_tenants_data_keys_under_a_new_key(home: Home) -> None:
    home.ok("tenants", "add", "acme")
    values = {
        SecretRef("default", "github", "a"): "value-a",
        SecretRef("default", "github", "b"): "value-b",
        SecretRef("acme", "jira", "c"): "value-c",
    }
    for ref, value in values.items():
        home.ok("vault", "set", ref.source, ref.name, "--from-stdin", "--tenant", ref.tenant, stdin=value)
    new_file = home.data_dir / "vault-2.kek"
    rotated = home.ok("vault", "rotate-kek", "--new-key-file", str(new_file))
    new = LocalKek.from_file(new_file)
    assert new_file.stat().st_mode & 0o777 == 0o600
    text = one_line(rotated)
    assert f"Rewrapped 3 data keys under key-encryption key {new.key_id}." in text
    assert "vault.previous_keks" in text

    async def read_all(database: Database) -> dict[SecretRef, str]:
        backend = EnvelopeBackend(database, KekRing(new))
        return {ref: (await backend.get(ref)).decode() for ref in values}

    assert home.run(read_all) == values
    # Until vault.kek names the new key, the gateway's configured ring cannot unwrap: a clear error, no value.
    unreadable = home.cli("vault", "get", "github", "a")
    assert unreadable.exit_code == 1
    assert f"wrapped by key-encryption key {new.key_id}, which is not configured" in one_line(unreadable)
    # Again with the same file: nothing left to do.
    assert "Rewrapped 0 data keys" in home.ok("vault", "rotate-kek", "--new-key-file", str(new_file)).output
    master_kek = LocalKek.from_master_key(load_master_key(home.data_dir))
    assert new.key_id != master_kek.key_id


# -- PostgreSQL ----------------------------------------------------------------------------------------------------


@pytest.fixture
def postgres_home(tmp_path: Path) -> Iterator[Home]:
    require_postgres()
    with postgres_database() as url:
        yield initialised(tmp_path, url)


def test_the_vault_commands_on_postgresql(postgres_home: Home) -> None:
    home = postgres_home
    home.ok("vault", "set", "github", "token", "--from-stdin", "--bind", "github", stdin=CANARY)
    home.ok("vault", "set", "gateway", "bot", "--generate")
    assert home.cli("vault", "get", "github", "token").stdout == CANARY
    assert "version 2 is current" in one_line(home.ok("vault", "rotate", "gateway", "bot"))
    assert "token" in home.ok("vault", "list").output
    new_file = home.data_dir / "pg.kek"
    assert "Rewrapped 3 data keys" in home.ok("vault", "rotate-kek", "--new-key-file", str(new_file)).output

    async def read(database: Database) -> bytes:
        return await EnvelopeBackend(database, KekRing(LocalKek.from_file(new_file))).get(
            SecretRef("default", "github", "token")
        )

    assert home.run(read) == CANARY.encode()
    home.ok("vault", "rm", "github", "token")
    home.assert_no_leak(CANARY)
