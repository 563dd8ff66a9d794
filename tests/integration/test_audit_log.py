"""The audit log on a real store, through `chamberlain audit`: admin changes fail closed (issue 7, acceptance 3),
GDPR erasure by crypto-shredding (acceptance 5), retention under signed tombstones and legal holds."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner, Result

from chamberlain.audit.events import Action, Actor, AuditEvent
from chamberlain.audit.log import AuditLog
from chamberlain.audit.privacy import SubjectKeys
from chamberlain.audit.reader import read_events
from chamberlain.audit.records import StoredEvent
from chamberlain.cli.main import app
from chamberlain.crypto.master_key import MasterKey, load_master_key
from chamberlain.settings import Settings, load_settings
from chamberlain.store.database import Database, create_database
from chamberlain.store.schema import audit_events

T = TypeVar("T")
DAY = 86_400.0


@dataclass(frozen=True)
class Store:
    """An initialised data directory and its database, driven through the CLI and the audit library."""

    data_dir: Path
    database_url: str | None = None  # None: SQLite in the data dir

    @classmethod
    def initialised(cls, data_dir: Path, database_url: str | None = None) -> Store:
        store = cls(data_dir, database_url)
        result = store.cli("init")
        assert result.exit_code == 0, result.output
        return store

    @property
    def settings(self) -> Settings:
        return load_settings(data_dir=self.data_dir, overrides={"database_url": self.database_url}, environ={})

    @property
    def master_key(self) -> MasterKey:
        return load_master_key(self.data_dir)

    def cli(self, *args: str, stdin: str | None = None) -> Result:
        env = {"CHAMBERLAIN_DATABASE_URL": self.database_url} if self.database_url else {}
        return CliRunner().invoke(app, [*args, "--data-dir", str(self.data_dir)], input=stdin, env=env)

    def run(self, work: Callable[[Database], Awaitable[T]]) -> T:
        """Runs `work` with an open database (each call in its own event loop, like the CLI)."""

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

    def write(self, events: list[AuditEvent]) -> None:
        """Writes the events through the real writer (queued, group-committed) and waits until they are durable."""

        async def write(database: Database) -> None:
            log = AuditLog(database, self.master_key, self.settings.audit)
            await log.start()
            for event in events:
                log.record(event)
            await log.flush()
            await log.aclose()

        self.run(write)

    def events(self, tenant: str = "default", **filters: Any) -> list[StoredEvent]:
        return self.run(lambda database: read_events(database, tenant, limit=10_000, **filters))

    def verify(self, *args: str) -> Result:
        return self.cli("audit", "verify", *args)


def sign_in(tenant: str = "default", *, subject: str | None = None, **fields: Any) -> AuditEvent:
    return AuditEvent(
        action=Action.SIGN_IN,
        outcome="success",
        tenant=tenant,
        actor=Actor("user", subject or "user-0"),
        subject=subject,
        **fields,
    )


def one_line(result: Result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.initialised(tmp_path)


# -- fail closed (acceptance 3: admin changes) ---------------------------------------------------------------------


def make_audit_unwritable(store: Store) -> None:
    with contextlib.closing(sqlite3.connect(store.data_dir / "chamberlain.db")) as connection:
        connection.execute(
            "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit storage is read-only'); END"
        )
        connection.commit()


def database_contents(store: Store) -> list[str]:
    with contextlib.closing(sqlite3.connect(store.data_dir / "chamberlain.db")) as connection:
        return list(connection.iterdump())


@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        (("servers", "add", "unaudited", "--url", "http://127.0.0.1:9/mcp"), None),
        (("audit", "hold", "user-1", "--reason", "case 7"), None),
        (("users", "add", "mallory", "--role", "developer", "--password-stdin"), "a long enough password\n"),
        (("keys", "rotate"), None),
    ],
    ids=["servers-add", "audit-hold", "users-add", "keys-rotate"],
)
def test_an_admin_change_that_cannot_be_audited_is_refused_and_changes_nothing(
    store: Store, command: tuple[str, ...], stdin: str | None
) -> None:
    make_audit_unwritable(store)
    before = database_contents(store)
    refused = store.cli(*command, stdin=stdin)
    assert refused.exit_code == 1
    assert "error: the audit log cannot be written, so the change was refused (audit.fail_closed)" in refused.output
    assert "Traceback" not in refused.output
    assert database_contents(store) == before


def test_an_admin_change_is_in_the_log_before_it_is_acknowledged(store: Store) -> None:
    added = store.cli("servers", "add", "audited", "--url", "http://127.0.0.1:9/mcp")
    assert added.exit_code == 0, added.output
    [change] = store.events(actions=[Action.ADMIN_CHANGE])
    assert change.public["target"] == "server:audited"
    assert change.public["details"]["after"]["url"] == "http://127.0.0.1:9/mcp"
    assert change.outcome == "success"


# -- GDPR erasure (acceptance 5) -----------------------------------------------------------------------------------


def personal_values() -> dict[str, str]:
    """Values that occur nowhere else, so finding one in the database's bytes means it was stored in clear."""
    return {"username": f"name-{secrets.token_hex(8)}", "source_ip": f"198.51.100.{secrets.randbelow(250)}"}


def raw_store_bytes(store: Store) -> bytes:
    """The database as it sits on disk, write-ahead log included."""
    return b"".join(path.read_bytes() for path in sorted(store.data_dir.glob("chamberlain.db*")))


def test_erasing_a_user_shreds_their_personal_fields_and_the_log_still_verifies(store: Store) -> None:
    alice, bob = personal_values(), personal_values()
    store.write(
        [sign_in(subject=user, personal=fields) for _ in range(3) for user, fields in (("a", alice), ("b", bob))]
    )
    assert store.cli("audit", "checkpoint").exit_code == 0
    keys = SubjectKeys(store.master_key)
    readable = store.events(actions=[Action.SIGN_IN], subject_keys=keys)
    assert [event.personal for event in readable] == [alice, bob] * 3

    erased = store.cli("audit", "erase", "a")
    assert erased.exit_code == 0, erased.output
    assert "erased the personal fields of a" in one_line(erased)

    after = store.events(actions=[Action.SIGN_IN], subject_keys=SubjectKeys(store.master_key))
    assert [(event.subject, event.personal) for event in after] == [("a", None), ("b", bob)] * 3
    raw = raw_store_bytes(store)
    for value in [*alice.values(), *bob.values()]:
        assert value.encode() not in raw, "a personal value is stored in clear"
    verified = store.verify()
    assert verified.exit_code == 0, verified.output
    [erasure] = store.events(actions=[Action.AUDIT_ERASURE])
    assert erasure.public["target"] == "subject:a"


def test_erasing_an_unknown_user_is_recorded_and_changes_no_one_else(store: Store) -> None:
    bob = personal_values()
    store.write([sign_in(subject="b", personal=bob)])
    erased = store.cli("audit", "erase", "nobody")
    assert erased.exit_code == 0, erased.output
    assert "had no personal fields" in one_line(erased)
    [event] = store.events(actions=[Action.SIGN_IN], subject_keys=SubjectKeys(store.master_key))
    assert event.personal == bob
    assert len(store.events(actions=[Action.AUDIT_ERASURE])) == 1


# -- retention -----------------------------------------------------------------------------------------------------


def test_retention_purges_expired_events_under_a_tombstone_and_a_legal_hold_keeps_them(store: Store) -> None:
    (store.data_dir / "chamberlain.yaml").write_text(
        "audit:\n"
        "  default_retention_days: 365\n"
        "  classification_rules:\n"
        "    - {pattern: marketing_content, classification: public, retention_days: 7, audit_level: summary}\n"
    )
    now = time.time()
    store.write(
        [
            sign_in(subject="a", time=now - 400 * DAY),  # 0: expired
            sign_in(subject="b", time=now - 400 * DAY),  # 1: expired, but b is held
            sign_in(time=now - 400 * DAY),  # 2: expired, no subject
            sign_in(subject="a", time=now - 30 * DAY, classification="public"),  # 3: past its rule's 7 days
            sign_in(subject="a", time=now - 30 * DAY),  # 4: within the default 365 days
            sign_in(subject="b", time=now),  # 5
        ]
    )
    held = store.cli("audit", "hold", "b", "--reason", "case 7")
    assert held.exit_code == 0, held.output

    purged = store.cli("audit", "purge")
    assert purged.exit_code == 0, purged.output
    assert "default: purged 3 events" in one_line(purged)
    assert purged_seqs(store) == [0, 2, 3]
    assert store.verify().exit_code == 0

    assert store.cli("audit", "release", "b").exit_code == 0
    assert "default: purged 1 events" in one_line(store.cli("audit", "purge"))
    assert purged_seqs(store) == [0, 1, 2, 3]
    verified = store.verify()
    assert verified.exit_code == 0, verified.output
    assert "2 checkpoints" in one_line(verified)  # the two tombstones


def test_a_tenants_compliance_modes_set_its_retention(store: Store) -> None:
    # HIPAA keeps six years where the file's default is 90 days: the tenant's mode wins for what no rule covers.
    (store.data_dir / "chamberlain.yaml").write_text(
        "audit:\n  default_retention_days: 90\ndlp:\n  compliance: [hipaa]\n"
    )
    now = time.time()
    store.write([sign_in(subject="a", time=now - 7 * 365 * DAY), sign_in(subject="a", time=now - 400 * DAY)])
    purged = store.cli("audit", "purge")
    assert purged.exit_code == 0, purged.output
    assert "default: purged 1 events" in one_line(purged)
    assert purged_seqs(store) == [0]


def test_a_body_emptied_without_a_tombstone_is_named(store: Store) -> None:
    store.write([sign_in(subject="a", time=time.time() - 400 * DAY), sign_in(subject="a"), sign_in(subject="a")])
    assert store.cli("audit", "purge").exit_code == 0  # a tombstone for record 0 only

    async def empty_record_2(database: Database) -> None:
        async with database.begin() as connection:
            await connection.execute(update(audit_events).where(audit_events.c.seq == 2).values(body=None))

    store.run(empty_record_2)
    verified = store.verify()
    assert verified.exit_code == 1
    assert "record 2 was emptied without a tombstone" in one_line(verified)


def purged_seqs(store: Store) -> list[int]:
    async def purged(database: Database) -> list[int]:
        async with database.connect() as connection:
            query = select(audit_events.c.seq).where(audit_events.c.body.is_(None)).order_by(audit_events.c.seq)
            return list((await connection.scalars(query)).all())

    return store.run(purged)
