"""The envelope-encrypted store on SQLite and PostgreSQL (issue 6, acceptance 1): versions kept until purged,
tampered ciphertext, associated data of another secret and a wrong KEK all refused with a clear error naming the
secret (never its value), KEK rotation that keeps every secret readable without decrypting one, and rotation of a
generated API key and of a real PostgreSQL role's password."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, update
from sqlalchemy.engine.url import make_url

from chamberlain.audit.events import Action, Actor
from chamberlain.audit.log import AuditLog
from chamberlain.audit.reader import read_events
from chamberlain.audit.settings import AuditSettings
from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import Database
from chamberlain.store.schema import metadata, vault_credentials, vault_secret_versions
from chamberlain.store.tenants import ensure_tenant
from chamberlain.store.vault import VaultRepository
from chamberlain.vault.backend import SecretNotFound, SecretRef, SecretUnreadable, VaultError
from chamberlain.vault.envelope import EnvelopeBackend
from chamberlain.vault.kek import KekRing, LocalKek
from chamberlain.vault.rotation import (
    RotationFailed,
    RotationNotSupported,
    generated_rotation,
    postgres_rotation,
    rotate,
    rotation_check,
)
from chamberlain.vault.service import REAUTHORIZE, CredentialUnhealthy, Vault
from chamberlain.vault.settings import DAY, CredentialKind
from tests.conftest import require_postgres
from tests.support.canary import watch
from tests.support.databases import migrated_database_url, opened_database
from tests.support.server import POSTGRES_ADMIN_URL, random_name

MASTER_KEY = MasterKey(os.urandom(32))
OPERATOR = Actor("user", "os:tester")
versions_table = vault_secret_versions


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url(request.param, tmp_path_factory, "vault-store")


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    async with opened_database(database_url) as database:
        yield database


@pytest.fixture
async def tenant(database: Database) -> str:
    tenant_id = random_name("tenant")
    await ensure_tenant(database, tenant_id)
    return tenant_id


@pytest.fixture
def kek() -> LocalKek:
    return LocalKek.generate()


@pytest.fixture
def backend(database: Database, kek: LocalKek) -> EnvelopeBackend:
    return EnvelopeBackend(database, KekRing(kek))


@pytest.fixture
async def audit(database: Database) -> AsyncIterator[AuditLog]:
    log = AuditLog(database, MASTER_KEY, AuditSettings(commit_delay=0))
    await log.start()
    yield log
    await log.aclose()


@pytest.fixture
def vault(database: Database, backend: EnvelopeBackend, audit: AuditLog) -> Vault:
    return Vault(database, backend, audit)


def canary() -> bytes:
    """A fresh secret, searched for in everything the run logs, audits and answers (tests/support/canary.py)."""
    value = f"canary-{secrets.token_hex(12)}".encode()
    watch(value)
    return value


async def set_row(database: Database, ref: SecretRef, version: int, **values: Any) -> None:
    async with database.begin() as connection:
        await connection.execute(
            update(versions_table)
            .where(
                versions_table.c.tenant_id == ref.tenant,
                versions_table.c.source == ref.source,
                versions_table.c.name == ref.name,
                versions_table.c.version == version,
            )
            .values(**values)
        )


async def row_of(database: Database, ref: SecretRef, version: int) -> dict[str, Any]:
    async with database.connect() as connection:
        row = (
            (
                await connection.execute(
                    select(versions_table).where(
                        versions_table.c.tenant_id == ref.tenant,
                        versions_table.c.source == ref.source,
                        versions_table.c.name == ref.name,
                        versions_table.c.version == version,
                    )
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


async def copy_row(database: Database, row: dict[str, Any], **changes: Any) -> None:
    async with database.begin() as connection:
        await connection.execute(insert(versions_table).values({**row, **changes}))


def flipped(data: bytes, index: int) -> bytes:
    altered = bytearray(data)
    altered[index] ^= 0x01
    return bytes(altered)


# -- schema --------------------------------------------------------------------------------------------------------


async def test_the_migration_creates_exactly_the_tables_of_the_schema(database: Database) -> None:
    def differences(sync: Any) -> list[Any]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return [difference for difference in compare_metadata(context, metadata) if "vault_" in repr(difference)]

    assert await database.run_sync(differences) == []
    assert {vault_secret_versions.name, vault_credentials.name} <= set(metadata.tables)


# -- versions ------------------------------------------------------------------------------------------------------


async def test_each_put_is_a_new_version_kept_until_purged(backend: EnvelopeBackend, tenant: str) -> None:
    ref = SecretRef(tenant, "github", "token")
    values = [canary() for _ in range(4)]
    stored = [await backend.put(ref, value, metadata={"kind": "api_key"}) for value in values]
    assert [version.version for version in stored] == [1, 2, 3, 4]
    assert stored[0].metadata == {"kind": "api_key"}
    assert await backend.get(ref) == values[-1]
    for number, value in enumerate(values, start=1):
        assert await backend.get(ref, number) == value
    assert [version.version for version in await backend.versions(ref)] == [1, 2, 3, 4]

    assert await backend.purge(ref, keep=2) == 2
    assert [version.version for version in await backend.versions(ref)] == [3, 4]
    with pytest.raises(SecretNotFound, match=re.escape(f"no secret {ref} version 1")):
        await backend.get(ref, 1)
    assert await backend.get(ref, 3) == values[2]
    assert await backend.purge(ref, keep=2) == 0
    with pytest.raises(ValueError, match="use delete"):
        await backend.purge(ref, keep=0)
    # Numbers keep growing after a purge: a new version never reuses a number (it is in the associated data).
    assert (await backend.put(ref, canary())).version == 5

    assert await backend.delete(ref)
    assert await backend.versions(ref) == []
    assert not await backend.delete(ref)
    with pytest.raises(SecretNotFound, match=re.escape(f"no secret {ref}")):
        await backend.get(ref)


async def test_list_gives_the_latest_version_of_each_secret(backend: EnvelopeBackend, tenant: str) -> None:
    for source, name, count in (("github", "a", 2), ("github", "b", 1), ("jira", "a", 3)):
        for _ in range(count):
            await backend.put(SecretRef(tenant, source, name), canary())
    listed = [(item.ref.source, item.ref.name, item.version) for item in await backend.list(tenant)]
    assert listed == [("github", "a", 2), ("github", "b", 1), ("jira", "a", 3)]
    assert [(item.ref.name, item.version) for item in await backend.list(tenant, "jira")] == [("a", 3)]
    assert await backend.list(tenant, "nothing") == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.binary(min_size=1, max_size=2048))
async def test_any_value_round_trips(backend: EnvelopeBackend, tenant: str, value: bytes) -> None:
    ref = SecretRef(tenant, "source", random_name("name"))
    await backend.put(ref, value)
    assert await backend.get(ref) == value


async def test_concurrent_writers_get_distinct_versions(backend: EnvelopeBackend, tenant: str) -> None:
    ref = SecretRef(tenant, "github", "busy")
    values = [canary() for _ in range(12)]
    stored = await asyncio.gather(*(backend.put(ref, value) for value in values))
    assert sorted(version.version for version in stored) == list(range(1, 13))
    for version, value in zip(stored, values, strict=True):
        assert await backend.get(ref, version.version) == value


async def test_a_secret_of_a_tenant_that_does_not_exist_is_refused(backend: EnvelopeBackend) -> None:
    with pytest.raises(VaultError, match="no such tenant"):
        await backend.put(SecretRef(random_name("ghost"), "s", "n"), b"value")


# -- tampering (acceptance 1) --------------------------------------------------------------------------------------


async def stored_secret(backend: EnvelopeBackend, tenant: str) -> tuple[SecretRef, bytes]:
    ref = SecretRef(tenant, "confluence", random_name("token"))
    value = canary()
    await backend.put(ref, value)
    return ref, value


def refused_clearly(problem: pytest.ExceptionInfo[SecretUnreadable], ref: SecretRef, value: bytes) -> None:
    message = str(problem.value)
    assert str(ref) in message
    assert value.decode() not in message
    assert problem.value.__cause__ is None  # nothing chained that could carry bytes


@pytest.mark.parametrize("column", ["ciphertext", "wrapped_key"])
async def test_every_altered_byte_is_refused(
    database: Database, backend: EnvelopeBackend, tenant: str, column: str
) -> None:
    ref, value = await stored_secret(backend, tenant)
    original = (await row_of(database, ref, 1))[column]
    for index in range(len(original)):
        await set_row(database, ref, 1, **{column: flipped(original, index)})
        with pytest.raises(SecretUnreadable) as refused:
            await backend.get(ref)
        refused_clearly(refused, ref, value)
    await set_row(database, ref, 1, **{column: original})
    assert await backend.get(ref) == value


async def test_a_row_copied_to_another_name_source_tenant_or_version_is_refused(
    database: Database, backend: EnvelopeBackend, tenant: str
) -> None:
    ref, value = await stored_secret(backend, tenant)
    row = await row_of(database, ref, 1)
    other_tenant = random_name("tenant")
    await ensure_tenant(database, other_tenant)
    moved = [
        (SecretRef(tenant, ref.source, ref.name + "-copy"), 1),
        (SecretRef(tenant, "elsewhere", ref.name), 1),
        (SecretRef(other_tenant, ref.source, ref.name), 1),
        (ref, 2),  # an old version replayed as a newer one
    ]
    for target, version in moved:
        await copy_row(
            database,
            row,
            tenant_id=target.tenant,
            source=target.source,
            name=target.name,
            version=version,
        )
        with pytest.raises(SecretUnreadable, match="does not unwrap") as refused:
            await backend.get(target, version)
        refused_clearly(refused, target, value)


async def test_a_wrong_kek_is_refused(database: Database, backend: EnvelopeBackend, kek: LocalKek, tenant: str) -> None:
    ref, value = await stored_secret(backend, tenant)
    stranger = EnvelopeBackend(database, KekRing(LocalKek.generate()))
    with pytest.raises(SecretUnreadable, match=f"wrapped by key-encryption key {kek.key_id}, which is not configured"):
        await stranger.get(ref)

    class Impostor:
        """Another key presenting the same id (a row relabelled, or a misconfigured key)."""

        key_id = kek.key_id

        def __init__(self) -> None:
            self._inner = LocalKek.generate()

        async def wrap(self, data_key: bytes, associated_data: bytes) -> bytes:
            return await self._inner.wrap(data_key, associated_data)

        async def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
            return await self._inner.unwrap(wrapped, associated_data)

    with pytest.raises(SecretUnreadable, match="does not unwrap") as refused:
        await EnvelopeBackend(database, KekRing(Impostor())).get(ref)
    refused_clearly(refused, ref, value)
    # A row relabelled with another configured KEK's id does not unwrap under it either.
    other = LocalKek.generate()
    await set_row(database, ref, 1, kek_id=other.key_id)
    with pytest.raises(SecretUnreadable, match="does not unwrap"):
        await EnvelopeBackend(database, KekRing(kek, [other])).get(ref)


async def test_the_store_holds_no_value_in_clear(
    database: Database, database_url: str, backend: EnvelopeBackend, tenant: str
) -> None:
    values = [canary() for _ in range(5)]
    for index, value in enumerate(values):
        await backend.put(SecretRef(tenant, "db", f"secret-{index}"), value)
    async with database.connect() as connection:
        rows = (await connection.execute(select(versions_table))).all()
    stored = b"".join(repr(tuple(row)).encode() for row in rows)
    raw = b""
    if make_url(database_url).get_backend_name() == "sqlite":
        path = Path(str(make_url(database_url).database))
        raw = b"".join(candidate.read_bytes() for candidate in path.parent.glob(path.name + "*"))
    for value in values:
        for form in (value, base64.b64encode(value), value.hex().encode()):
            assert form not in stored
            assert form not in raw


# -- tenants -------------------------------------------------------------------------------------------------------


async def test_tenants_are_separate_namespaces(database: Database, backend: EnvelopeBackend, tenant: str) -> None:
    other = random_name("tenant")
    await ensure_tenant(database, other)
    mine, theirs = SecretRef(tenant, "github", "token"), SecretRef(other, "github", "token")
    await backend.put(mine, b"mine-" + canary())
    their_value = b"theirs-" + canary()
    await backend.put(theirs, their_value)
    await backend.put(SecretRef(other, "github", "only-theirs"), canary())

    assert (await backend.get(mine)).startswith(b"mine-")
    assert await backend.get(theirs) == their_value
    with pytest.raises(SecretNotFound):
        await backend.get(SecretRef(tenant, "github", "only-theirs"))
    assert [item.ref.name for item in await backend.list(tenant)] == ["token"]
    assert await VaultRepository(database, tenant).version("github", "only-theirs") is None
    assert await VaultRepository(database, tenant).versions("github", "only-theirs") == []
    assert await backend.delete(mine)
    assert await backend.get(theirs) == their_value


# -- KEK rotation (acceptance 1) -----------------------------------------------------------------------------------


async def populate(
    backend: EnvelopeBackend, tenants: list[str], per_tenant: int = 7
) -> dict[tuple[SecretRef, int], bytes]:
    values: dict[tuple[SecretRef, int], bytes] = {}
    for tenant_id in tenants:
        for index in range(per_tenant):
            ref = SecretRef(tenant_id, f"source-{index % 3}", f"secret-{index}")
            for _ in range(1 + index % 2):
                value = canary()
                version = await backend.put(ref, value)
                values[(ref, version.version)] = value
    return values


async def ciphertexts(database: Database, tenants: list[str]) -> dict[tuple[str, str, str, int], bytes]:
    async with database.connect() as connection:
        rows = await connection.execute(select(versions_table).where(versions_table.c.tenant_id.in_(tenants)))
        return {(row.tenant_id, row.source, row.name, row.version): bytes(row.ciphertext) for row in rows}


async def test_kek_rotation_keeps_every_secret_readable_and_never_touches_a_ciphertext(
    database: Database, kek: LocalKek, backend: EnvelopeBackend, tenant: str
) -> None:
    other = random_name("tenant")
    await ensure_tenant(database, other)
    tenants = [tenant, other]
    values = await populate(backend, tenants)
    before = await ciphertexts(database, tenants)

    new = LocalKek.generate()
    rotating = EnvelopeBackend(database, KekRing(new, [kek]))
    report = await rotating.rewrap(batch_size=4, tenants=tenants)
    assert report.complete
    assert report.rewrapped == len(values)
    assert report.kek_id == new.key_id

    only_new = EnvelopeBackend(database, KekRing(new))
    for (ref, version), value in values.items():
        assert await only_new.get(ref, version) == value
    for tenant_id in tenants:
        assert await VaultRepository(database, tenant_id).count_by_kek() == {
            new.key_id: sum(1 for ref, _ in values if ref.tenant == tenant_id)
        }
    # The values were never re-encrypted: only the wrapped data keys changed.
    assert await ciphertexts(database, tenants) == before
    with pytest.raises(SecretUnreadable, match="not configured"):
        await backend.get(next(iter(values))[0])
    # Idempotent: a second run finds nothing to do.
    assert (await rotating.rewrap(batch_size=4, tenants=tenants)).rewrapped == 0


class FailingKek:
    """Wraps like `inner` until `limit` wraps, then fails: a rotation interrupted half way."""

    def __init__(self, inner: LocalKek, limit: int) -> None:
        self._inner = inner
        self._left = limit
        self.key_id = inner.key_id

    async def wrap(self, data_key: bytes, associated_data: bytes) -> bytes:
        if self._left == 0:
            raise ConnectionError("the KMS went away")
        self._left -= 1
        return await self._inner.wrap(data_key, associated_data)

    async def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        return await self._inner.unwrap(wrapped, associated_data)


async def test_an_interrupted_kek_rotation_is_finished_by_running_it_again(
    database: Database, kek: LocalKek, backend: EnvelopeBackend, tenant: str
) -> None:
    values = await populate(backend, [tenant], per_tenant=9)
    new = LocalKek.generate()
    with pytest.raises(ConnectionError):
        await EnvelopeBackend(database, KekRing(FailingKek(new, 6), [kek])).rewrap(batch_size=3, tenants=[tenant])
    halfway = await VaultRepository(database, tenant).count_by_kek()
    assert halfway == {new.key_id: 6, kek.key_id: len(values) - 6}  # whole batches committed, the rest untouched
    during = EnvelopeBackend(database, KekRing(new, [kek]))
    for (ref, version), value in values.items():
        assert await during.get(ref, version) == value

    report = await during.rewrap(batch_size=3, tenants=[tenant])
    assert report.rewrapped == len(values) - 6
    only_new = EnvelopeBackend(database, KekRing(new))
    for (ref, version), value in values.items():
        assert await only_new.get(ref, version) == value


async def test_data_keys_under_an_unknown_kek_are_reported_and_the_rest_rotated(
    database: Database, kek: LocalKek, backend: EnvelopeBackend, tenant: str
) -> None:
    values = await populate(backend, [tenant], per_tenant=4)
    lost = LocalKek.generate()
    orphan = SecretRef(tenant, "orphan", "secret")
    await EnvelopeBackend(database, KekRing(lost)).put(orphan, canary())
    new = LocalKek.generate()
    report = await EnvelopeBackend(database, KekRing(new, [kek])).rewrap(batch_size=2, tenants=[tenant])
    assert not report.complete
    assert report.missing_keks == {lost.key_id: 1}
    assert report.rewrapped == len(values)
    assert await VaultRepository(database, tenant).count_by_kek() == {new.key_id: len(values), lost.key_id: 1}


# -- the service: records, health, rotation ------------------------------------------------------------------------


async def test_a_generated_api_key_rotates_to_a_new_version_and_keeps_the_old(vault: Vault, tenant: str) -> None:
    ref = SecretRef(tenant, "gateway", "service-account")
    await vault.store(ref, b"first-key", kind=CredentialKind.API_KEY, rotation=generated_rotation("cgw_"))
    version = await rotate(vault, ref, actor=OPERATOR)
    assert version.version == 2
    new_value = await vault.backend.get(ref)
    assert new_value.startswith(b"cgw_")
    assert len(new_value) >= 4 + 43  # 256 random bits, base64url
    assert await vault.backend.get(ref, 1) == b"first-key"
    plain = SecretRef(tenant, "github", "pat")
    await vault.store(plain, b"value", kind=CredentialKind.API_KEY)
    with pytest.raises(RotationNotSupported, match="rotate it at its source"):
        await rotate(vault, plain, actor=OPERATOR)


async def test_rotation_check_lists_credentials_past_or_near_their_age(
    database: Database, backend: EnvelopeBackend, audit: AuditLog, tenant: str
) -> None:
    now = [1_000_000_000.0]
    vault = Vault(database, backend, audit, clock=lambda: now[0])
    await vault.store(SecretRef(tenant, "s", "old-key"), b"v", kind=CredentialKind.API_KEY, owner="ops")
    await vault.store(SecretRef(tenant, "s", "custom"), b"v", kind=CredentialKind.API_KEY, max_age=10 * DAY)
    await vault.store(SecretRef(tenant, "s", "refresh"), b"v", kind=CredentialKind.REFRESH_TOKEN)
    now[0] += 5 * DAY
    await vault.store(SecretRef(tenant, "s", "fresh"), b"v", kind=CredentialKind.API_KEY)

    assert await rotation_check(vault, tenant, now[0]) == []
    later = now[0] + 76 * DAY  # old-key: 81 of 90 days (90%), custom: overdue, fresh: 76 days
    due = await rotation_check(vault, tenant, later)
    assert [(item.record.ref.name, item.overdue) for item in due] == [("custom", True), ("old-key", False)]
    assert due[1].record.owner == "ops"
    assert due[1].max_age == 90 * DAY
    much_later = later + 20 * DAY
    assert [(item.record.ref.name, item.overdue) for item in await rotation_check(vault, tenant, much_later)] == [
        ("custom", True),
        ("old-key", True),
        ("fresh", True),
    ]
    # A new value starts the age again.
    now[0] = much_later
    await vault.store(SecretRef(tenant, "s", "custom"), b"v2", kind=CredentialKind.API_KEY, max_age=10 * DAY)
    assert "custom" not in [item.record.ref.name for item in await rotation_check(vault, tenant, much_later)]


async def test_an_unhealthy_credential_asks_for_re_consent_until_a_new_value_is_stored(
    vault: Vault, tenant: str
) -> None:
    ref = SecretRef(tenant, "confluence", "refresh-token")
    await vault.store(ref, b"rt-1", kind=CredentialKind.REFRESH_TOKEN, bindings=["confluence"])
    assert await vault.mark_unhealthy(ref)
    with pytest.raises(CredentialUnhealthy, match=REAUTHORIZE):
        await vault.use(tenant, "confluence", None, "req-1", ref)
    record = await vault.record(ref)
    assert record is not None
    assert (record.health, record.health_reason) == ("unhealthy", REAUTHORIZE)
    await vault.store(ref, b"rt-2", kind=CredentialKind.REFRESH_TOKEN, bindings=["confluence"])
    assert await vault.use(tenant, "confluence", None, "req-2", ref) == b"rt-2"


async def test_removing_a_credential_removes_every_version_and_its_record(vault: Vault, tenant: str) -> None:
    ref = SecretRef(tenant, "github", "token")
    await vault.store(ref, b"one", kind=CredentialKind.API_KEY)
    await vault.store(ref, b"two", kind=CredentialKind.API_KEY)
    assert await vault.remove(ref)
    assert await vault.record(ref) is None
    assert await vault.backend.versions(ref) == []
    assert not await vault.remove(ref)


# -- a real PostgreSQL role's password -----------------------------------------------------------------------------


def scram_verifies(verifier: str, password: str) -> bool:
    """Whether `password` authenticates against a stored SCRAM-SHA-256 verifier: the server's own check
    (RFC 5802 §3: StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key")).
    Written here from the RFC, independently of the code under test."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    assert match, "not a SCRAM-SHA-256 verifier"
    iterations, salt, stored_key, server_key = (
        int(match[1]),
        base64.b64decode(match[2]),
        base64.b64decode(match[3]),
        base64.b64decode(match[4]),
    )
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key) and hmac.compare_digest(
        hmac.new(salted, b"Server Key", "sha256").digest(), server_key
    )


async def postgres_execute(sql: str, *arguments: Any) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        return await connection.fetchval(sql, *arguments)
    finally:
        await connection.close()


def role_url(role: str, password: str) -> str:
    url = make_url(POSTGRES_ADMIN_URL).set(username=role, password=password)
    return url.render_as_string(hide_password=False)


async def test_a_postgresql_role_password_is_rotated_for_real(
    database: Database, vault: Vault, audit: AuditLog, tenant: str
) -> None:
    require_postgres()
    import asyncpg

    role = f"vault rotation {secrets.token_hex(4)}"  # a space and mixed content: the name must be quoted
    quoted = '"' + role + '"'
    old_password = "old-" + secrets.token_hex(16)
    await postgres_execute(f"CREATE ROLE {quoted} LOGIN PASSWORD '{old_password}'")
    try:
        admin = SecretRef(tenant, "warehouse", "admin-url")
        await vault.store(admin, POSTGRES_ADMIN_URL.encode(), kind=CredentialKind.CONNECTION)
        ref = SecretRef(tenant, "warehouse", "app-password")
        await vault.store(
            ref,
            old_password.encode(),
            kind=CredentialKind.PASSWORD,
            bindings=["warehouse"],
            rotation=postgres_rotation(role, "admin-url"),
        )
        stored_before = await postgres_execute("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
        assert scram_verifies(stored_before, old_password)

        version = await rotate(vault, ref, actor=OPERATOR)
        assert version.version == 2
        new_password = (await vault.backend.get(ref)).decode()
        assert new_password != old_password
        assert len(new_password) >= 43

        stored_after = await postgres_execute("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
        assert scram_verifies(stored_after, new_password)
        assert not scram_verifies(stored_after, old_password)
        connection = await asyncpg.connect(role_url(role, new_password))
        assert await connection.fetchval("SELECT current_user") == role
        await connection.close()
        method = await postgres_execute(
            "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND '127.0.0.1' = ANY(ARRAY[address]) "
            "ORDER BY line_number LIMIT 1"
        )
        if method not in (None, "trust"):  # where the server checks passwords at all, the old one is refused
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(role_url(role, old_password))
        assert await vault.backend.get(ref, 1) == old_password.encode()  # kept for rollback until purged

        await audit.flush()
        events = await read_events(database, tenant, actions=[Action.CREDENTIAL_ROTATED, Action.CREDENTIAL_READ])
        texts = repr([event.public for event in events])
        assert new_password not in texts
        assert old_password not in texts
        stages = [event.public["details"].get("stage") for event in events if event.action == "credential.rotated"]
        assert stages == ["starting", "done"]
        reads = [event.public for event in events if event.action == "credential.read"]
        assert reads[-1]["target"] == str(admin)
        assert reads[-1]["details"]["purpose"] == f"rotation of {ref}"
    finally:
        await postgres_execute(f"DROP ROLE IF EXISTS {quoted}")


async def test_a_failed_postgresql_rotation_changes_nothing_and_says_why_without_secrets(
    vault: Vault, tenant: str
) -> None:
    require_postgres()
    missing_role = f"no_such_role_{secrets.token_hex(4)}"
    admin_password = "admin-" + secrets.token_hex(16)
    ref = SecretRef(tenant, "warehouse", "ghost-password")
    await vault.store(
        SecretRef(tenant, "warehouse", "admin"), POSTGRES_ADMIN_URL.encode(), kind=CredentialKind.CONNECTION
    )
    await vault.store(ref, b"current", kind=CredentialKind.PASSWORD, rotation=postgres_rotation(missing_role, "admin"))
    with pytest.raises(RotationFailed, match=f'role "{missing_role}" does not exist') as failed:
        await rotate(vault, ref, actor=OPERATOR)
    assert [version.version for version in await vault.backend.versions(ref)] == [1]
    assert await vault.backend.get(ref) == b"current"

    unreachable = f"postgresql://postgres:{admin_password}@127.0.0.1:9/test"
    await vault.store(SecretRef(tenant, "warehouse", "admin"), unreachable.encode(), kind=CredentialKind.CONNECTION)
    with pytest.raises(RotationFailed, match="cannot connect with the admin connection") as failed:
        await rotate(vault, ref, actor=OPERATOR)
    assert admin_password not in str(failed.value)
    await vault.store(
        SecretRef(tenant, "warehouse", "admin"), b"not a url " + admin_password.encode(), kind=CredentialKind.CONNECTION
    )
    with pytest.raises(RotationFailed, match="is not a postgresql:// URL") as failed:
        await rotate(vault, ref, actor=OPERATOR)
    assert admin_password not in str(failed.value)
    assert await vault.backend.get(ref) == b"current"
