"""`chamberlain roles import|show|check` on a real store: issue 5's example imported as-is, every mistake reported
with its path (and line), unknown servers warned about, the change audited before it is made, tenants kept apart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner, Result

from chamberlain.audit.events import Action
from chamberlain.audit.reader import read_events
from chamberlain.cli.main import app
from chamberlain.policy.decisions import Policy
from chamberlain.policy.roles import DEFAULT_ROLES, RolesDocument
from chamberlain.settings import load_settings
from chamberlain.store.database import Database, create_database
from chamberlain.store.tenants import TenantRepository
from chamberlain.tenancy.config import TenantConfig
from tests.conftest import require_postgres
from tests.support.server import postgres_database

T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ISSUE_EXAMPLE = EXAMPLES / "roles.json"
EXTENDED_EXAMPLE = EXAMPLES / "roles-extended.json"


@dataclass(frozen=True)
class Store:
    data_dir: Path
    database_url: str | None  # None: SQLite in the data dir

    def cli(self, *args: str) -> Result:
        env = {"CHAMBERLAIN_DATABASE_URL": self.database_url} if self.database_url else {}
        return CliRunner().invoke(app, [*args, "--data-dir", str(self.data_dir)], env=env)

    def run(self, work: Callable[[Database], Awaitable[T]]) -> T:
        settings = load_settings(data_dir=self.data_dir, overrides={"database_url": self.database_url}, environ={})

        async def opened() -> T:
            database = create_database(settings.effective_database_url)
            try:
                return await work(database)
            finally:
                await database.dispose()

        return asyncio.run(opened())

    def stored_config(self, tenant: str = "default") -> dict[str, Any] | None:
        async def read(database: Database) -> dict[str, Any] | None:
            row = await TenantRepository(database).get(tenant)
            assert row is not None
            return row.config

        return self.run(read)

    def create_tenant(self, tenant: str, config: dict[str, Any] | None = None) -> None:
        async def create(database: Database) -> None:
            await TenantRepository(database).create(tenant, tenant.title(), config)

        self.run(create)

    def admin_changes(self, tenant: str = "default") -> list[dict[str, Any]]:
        async def read(database: Database) -> list[dict[str, Any]]:
            events = await read_events(database, tenant, limit=1000, actions=[Action.ADMIN_CHANGE])
            return [event.public for event in events]

        return self.run(read)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            require_postgres()
            url = stack.enter_context(postgres_database())
        initialised = Store(tmp_path, url)
        result = initialised.cli("init")
        assert result.exit_code == 0, result.output
        yield initialised


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    initialised = Store(tmp_path, None)
    assert initialised.cli("init").exit_code == 0
    return initialised


def one_line(text: str) -> str:
    return " ".join(text.split())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- issue 5's example, as-is -----------------------------------------------------------------------------------------


def test_the_issue_example_imports_as_is_and_shows_back(store: Store) -> None:
    imported = store.cli("roles", "import", str(ISSUE_EXAMPLE))
    assert imported.exit_code == 0, imported.output
    assert "Imported 3 roles into tenant 'default'." in imported.stdout
    shown = store.cli("roles", "show")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == json.loads(ISSUE_EXAMPLE.read_text())  # byte-equal as data: nothing added
    assert "the stored document" in one_line(shown.stderr)


def test_the_stored_document_is_what_the_gateway_enforces(store: Store) -> None:
    assert store.cli("roles", "import", str(ISSUE_EXAMPLE)).exit_code == 0
    config = store.stored_config()
    assert config is not None
    roles = TenantConfig.model_validate(config).roles  # what the refresher reads
    assert roles == RolesDocument.model_validate_json(ISSUE_EXAMPLE.read_text())
    policy = Policy(roles)
    assert policy.access(("developer",), "aws") is None  # acceptance 1: a developer cannot open /mcp/aws
    assert policy.access(("senior_developer",), "aws") is not None  # a senior developer can
    assert policy.profile(("developer",)).session_minutes == 240
    assert policy.profile(("senior_developer",)).session_minutes == 480


def test_unknown_servers_are_warnings_and_registered_ones_are_not(store: Store) -> None:
    assert store.cli("servers", "add", "github", "--url", "https://mcp.example.com/mcp").exit_code == 0
    imported = store.cli("roles", "import", str(ISSUE_EXAMPLE))
    assert imported.exit_code == 0, imported.output
    warnings = [line for line in one_line(imported.stderr).split("warning: ") if line]
    assert warnings == [
        "role 'developer' names MCP server 'postgres', which is not registered ",
        "role 'developer' names MCP server 'slack', which is not registered ",
        "role 'senior_developer' names MCP server 'aws', which is not registered ",
        "role 'senior_developer' names MCP server 'postgres', which is not registered ",
        "role 'senior_developer' names MCP server 'slack', which is not registered ",
        "role 'senior_developer' names MCP server 'terraform', which is not registered",
    ]
    assert store.stored_config() is not None  # stored all the same: the servers may come later


def test_servers_of_the_configuration_file_count_as_registered(sqlite_store: Store, tmp_path: Path) -> None:
    write(
        sqlite_store.data_dir / "chamberlain.yaml",
        "servers:\n  postgres:\n    url: https://db.example.com/mcp\n",
    )
    document = write(tmp_path / "roles.yaml", "enterprise_roles:\n  analyst:\n    mcp_servers: [postgres, demo]\n")
    imported = sqlite_store.cli("roles", "import", str(document))
    assert imported.exit_code == 0, imported.output
    assert "warning" not in imported.output  # postgres from the file, demo from the store (chamberlain init)


def test_yaml_documents_import_like_json(store: Store, tmp_path: Path) -> None:
    document = write(
        tmp_path / "roles.yml",
        "enterprise_roles:\n"
        "  developer:\n"
        "    mcp_servers: [demo]\n"
        "    session_duration: 60\n"
        "    mfa: 'off'\n"
        "    models: [claude-haiku-*]\n"
        "    budget: {monthly_usd: 25}\n",
    )
    assert store.cli("roles", "import", str(document)).exit_code == 0
    shown = json.loads(store.cli("roles", "show").stdout)
    assert shown == {
        "enterprise_roles": {
            "developer": {
                "mcp_servers": ["demo"],
                "session_duration": 60,
                "mfa": "off",
                "models": ["claude-haiku-*"],
                "budget": {"monthly_usd": 25.0},
            }
        }
    }


def test_show_output_imports_back_unchanged(store: Store, tmp_path: Path) -> None:
    assert store.cli("roles", "import", str(EXTENDED_EXAMPLE)).exit_code == 0
    first = store.cli("roles", "show").stdout
    again = write(tmp_path / "again.json", first)
    assert store.cli("roles", "import", str(again)).exit_code == 0
    assert store.cli("roles", "show").stdout == first
    assert json.loads(first) == json.loads(EXTENDED_EXAMPLE.read_text())


# -- mistakes -----------------------------------------------------------------------------------------------------


def test_an_unknown_key_is_refused_with_its_path_and_line_and_nothing_is_stored(store: Store, tmp_path: Path) -> None:
    document = write(
        tmp_path / "roles.json",
        """{
  "enterprise_roles": {
    "developer": {
      "mcp_servers": ["github", "nowhere"],
      "sesion_duration": 240
    },
    "ops": {
      "mcp_servers": "github",
      "tools": {"github": {"allow": ["*"], "denied": ["delete_*"]}}
    }
  }
}
""",
    )
    refused = store.cli("roles", "import", str(document))
    assert refused.exit_code == 1
    assert "Traceback" not in refused.output
    lines = refused.stderr.splitlines()
    assert lines[0] == f"error: {document} is not a valid roles document:"
    assert lines[1:] == [
        f"  {document}:5: enterprise_roles.developer.sesion_duration: unknown key",
        f'  {document}:8: enterprise_roles.ops.mcp_servers: must be a list, or "*" for all',
        f"  {document}:9: enterprise_roles.ops.tools.github.denied: unknown key",
    ]
    assert store.stored_config() is None
    assert store.admin_changes() == []  # nothing was changed, so nothing to record


def test_a_yaml_mistake_names_its_line(sqlite_store: Store, tmp_path: Path) -> None:
    document = write(
        tmp_path / "roles.yaml",
        "enterprise_roles:\n  kiosk:\n    mcp_servers: [demo]\n    mfa: off\n    budget: {monthly_usd: 5}\n",
    )
    refused = sqlite_store.cli("roles", "import", str(document))
    assert refused.exit_code == 1
    text = one_line(refused.stderr)
    assert (
        f"{document}:4: enterprise_roles.kiosk.mfa: must be 'off', 'optional' or 'enforced' (in YAML write \"off\""
        in text
    )
    assert f"{document}:5: enterprise_roles.kiosk.budget: a budget applies to the role's models" in text


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.json", '{"enterprise_roles": {\n  "a": }', "broken.json:2: not valid JSON"),
        ("broken.yaml", "enterprise_roles:\n  a: [\n", "broken.yaml:3: not valid YAML"),
        ("list.json", "[]", "(document): must be a mapping (an object)"),
        ("empty.yaml", "", "(document): must be a mapping (an object)"),
        (
            "twice.json",
            '{"enterprise_roles": {\n  "a": {"mcp_servers": []},\n  "a": {"mcp_servers": "*"}\n}}',
            "twice.json:3: enterprise_roles.a: duplicate key: only the last would count",
        ),
    ],
)
def test_unreadable_documents_are_one_clear_error(tmp_path: Path, name: str, text: str, message: str) -> None:
    result = CliRunner().invoke(app, ["roles", "check", str(write(tmp_path / name, text))])
    assert result.exit_code == 1
    assert message in one_line(result.stderr)
    assert "Traceback" not in result.output


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["roles", "check", str(tmp_path / "absent.json")])
    assert result.exit_code == 1
    assert "absent.json: cannot read it" in one_line(result.stderr)


def test_check_validates_without_a_store(tmp_path: Path) -> None:
    valid = CliRunner().invoke(app, ["roles", "check", str(EXTENDED_EXAMPLE)])
    assert valid.exit_code == 0, valid.output
    assert "valid, 6 roles" in one_line(valid.stdout)
    invalid = write(tmp_path / "bad.json", '{"enterprise_roles": {"a": {"mcp_servers": [], "budget": 5}}}')
    refused = CliRunner().invoke(app, ["roles", "check", str(invalid)])
    assert refused.exit_code == 1
    assert "enterprise_roles.a.budget: must be a mapping" in one_line(refused.stderr)


# -- the audit log ------------------------------------------------------------------------------------------------


def test_the_import_is_recorded_with_before_and_after(store: Store) -> None:
    assert store.cli("roles", "import", str(ISSUE_EXAMPLE)).exit_code == 0
    assert store.cli("roles", "import", str(EXTENDED_EXAMPLE)).exit_code == 0
    first, second = store.admin_changes()
    assert first["target"] == "roles:default"
    assert first["details"]["before"] == {"roles": None}
    assert first["details"]["after"] == {"roles": json.loads(ISSUE_EXAMPLE.read_text())}
    assert second["details"]["before"] == first["details"]["after"]
    assert second["details"]["after"] == {"roles": json.loads(EXTENDED_EXAMPLE.read_text())}


def test_an_import_that_cannot_be_audited_is_refused_and_changes_nothing(sqlite_store: Store) -> None:
    with contextlib.closing(sqlite3.connect(sqlite_store.data_dir / "chamberlain.db")) as connection:
        connection.execute(
            "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit storage is read-only'); END"
        )
        connection.commit()
    refused = sqlite_store.cli("roles", "import", str(ISSUE_EXAMPLE))
    assert refused.exit_code == 1
    assert "the audit log cannot be written, so the change was refused" in one_line(refused.output)
    assert sqlite_store.stored_config() is None


# -- tenants ----------------------------------------------------------------------------------------------------------


def test_a_tenant_that_does_not_exist_is_a_clear_error(store: Store) -> None:
    for command in (("import", str(ISSUE_EXAMPLE)), ("show",)):
        result = store.cli("roles", *command, "--tenant", "acme")
        assert result.exit_code == 1
        assert "no tenant 'acme'" in result.stderr
    invalid = store.cli("roles", "show", "--tenant", "Not A Tenant")
    assert invalid.exit_code == 1
    assert "invalid tenant id" in invalid.stderr


def test_each_tenant_has_its_own_roles_and_keeps_its_other_settings(store: Store) -> None:
    store.create_tenant("acme", {"quotas": {"users": 10}, "name": "Acme Corp"})
    imported = store.cli("roles", "import", str(ISSUE_EXAMPLE), "--tenant", "acme")
    assert imported.exit_code == 0, imported.output
    assert "into tenant 'acme'" in imported.stdout
    config = store.stored_config("acme")
    assert config is not None
    assert config["quotas"] == {"users": 10}  # the rest of the tenant's configuration is untouched
    assert config["name"] == "Acme Corp"
    acme = store.cli("roles", "show", "--tenant", "acme")
    assert json.loads(acme.stdout) == json.loads(ISSUE_EXAMPLE.read_text())
    default = store.cli("roles", "show")
    assert RolesDocument.model_validate(json.loads(default.stdout)) == DEFAULT_ROLES
    assert "the built-in defaults" in one_line(default.stderr)
    assert store.stored_config("default") is None
    [change] = store.admin_changes("acme")
    assert change["target"] == "roles:acme"
    assert store.admin_changes("default") == []


def test_the_default_tenants_servers_do_not_count_for_another_tenant(store: Store, tmp_path: Path) -> None:
    store.create_tenant("acme")
    document = write(tmp_path / "roles.json", '{"enterprise_roles": {"developer": {"mcp_servers": ["demo"]}}}')
    at_default = store.cli("roles", "import", str(document))
    assert "warning" not in at_default.output
    at_acme = store.cli("roles", "import", str(document), "--tenant", "acme")
    assert at_acme.exit_code == 0
    assert "role 'developer' names MCP server 'demo', which is not registered" in one_line(at_acme.stderr)


# -- the configuration file wins ----------------------------------------------------------------------------------


def test_the_files_roles_win_for_the_default_tenant_and_show_says_so(sqlite_store: Store) -> None:
    write(
        sqlite_store.data_dir / "chamberlain.yaml",
        "roles:\n  enterprise_roles:\n    from_file:\n      mcp_servers: [demo]\n",
    )
    imported = sqlite_store.cli("roles", "import", str(ISSUE_EXAMPLE))
    assert imported.exit_code == 0
    assert "the configuration's roles: section sets this tenant's roles and stays in force" in one_line(imported.stderr)
    shown = sqlite_store.cli("roles", "show")
    assert json.loads(shown.stdout) == {"enterprise_roles": {"from_file": {"mcp_servers": ["demo"]}}}
    assert "in force: the configuration's roles: section" in one_line(shown.stderr)


def test_a_tenants_section_in_the_file_wins_for_that_tenant(sqlite_store: Store) -> None:
    write(
        sqlite_store.data_dir / "chamberlain.yaml",
        "tenants:\n  acme:\n    roles:\n      enterprise_roles:\n        filed:\n          mcp_servers: '*'\n",
    )
    sqlite_store.create_tenant("acme")
    assert sqlite_store.cli("roles", "import", str(ISSUE_EXAMPLE), "--tenant", "acme").exit_code == 0
    shown = sqlite_store.cli("roles", "show", "--tenant", "acme")
    assert json.loads(shown.stdout) == {"enterprise_roles": {"filed": {"mcp_servers": "*"}}}
    assert "tenants.acme.roles" in one_line(shown.stderr)
    default = sqlite_store.cli("roles", "show")
    assert "the built-in defaults" in one_line(default.stderr)
