"""Upstream servers at rest and in the configuration file: every credential round-trips, secret values are never in
the database in clear and are bound to their row, the YAML `servers:` section reports mistakes with file and line,
and migration 0002 keeps what was registered before it. The store tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import select, text, update

from chamberlain.crypto.master_key import MasterKey, MasterKeyError
from chamberlain.gateway.server_config import (
    ClientCredentialsCredential,
    HeaderCredential,
    ServerConfig,
    TokenExchangeCredential,
)
from chamberlain.settings import SettingsError, load_settings
from chamberlain.store.database import MIGRATIONS_DIR, Database, create_database, migrate
from chamberlain.store.errors import AlreadyExists
from chamberlain.store.schema import grants, refresh_tokens, servers
from chamberlain.store.servers import Server, ServerRepository, configured_servers, merge_servers
from chamberlain.store.tenants import ensure_tenant
from tests.conftest import require_postgres
from tests.support.server import postgres_database, random_name

TENANT = "default"
MASTER_KEY = MasterKey(secrets.token_bytes(32))
HEADER_SECRET = "header-secret-" + secrets.token_hex(8)
CLIENT_SECRET = "client-secret-" + secrets.token_hex(8)
ENV_SECRET = "env-secret-" + secrets.token_hex(8)

CONFIGS = {
    "none": ServerConfig(url="https://internal.example.com/mcp", scopes=("mcp:tools", "mcp:resources")),
    "header": ServerConfig(
        url="https://mcp.example.com/mcp",
        external=True,
        credential=HeaderCredential(header="X-Api-Key", value=HEADER_SECRET),
        timeout=5,
        max_message_bytes=65_536,
    ),
    "client-credentials": ServerConfig(
        url="https://mcp.example.com/mcp",
        credential=ClientCredentialsCredential(
            token_endpoint="https://idp.example.com/token",
            client_id="gateway",
            client_secret=CLIENT_SECRET,
            scope="read",
            resource="https://mcp.example.com/mcp",
        ),
    ),
    "token-exchange": ServerConfig(
        url="https://mcp.example.com/mcp",
        credential=TokenExchangeCredential(
            token_endpoint="https://idp.example.com/token",
            client_id="gateway",
            client_secret=CLIENT_SECRET,
            audience="files-api",
            resource="https://files.example.com",
            scope="files:read",
        ),
    ),
    "stdio": ServerConfig(command=("python", "-m", "files_server", "--root", "/srv"), env={"API_TOKEN": ENV_SECRET}),
}


@contextlib.contextmanager
def empty_database_url(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'chamberlain.db'}"
        return
    require_postgres()
    with postgres_database() as url:
        yield url


async def _initialise(url: str) -> None:
    database = create_database(url)
    try:
        await migrate(database)
        await ensure_tenant(database, TENANT)
    finally:
        await database.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with empty_database_url(request.param, tmp_path_factory.mktemp("servers")) as url:
        asyncio.run(_initialise(url))
        yield url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = create_database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def repository(database: Database) -> ServerRepository:
    return ServerRepository(database, TENANT, MASTER_KEY)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
async def test_every_kind_of_server_round_trips(repository: ServerRepository, kind: str) -> None:
    name = random_name(kind)
    added = await repository.add(name, CONFIGS[kind])
    found = await repository.get(name)
    assert found == added
    assert found.config == CONFIGS[kind]  # SecretStr compares by value
    assert found.scopes == CONFIGS[kind].scopes
    assert found.source == "database"
    assert [server.config for server in await repository.list() if server.name == name] == [CONFIGS[kind]]


async def test_secret_values_are_not_in_the_database_in_clear(repository: ServerRepository, database: Database) -> None:
    for kind in ("header", "token-exchange", "stdio"):
        name = random_name(kind)
        await repository.add(name, CONFIGS[kind])
        async with database.connect() as connection:
            # The raw row, without SQLAlchemy's type processing.
            row = (await connection.execute(text("SELECT * FROM servers WHERE name = :name"), {"name": name})).one()
        stored = repr(tuple(row)).encode() + b"".join(bytes(value) for value in row if isinstance(value, bytes))
        for secret in (HEADER_SECRET, CLIENT_SECRET, ENV_SECRET):
            assert secret.encode() not in stored
        assert row.secrets is not None


async def test_secrets_moved_to_another_row_do_not_decrypt(repository: ServerRepository, database: Database) -> None:
    # Someone able to write the database copies a server's encrypted secrets into a server they control.
    victim = await repository.add(random_name("victim"), CONFIGS["header"])
    thief = await repository.add(random_name("thief"), CONFIGS["client-credentials"])
    try:
        async with database.begin() as connection:
            stolen = await connection.scalar(select(servers.c.secrets).where(servers.c.id == victim.id))
            await connection.execute(update(servers).where(servers.c.id == thief.id).values(secrets=stolen))
        with pytest.raises(MasterKeyError):
            await repository.get(thief.name)
    finally:
        await repository.remove(thief.name)


async def test_another_master_key_cannot_read_the_secrets(repository: ServerRepository, database: Database) -> None:
    name = random_name("header")
    await repository.add(name, CONFIGS["header"])
    with pytest.raises(MasterKeyError):
        await ServerRepository(database, TENANT, MasterKey(secrets.token_bytes(32))).get(name)


async def test_the_built_in_server_has_no_configuration(repository: ServerRepository, database: Database) -> None:
    name = random_name("demo")
    await repository.add_built_in(name, ("mcp:tools",))
    found = await repository.get(name)
    assert found is not None
    assert found.config is None
    assert found.scopes == ("mcp:tools",)
    async with database.connect() as connection:
        stored_as_null = await connection.scalar(
            select(servers.c.id).where(servers.c.name == name, servers.c.config.is_(None), servers.c.secrets.is_(None))
        )
    assert stored_as_null == found.id


async def test_a_name_is_unique_within_its_tenant_only(repository: ServerRepository, database: Database) -> None:
    name = random_name("shared")
    await repository.add(name, CONFIGS["none"])
    with pytest.raises(AlreadyExists):
        await repository.add(name, CONFIGS["header"])
    other_tenant = random_name("tenant")
    await ensure_tenant(database, other_tenant)
    theirs = ServerRepository(database, other_tenant, MASTER_KEY)
    await theirs.add(name, CONFIGS["header"])
    ours = await repository.get(name)
    assert ours is not None
    assert ours.config == CONFIGS["none"]
    assert await theirs.remove(name)
    assert await theirs.get(name) is None
    assert await repository.get(name) == ours


async def _alembic(database: Database, direction: str, revision: str) -> None:
    def run(connection: SyncConnection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)

    await database.run_sync(run)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database_url(request.param, tmp_path) as url:
        yield url


async def test_migration_0002_keeps_the_servers_registered_before_it(empty_database: str) -> None:
    database = create_database(empty_database)
    try:
        await _alembic(database, "upgrade", "0001")
        await ensure_tenant(database, TENANT)
        now = time.time()
        async with database.begin() as connection:
            for server_id, name, upstream, scopes in (
                ("00000000-0000-0000-0000-000000000001", "demo", None, ["mcp:tools"]),
                ("00000000-0000-0000-0000-000000000002", "github", "https://mcp.example.com", ["mcp:prompts"]),
            ):
                await connection.execute(
                    servers.insert().values(
                        id=server_id, tenant_id=TENANT, name=name, url=upstream, scopes=scopes, created_at=now
                    )
                )
            await connection.execute(
                grants.insert().values(
                    id="grant-1",
                    tenant_id=TENANT,
                    client_id="c",
                    scope="mcp:tools",
                    resource="r",
                    created_at=now,
                    expires_at=now + 60,
                )
            )
            await connection.execute(
                refresh_tokens.insert().values(
                    token_hash=b"h" * 32, grant_id="grant-1", scope="mcp:tools", created_at=now, expires_at=now + 60
                )
            )

        await _alembic(database, "upgrade", "head")
        repository = ServerRepository(database, TENANT, MASTER_KEY)
        demo, github = await repository.list()
        assert (demo.name, demo.config, demo.scopes) == ("demo", None, ("mcp:tools",))
        assert github.config == ServerConfig(url="https://mcp.example.com", scopes=("mcp:prompts",))
        async with database.connect() as connection:
            assert await connection.scalar(select(grants.c.roles).where(grants.c.id == "grant-1")) is None

        # Down and up again: nothing registered is lost on the way, and no grant's refresh tokens either.
        await _alembic(database, "downgrade", "0001")
        await _alembic(database, "upgrade", "head")
        assert [server.config for server in await repository.list()] == [None, github.config]
        async with database.connect() as connection:
            assert await connection.scalar(select(refresh_tokens.c.grant_id)) == "grant-1"
    finally:
        await database.dispose()


def _write_config(directory: Path, text: str) -> Path:
    path = directory / "chamberlain.yaml"
    path.write_text(text)
    return path


WIKI = """\
port: 8080
servers:
  wiki:
    url: https://wiki.example.com/mcp
    external: true
    credential:
      type: header
      value_env: WIKI_TOKEN
  files:
    command: python -m files_server --root "/srv/shared files"
    scopes: [mcp:tools, mcp:resources]
    credential:
      type: token_exchange
      token_endpoint: https://idp.example.com/token
      client_id: gateway
      client_secret_env: FILES_CLIENT_SECRET
"""


def test_configured_servers_read_their_secrets_from_the_environment(tmp_path: Path) -> None:
    _write_config(tmp_path, WIKI)
    environ = {"WIKI_TOKEN": HEADER_SECRET, "FILES_CLIENT_SECRET": CLIENT_SECRET}
    settings = load_settings(data_dir=tmp_path, environ=environ)
    files, wiki = configured_servers(settings)
    assert wiki.config == ServerConfig(
        url="https://wiki.example.com/mcp", external=True, credential=HeaderCredential(value=HEADER_SECRET)
    )
    assert files.config is not None
    assert files.config.command == ("python", "-m", "files_server", "--root", "/srv/shared files")
    assert files.config.credential == TokenExchangeCredential(
        token_endpoint="https://idp.example.com/token", client_id="gateway", client_secret=CLIENT_SECRET
    )
    assert (files.source, files.scopes, files.created_at) == ("config", ("mcp:tools", "mcp:resources"), None)
    # The same id in every process reading the same file.
    assert configured_servers(load_settings(data_dir=tmp_path, environ=environ))[0].id == files.id


def test_a_missing_environment_variable_is_named_with_file_and_line(tmp_path: Path) -> None:
    path = _write_config(tmp_path, WIKI)
    with pytest.raises(SettingsError) as raised:
        load_settings(data_dir=tmp_path, environ={"FILES_CLIENT_SECRET": CLIENT_SECRET})
    assert str(raised.value) == (
        f"{path}:8: setting 'servers.wiki.credential.value_env': environment variable WIKI_TOKEN is not set or empty"
    )


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (
            "servers:\n  Bad_Name:\n    url: https://a.example.com\n",
            ":2: setting 'servers.Bad_Name': Value error, invalid server name 'Bad_Name'",
        ),
        (
            "servers:\n  a:\n    url: https://a.example.com\n    credential:\n      type: header\n"
            "      value: x\n      value_env: X\n",
            ":7: setting 'servers.a.credential.value_env': give 'value' or 'value_env', not both",
        ),
        (
            "servers:\n  a:\n    url: https://a.example.com\n    credential:\n      type: header\n"
            "      header: not a token\n      value: x\n",
            ":6: setting 'servers.a.credential.header': String should match pattern",
        ),
        (
            "servers:\n  a:\n    url: https://a.example.com\n    credential:\n      type: header\n"
            "      value: x\n      scope: y\n",
            ":7: unknown setting 'servers.a.credential.scope'",
        ),
        ("servers:\n  a:\n    url: https://a.example.com\n    timeout: 0\n", ":4: setting 'servers.a.timeout'"),
        ("servers:\n  a:\n    command: 'npx \"unclosed'\n", ":3: setting 'servers.a.command': cannot split"),
        ("servers:\n  a:\n    external: true\n", ":2: setting 'servers.a': Value error, give exactly one of"),
    ],
)
def test_server_mistakes_name_the_file_line_and_key(tmp_path: Path, yaml: str, message: str) -> None:
    path = _write_config(tmp_path, yaml)
    with pytest.raises(SettingsError) as raised:
        load_settings(data_dir=tmp_path, environ={"X": ENV_SECRET})
    assert str(raised.value).startswith(f"{path}{message}")
    assert ENV_SECRET not in str(raised.value)


def test_a_configured_server_overrides_a_stored_one_of_the_same_name() -> None:
    def server(name: str, source: str) -> Server:
        config = ServerConfig(url=f"https://{source}.example.com")
        return Server(name, TENANT, name, config.scopes, config, source, None)  # type: ignore[arg-type]

    effective, overridden = merge_servers(
        [server("wiki", "config"), server("jira", "config")], [server("wiki", "database"), server("git", "database")]
    )
    assert [(found.name, found.source) for found in effective] == [
        ("git", "database"),
        ("jira", "config"),
        ("wiki", "config"),
    ]
    assert [(found.name, found.source) for found in overridden] == [("wiki", "database")]
