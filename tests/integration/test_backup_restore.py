"""`chamberlain backup` / `chamberlain restore` (issue 10): the whole store in one encrypted file and back, SQLite to
SQLite and SQLite to PostgreSQL; the audit log still verifies, vault secrets still open under the same master key;
a tampered, truncated or wrongly keyed file, a non-empty target and a newer schema are refused in one line, and
nothing of a secret or a password hash is readable in the file."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from alembic import command
from alembic.script import ScriptDirectory
from click.testing import Result
from sqlalchemy import MetaData, insert, select, text
from typer.testing import CliRunner

from chamberlain.audit.checkpoints import public_keys
from chamberlain.audit.reader import read_events
from chamberlain.audit.verify import verify_tenant
from chamberlain.cli.backup import backup, restore
from chamberlain.cli.main import app as main_app
from chamberlain.settings import load_settings
from chamberlain.store import backup as backup_format
from chamberlain.store.database import MIGRATIONS_DIR, alembic_config, create_database, current_revision
from chamberlain.store.schema import revocations
from tests.conftest import require_postgres
from tests.support.canary import CANARY
from tests.support.server import postgres_database

PASSPHRASE = "a passphrase long enough"
HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
BACKUP_APP = typer.Typer(pretty_exceptions_enable=False)
BACKUP_APP.command()(backup)
BACKUP_APP.command()(restore)


def cli(data_dir: Path, *args: str, stdin: str | None = None, database_url: str | None = None) -> Result:
    """Runs `chamberlain ARGS --data-dir DATA_DIR` (backup and restore through a local app until main registers
    them), with a clean environment."""
    env = {"COLUMNS": "250", **({"CHAMBERLAIN_DATABASE_URL": database_url} if database_url else {})}
    target = BACKUP_APP if args[0] in ("backup", "restore") else main_app
    return CliRunner().invoke(target, [*args, "--data-dir", str(data_dir)], input=stdin, env=env)


def ok(data_dir: Path, *args: str, stdin: str | None = None, database_url: str | None = None) -> Result:
    result = cli(data_dir, *args, stdin=stdin, database_url=database_url)
    assert result.exit_code == 0, result.output
    return result


def refused(data_dir: Path, *args: str, stdin: str | None = None, database_url: str | None = None) -> str:
    """The one line a refused command prints."""
    result = cli(data_dir, *args, stdin=stdin, database_url=database_url)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def url_of(data_dir: Path, database_url: str | None = None) -> str:
    return load_settings(data_dir=data_dir, overrides={"database_url": database_url}, environ={}).effective_database_url


def rows_of(url: str) -> dict[str, list[str]]:
    """Every table's rows, as comparable text (bytes in hex, JSON with sorted keys), in a stable order."""

    def encode(value: Any) -> Any:
        return value.hex() if isinstance(value, bytes) else value

    async def read() -> dict[str, list[str]]:
        database = create_database(url)
        try:

            def work(sync: Any) -> dict[str, list[str]]:
                reflected = MetaData()
                reflected.reflect(sync)
                return {
                    table.name: sorted(
                        json.dumps([encode(value) for value in row], sort_keys=True)
                        for row in sync.execute(select(table))
                    )
                    for table in reflected.sorted_tables
                    if table.name != "alembic_version"
                }

            return await database.run_sync(work)
        finally:
            await database.dispose()

    return asyncio.run(read())


def verify_all(url: str) -> dict[str, int]:
    """Each tenant's audit log, verified as `chamberlain audit verify` does: tenant -> records."""

    async def check() -> dict[str, int]:
        database = create_database(url)
        try:
            keys = await public_keys(database)
            results = [await verify_tenant(database, tenant, keys) for tenant in ("default", "acme")]
        finally:
            await database.dispose()
        for result in results:
            assert result.ok, result.problem
        return {result.tenant: result.records for result in results}

    return asyncio.run(check())


def last_event(url: str, tenant: str = "default") -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        database = create_database(url)
        try:
            return (await read_events(database, tenant, limit=10_000))[-1].public
        finally:
            await database.dispose()

    return asyncio.run(read())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with two tenants, users, a server with a credential, a vault secret (the canary), revocations and
    audit events under a signed checkpoint."""
    data_dir = tmp_path_factory.mktemp("backup-source")
    ok(data_dir, "init")
    ok(data_dir, "tenants", "add", "acme")
    ok(data_dir, "users", "add", "bob", "--role", "developer", "--password-stdin", stdin="bob's password 1\n")
    ok(
        data_dir,
        "users",
        "add",
        "eve",
        "--role",
        "developer",
        "--tenant",
        "acme",
        "--password-stdin",
        stdin="eve's password 22\n",
    )
    ok(data_dir, "servers", "add", "github", "--url", "https://mcp.example.com/mcp")
    ok(data_dir, "vault", "set", "github", "token", "--from-stdin", "--bind", "github", stdin=CANARY)
    ok(data_dir, "vault", "set", "jira", "token", "--from-stdin", "--tenant", "acme", stdin=CANARY + "-acme")

    async def revoke() -> None:
        database = create_database(url_of(data_dir))
        try:
            async with database.begin() as connection:
                for number in range(3):
                    values = {"kind": "jti", "value": f"jti-{number}", "expires_at": 2e9, "created_at": time.time()}
                    await connection.execute(insert(revocations).values(values))
        finally:
            await database.dispose()

    asyncio.run(revoke())
    ok(data_dir, "audit", "checkpoint")
    ok(
        data_dir, "users", "add", "carol", "--role", "developer", "--password-stdin", stdin="carol's password 3\n"
    )  # after the checkpoint
    return data_dir


@pytest.fixture(scope="module")
def master_backup(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("backups") / "store.backup"
    output = ok(source, "backup", str(path)).output
    assert "Backed up" in output
    return path


@pytest.fixture(scope="module")
def passphrase_backup(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("backups") / "store.backup"
    ok(source, "backup", str(path), "--passphrase-stdin", stdin=PASSPHRASE + "\n")
    return path


def target_with_master_key_of(source: Path, target: Path) -> Path:
    """A fresh data directory holding the source's master key (what a restore on a new machine starts from)."""
    target.mkdir(mode=0o700)
    shutil.copy2(source / "master.key", target / "master.key")
    return target


def assert_restored(source: Path, target: Path, database_url: str | None = None) -> None:
    """Every row came back, plus exactly one event: the restore itself, at the end of the restored chain."""
    before, after = rows_of(url_of(source)), rows_of(url_of(target, database_url))
    assert before.keys() == after.keys()
    for table, rows in before.items():
        if table != "audit_events":
            assert after[table] == rows, table
    assert set(before["audit_events"]) < set(after["audit_events"])
    assert len(after["audit_events"]) == len(before["audit_events"]) + 1
    restored_event = last_event(url_of(target, database_url))
    assert restored_event["action"] == "admin.change"
    assert restored_event["target"] == "store"
    assert restored_event["details"]["after"]["rows"] == sum(len(rows) for rows in before.values())
    records = verify_all(url_of(target, database_url))
    assert records["default"] == verify_all(url_of(source))["default"] + 1
    assert "default: ok" in ok(target, "audit", "verify", database_url=database_url).output


def test_round_trip_sqlite_to_sqlite(source: Path, master_backup: Path, tmp_path: Path) -> None:
    assert master_backup.stat().st_mode & 0o777 == 0o600
    target = target_with_master_key_of(source, tmp_path / "target")
    output = ok(target, "restore", str(master_backup)).output
    assert "Restored" in output
    assert_restored(source, target)
    # Secrets encrypted at rest came back as they were and open under the same master key.
    assert ok(target, "vault", "get", "github", "token").stdout == CANARY
    assert "bob" in ok(target, "users", "list").output


def test_round_trip_sqlite_to_postgresql(source: Path, master_backup: Path, tmp_path: Path) -> None:
    require_postgres()
    target = target_with_master_key_of(source, tmp_path / "target")
    with postgres_database() as url:
        ok(target, "restore", str(master_backup), database_url=url)
        assert_restored(source, target, url)
        assert ok(target, "vault", "get", "jira", "token", "--tenant", "acme", database_url=url).stdout == (
            CANARY + "-acme"
        )

        async def revoke_again() -> int:
            # The serial sequence moved past the restored ids: a new row does not collide with them.
            database = create_database(url)
            try:
                async with database.begin() as connection:
                    values = {"kind": "jti", "value": "new", "expires_at": 2e9, "created_at": time.time()}
                    inserted = await connection.execute(insert(revocations).values(values))
                    return int(inserted.inserted_primary_key[0])
            finally:
                await database.dispose()

        assert asyncio.run(revoke_again()) == 4

        # And back: a backup of the PostgreSQL store (its REPEATABLE READ snapshot) restores onto SQLite.
        path = tmp_path / "from-postgresql.backup"
        ok(target, "backup", str(path), database_url=url)
        on_sqlite = target_with_master_key_of(source, tmp_path / "sqlite-again")
        ok(on_sqlite, "restore", str(path))
        from_postgresql, now = rows_of(url), rows_of(url_of(on_sqlite))
        assert {table: rows for table, rows in now.items() if table != "audit_events"} == {
            table: rows for table, rows in from_postgresql.items() if table != "audit_events"
        }
        assert len(now["audit_events"]) == len(from_postgresql["audit_events"]) + 1
        assert ok(on_sqlite, "vault", "get", "github", "token").stdout == CANARY
        verify_all(url_of(on_sqlite))


def test_a_passphrase_backup_restores_where_the_master_key_differs(
    source: Path, passphrase_backup: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    ok(target, "init")  # its own, different master key, and a store with rows
    assert (target / "master.key").read_bytes() != (source / "master.key").read_bytes()
    line = refused(target, "restore", str(passphrase_backup), "--passphrase-stdin", stdin="not the passphrase\n")
    assert line == "error: the backup cannot be decrypted with this key"
    line = refused(target, "restore", str(passphrase_backup))
    assert "encrypted with a passphrase: pass --passphrase-stdin" in line
    ok(target, "restore", str(passphrase_backup), "--passphrase-stdin", "--force", stdin=PASSPHRASE + "\n")
    before, after = rows_of(url_of(source)), rows_of(url_of(target))
    assert after["users"] == before["users"]
    assert after["vault_secret_versions"] == before["vault_secret_versions"]


def test_a_short_passphrase_is_refused(source: Path, tmp_path: Path) -> None:
    line = refused(source, "backup", str(tmp_path / "weak.backup"), "--passphrase-stdin", stdin="short\n")
    assert "at least 12 characters" in line
    assert not (tmp_path / "weak.backup").exists()


def test_the_wrong_master_key_is_refused(master_backup: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    ok(target, "init")
    line = refused(target, "restore", str(master_backup), "--force")
    assert line == "error: the backup cannot be decrypted with this key"
    assert "admin" in ok(target, "users", "list").output  # untouched


def flipped(data: bytes, index: int) -> bytes:
    altered = bytearray(data)
    altered[index] ^= 0x01
    return bytes(altered)


def test_a_tampered_or_truncated_file_is_refused_and_nothing_is_restored(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small segments, so the file has many and a late one fails after earlier rows were inserted: the restore's
    # one transaction must leave nothing behind.
    monkeypatch.setattr(backup_format, "SEGMENT_BYTES", 256)
    good = tmp_path / "good.backup"
    ok(source, "backup", str(good))
    data = good.read_bytes()
    start = len(backup_format.MAGIC)
    header_end = start + 4 + int.from_bytes(data[start : start + 4], "big")
    target = target_with_master_key_of(source, tmp_path / "target")
    altered = tmp_path / "altered.backup"
    segment = 256 + 16
    cases = {
        "a byte of the last segment": flipped(data, len(data) - 5),
        "a byte of the first segment": flipped(data, header_end + 10),
        "a byte of a middle segment": flipped(data, header_end + 3 * segment + 7),
        "the last segment dropped": data[: header_end + ((len(data) - header_end) // segment - 1) * segment],
        "two segments swapped": data[:header_end]
        + data[header_end + segment : header_end + 2 * segment]
        + data[header_end : header_end + segment]
        + data[header_end + 2 * segment :],
        "cut mid-segment": data[: header_end + 5 * segment + 100],
    }
    for case, content in cases.items():
        altered.write_bytes(content)
        line = refused(target, "restore", str(altered))
        assert "fails authentication" in line, case
        assert not (target / "chamberlain.db").exists() or rows_of(url_of(target)) == {}, case  # not even tables
    # The header is bound to every segment: a changed header fails too, whatever it claims.
    version = b'"chamberlain":"0.1.0"'
    assert version in data[:header_end]
    altered.write_bytes(data.replace(version, version.replace(b"0.1.0", b"0.1.1"), 1))
    assert "fails authentication" in refused(target, "restore", str(altered))
    for cut in (3, len(backup_format.MAGIC) + 2, 60):
        altered.write_bytes(data[:cut])
        line = refused(target, "restore", str(altered))
        assert "truncated" in line
    altered.write_bytes(b"PK\x03\x04 not a backup at all")
    assert "is not a Chamberlain backup" in refused(target, "restore", str(altered))
    assert "No such file or directory" in refused(target, "restore", str(tmp_path / "missing.backup"))
    ok(target, "restore", str(good))  # the intact file still restores into the untouched store


def test_a_store_with_rows_is_refused_without_force_and_replaced_with_it(
    source: Path, master_backup: Path, tmp_path: Path
) -> None:
    target = target_with_master_key_of(source, tmp_path / "target")
    ok(target, "init")
    ok(target, "users", "add", "mallory", "--role", "developer", "--password-stdin", stdin="mallory's password\n")
    line = refused(target, "restore", str(master_backup))
    assert "the store is not empty" in line
    assert "pass --force" in line
    assert "mallory" in ok(target, "users", "list").output
    ok(target, "restore", str(master_backup), "--force")
    users = ok(target, "users", "list").output
    assert "mallory" not in users
    assert "bob" in users
    assert_restored(source, target)


def test_a_backup_from_a_newer_schema_is_refused(source: Path, tmp_path: Path) -> None:
    newer = tmp_path / "newer"
    shutil.copytree(source, newer)

    async def advance() -> None:
        database = create_database(url_of(newer))
        try:
            async with database.begin() as connection:
                await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        finally:
            await database.dispose()

    asyncio.run(advance())
    path = tmp_path / "newer.backup"
    ok(newer, "backup", str(path))
    target = target_with_master_key_of(source, tmp_path / "target")
    line = refused(target, "restore", str(path))
    assert "schema revision 9999, newer than this Chamberlain knows" in line
    assert not (target / "chamberlain.db").exists() or rows_of(url_of(target)) == {}


def old_store(data_dir: Path, revision: str) -> None:
    """A store left at an older schema revision, with a tenant and a user in it."""
    url = url_of(data_dir)

    async def build() -> None:
        database = create_database(url)
        try:
            await database.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
            async with database.begin() as connection:
                await connection.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('old', 'Old', 1.5)"))
                await connection.execute(
                    text(
                        "INSERT INTO users (id, tenant_id, username, roles, failed_logins, must_change_password, "
                        "disabled, created_at) VALUES ('u1', 'old', 'olga', '[\"admin\"]', 0, 0, 0, 2.5)"
                    )
                )
        finally:
            await database.dispose()

    asyncio.run(build())


def test_an_older_backup_is_restored_then_migrated(source: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy2(source / "master.key", old / "master.key")
    old_store(old, "0006")
    path = tmp_path / "old.backup"
    ok(old, "backup", str(path))  # a store behind the code is backed up as it is, before `chamberlain migrate`
    assert backup_format.read_header(path).revision == "0006"
    assert "llm_virtual_keys" not in {table.name for table in backup_format.read_header(path).tables}

    for name, prepare in (("empty", lambda target: None), ("newer", lambda target: ok(target, "init"))):
        target = target_with_master_key_of(source, tmp_path / name)
        prepare(target)
        output = ok(target, "restore", str(path), "--force").output
        assert f"Migrated the restored store to schema revision {HEAD}" in output
        rows = rows_of(url_of(target))
        assert "llm_virtual_keys" in rows
        assert [json.loads(row)[2] for row in rows["users"]] == ["olga"]

        async def revision(target: Path = target) -> str | None:
            database = create_database(url_of(target))
            try:
                return await current_revision(database)
            finally:
                await database.dispose()

        assert asyncio.run(revision()) == HEAD


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_the_file_is_0600_and_never_overwritten_without_force(
    source: Path, tmp_path: Path, permissive_umask: None
) -> None:
    path = tmp_path / "store.backup"
    ok(source, "backup", str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_bytes()
    line = refused(source, "backup", str(path))
    assert line == f"error: {path} already exists: pass --force to replace it"
    assert path.read_bytes() == first
    ok(source, "backup", str(path), "--force")
    assert path.read_bytes() != first
    assert path.stat().st_mode & 0o777 == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["store.backup"]  # no partial file left behind


def test_the_file_holds_no_secret_or_password_hash(source: Path, master_backup: Path, passphrase_backup: Path) -> None:
    hashes = [json.loads(row)[3] for row in rows_of(url_of(source))["users"]]
    assert all(value and value.startswith("$argon2") for value in hashes)
    secrets = [CANARY, CANARY + "-acme", "bob's password 1", *hashes]
    for path in (master_backup, passphrase_backup):
        data = path.read_bytes()
        for secret in secrets:
            raw = secret.encode()
            for form in (raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"="), raw.hex().encode()):
                assert form not in data, path
        # Not even the rows' shape: past the header, the file is ciphertext.
        assert b"argon2" not in data
        assert b'["users",' not in data


def test_the_backup_is_one_snapshot_while_writers_carry_on(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "live"
    shutil.copytree(source, live)
    written: list[bool] = []
    write = backup_format._Sealer.write

    def write_after_a_commit_elsewhere(sealer: Any, data: bytes) -> None:
        # Once the backup has begun reading, another connection changes a table it has not read yet, and one it has.
        if not written:
            other = sqlite3.connect(live / "chamberlain.db")
            with other:
                other.execute(
                    "INSERT INTO revocations (kind, value, expires_at, created_at) VALUES ('jti', 'late', 2e9, 1)"
                )
                other.execute("UPDATE users SET disabled = 1")
                other.execute("DELETE FROM audit_events")
            other.close()
            written.append(True)
        write(sealer, data)

    monkeypatch.setattr(backup_format._Sealer, "write", write_after_a_commit_elsewhere)
    path = tmp_path / "live.backup"
    ok(live, "backup", str(path))
    assert written
    assert rows_of(url_of(live))["audit_events"] == []  # the change was committed while the backup ran
    target = target_with_master_key_of(source, tmp_path / "target")
    ok(target, "restore", str(path))
    before, after = rows_of(url_of(source)), rows_of(url_of(target))
    for table in ("revocations", "users", "tenants", "vault_secret_versions"):
        assert after[table] == before[table], table
    assert set(before["audit_events"]) < set(after["audit_events"])
