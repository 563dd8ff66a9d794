"""The vault's tables: encrypted secret versions and credential records, for one tenant.

The repository only moves bytes: encryption is vault/envelope.py's, access rules vault/service.py's. Every query
filters on the tenant the repository was built for, so no method can reach another tenant's rows whatever the
source and name it is given. `tenants_with_secrets` alone spans tenants: KEK rotation is the platform's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import RowMapping, and_, delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from chamberlain.store.database import Database
from chamberlain.store.locks import lock_for_transaction
from chamberlain.store.schema import vault_credentials, vault_secret_versions
from chamberlain.vault.backend import SecretRef, VaultError
from chamberlain.vault.settings import CredentialKind

Health = Literal["ok", "unhealthy"]
_versions = vault_secret_versions
_credentials = vault_credentials


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version's row as stored: ciphertext and wrapped data key (never a plaintext)."""

    source: str
    name: str
    version: int
    ciphertext: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)
    kek_id: str
    details: Mapping[str, str]
    created_at: float


@dataclass(frozen=True, slots=True)
class VersionInfo:
    source: str
    name: str
    version: int
    details: Mapping[str, str]
    created_at: float


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key to rewrap: where it is, which KEK wrapped it, and the wrapped bytes (no ciphertext)."""

    source: str
    name: str
    version: int
    kek_id: str
    wrapped_key: bytes = field(repr=False)

    @property
    def position(self) -> tuple[str, str, int]:
        return (self.source, self.name, self.version)


@dataclass(frozen=True, slots=True)
class RewrappedKey:
    source: str
    name: str
    version: int
    old_kek_id: str
    wrapped_key: bytes = field(repr=False)
    kek_id: str


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """What governs a secret's use; never its value."""

    ref: SecretRef
    kind: CredentialKind
    owner: str | None
    bindings: tuple[str, ...]  # server names of the tenant that may use it; empty: none may
    user_id: str | None  # a per-user credential: usable only on this user's requests
    max_age: float | None  # seconds; None: the kind's default
    rotation: Mapping[str, str] | None  # how `vault rotate` renews it ({"method": ...}); None: it cannot
    health: Health
    health_reason: str | None
    created_at: float
    rotated_at: float


class VaultRepository:
    def __init__(self, database: Database, tenant_id: str) -> None:
        self._database = database
        self._tenant_id = tenant_id

    @property
    def tenant_id(self) -> str:
        return self._tenant_id

    # -- secret versions -----------------------------------------------------------------------------------------

    async def latest_version_number(self, source: str, name: str) -> int:
        """The newest version's number; 0 when the secret has none."""
        async with self._database.connect() as connection:
            newest = await connection.scalar(select(func.max(_versions.c.version)).where(self._secret(source, name)))
        return int(newest or 0)

    async def insert_next_version(
        self, source: str, name: str, build: Callable[[int], Awaitable[StoredVersion]]
    ) -> StoredVersion | None:
        """Inserts `build(n)` as version n, the next number, in one transaction: the number is part of what is
        encrypted (its associated data), so it must be known before encrypting. Writers of the same secret are
        serialised (PostgreSQL: a transaction-scoped advisory lock on the secret; SQLite: the database's write
        lock). None when another process took the number anyway (SQLite's lock is taken at the first write): the
        caller tries again."""
        try:
            async with self._database.begin() as connection:
                await lock_for_transaction(
                    self._database, connection, "chamberlain.vault", self._tenant_id, source, name
                )
                newest = await connection.scalar(
                    select(func.max(_versions.c.version)).where(self._secret(source, name))
                )
                row = await build(int(newest or 0) + 1)
                await connection.execute(
                    _versions.insert().values(
                        tenant_id=self._tenant_id,
                        source=row.source,
                        name=row.name,
                        version=row.version,
                        ciphertext=row.ciphertext,
                        wrapped_key=row.wrapped_key,
                        kek_id=row.kek_id,
                        details=dict(row.details),
                        created_at=row.created_at,
                    )
                )
        except IntegrityError:
            if await self.latest_version_number(source, name) > 0:
                return None
            # Not a lost race: the only other constraint is the tenant's foreign key.
            raise VaultError(f"cannot store a secret in tenant {self._tenant_id!r}: there is no such tenant") from None
        return row

    async def version(self, source: str, name: str, version: int | None = None) -> StoredVersion | None:
        """The given version, or the newest."""
        query = select(_versions).where(self._secret(source, name))
        query = (
            query.where(_versions.c.version == version)
            if version is not None
            else query.order_by(_versions.c.version.desc()).limit(1)
        )
        async with self._database.connect() as connection:
            row = (await connection.execute(query)).mappings().first()
        return _stored_version(row) if row is not None else None

    async def versions(self, source: str, name: str) -> list[VersionInfo]:
        """Every version kept, oldest first (no ciphertext read)."""
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(_versions.c.source, _versions.c.name, _versions.c.version, _versions.c.details)
                .add_columns(_versions.c.created_at)
                .where(self._secret(source, name))
                .order_by(_versions.c.version)
            )
            return [_version_info(row) for row in rows.mappings()]

    async def latest_versions(self, source: str | None = None) -> list[VersionInfo]:
        """The newest version of every secret of the tenant (or of one source), ordered by source and name."""
        newest = (
            select(_versions.c.source, _versions.c.name, func.max(_versions.c.version).label("version"))
            .where(_versions.c.tenant_id == self._tenant_id)
            .group_by(_versions.c.source, _versions.c.name)
        )
        if source is not None:
            newest = newest.where(_versions.c.source == source)
        latest = newest.subquery()
        query = (
            select(_versions.c.source, _versions.c.name, _versions.c.version, _versions.c.details)
            .add_columns(_versions.c.created_at)
            .join(
                latest,
                and_(
                    _versions.c.source == latest.c.source,
                    _versions.c.name == latest.c.name,
                    _versions.c.version == latest.c.version,
                ),
            )
            .where(_versions.c.tenant_id == self._tenant_id)
            .order_by(_versions.c.source, _versions.c.name)
        )
        async with self._database.connect() as connection:
            return [_version_info(row) for row in (await connection.execute(query)).mappings()]

    async def delete_versions(self, source: str, name: str) -> int:
        async with self._database.begin() as connection:
            result = await connection.execute(delete(_versions).where(self._secret(source, name)))
            return int(result.rowcount)

    async def purge_versions(self, source: str, name: str, keep: int) -> int:
        """Deletes all but the newest `keep` versions; how many went."""
        async with self._database.begin() as connection:
            kept = await connection.execute(
                select(_versions.c.version)
                .where(self._secret(source, name))
                .order_by(_versions.c.version.desc())
                .offset(keep)
                .limit(1)
            )
            newest_dropped = kept.scalar()
            if newest_dropped is None:
                return 0
            result = await connection.execute(
                delete(_versions).where(self._secret(source, name), _versions.c.version <= newest_dropped)
            )
            return int(result.rowcount)

    # -- KEK rotation --------------------------------------------------------------------------------------------

    async def wrapped_keys_not_under(
        self, kek_id: str, *, after: tuple[str, str, int] | None, limit: int
    ) -> list[WrappedKey]:
        """Data keys not wrapped by `kek_id`, in key order after `after`: a rotation walks them in batches and
        always advances, even past rows it cannot rewrap."""
        query = (
            select(_versions.c.source, _versions.c.name, _versions.c.version, _versions.c.kek_id)
            .add_columns(_versions.c.wrapped_key)
            .where(_versions.c.tenant_id == self._tenant_id, _versions.c.kek_id != kek_id)
            .order_by(_versions.c.source, _versions.c.name, _versions.c.version)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(_versions.c.source, _versions.c.name, _versions.c.version) > tuple_(*after))
        async with self._database.connect() as connection:
            rows = (await connection.execute(query)).mappings()
            return [
                WrappedKey(row["source"], row["name"], row["version"], row["kek_id"], row["wrapped_key"])
                for row in rows
            ]

    async def replace_wrapped_keys(self, keys: Sequence[RewrappedKey]) -> int:
        """Stores rewrapped data keys in one transaction. Each update applies only while the row still holds the
        data key it was read with (same KEK), so a concurrent rotation or a deleted version is simply skipped."""
        if not keys:
            return 0
        done = 0
        async with self._database.begin() as connection:
            for key in keys:
                result = await connection.execute(
                    update(_versions)
                    .where(
                        self._secret(key.source, key.name),
                        _versions.c.version == key.version,
                        _versions.c.kek_id == key.old_kek_id,
                    )
                    .values(wrapped_key=key.wrapped_key, kek_id=key.kek_id)
                )
                done += int(result.rowcount)
        return done

    async def count_by_kek(self) -> dict[str, int]:
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(_versions.c.kek_id, func.count().label("count"))
                .where(_versions.c.tenant_id == self._tenant_id)
                .group_by(_versions.c.kek_id)
            )
            return {str(row["kek_id"]): int(row["count"]) for row in rows.mappings()}

    # -- credential records --------------------------------------------------------------------------------------

    async def credential(self, source: str, name: str) -> CredentialRecord | None:
        async with self._database.connect() as connection:
            row = (
                (
                    await connection.execute(
                        select(_credentials).where(
                            _credentials.c.tenant_id == self._tenant_id,
                            _credentials.c.source == source,
                            _credentials.c.name == name,
                        )
                    )
                )
                .mappings()
                .first()
            )
        return _credential(row) if row is not None else None

    async def credentials(self, source: str | None = None) -> list[CredentialRecord]:
        query = select(_credentials).where(_credentials.c.tenant_id == self._tenant_id)
        if source is not None:
            query = query.where(_credentials.c.source == source)
        async with self._database.connect() as connection:
            rows = await connection.execute(query.order_by(_credentials.c.source, _credentials.c.name))
            return [_credential(row) for row in rows.mappings()]

    async def save_credential(self, record: CredentialRecord) -> None:
        """Creates or replaces the record (portable upsert: update, else insert; a racing insert retries)."""
        if record.ref.tenant != self._tenant_id:
            raise ValueError(f"credential {record.ref} is not of tenant {self._tenant_id!r}")
        values: dict[str, Any] = {
            "kind": str(record.kind),
            "owner": record.owner,
            "bindings": list(record.bindings),
            "user_id": record.user_id,
            "max_age": record.max_age,
            "rotation": dict(record.rotation) if record.rotation is not None else None,
            "health": record.health,
            "health_reason": record.health_reason,
            "created_at": record.created_at,
            "rotated_at": record.rotated_at,
        }
        where = self._credential_where(record.ref.source, record.ref.name)
        for attempt in range(2):
            try:
                async with self._database.begin() as connection:
                    updated = await connection.execute(update(_credentials).where(*where).values(**values))
                    if updated.rowcount == 0:
                        await connection.execute(
                            _credentials.insert().values(
                                tenant_id=self._tenant_id, source=record.ref.source, name=record.ref.name, **values
                            )
                        )
                return
            except IntegrityError:
                if attempt == 1 or await self.credential(record.ref.source, record.ref.name) is None:
                    raise

    async def delete_credential(self, source: str, name: str) -> bool:
        async with self._database.begin() as connection:
            result = await connection.execute(delete(_credentials).where(*self._credential_where(source, name)))
            return int(result.rowcount) > 0

    async def set_health(self, source: str, name: str, health: Health, reason: str | None) -> bool:
        async with self._database.begin() as connection:
            result = await connection.execute(
                update(_credentials)
                .where(*self._credential_where(source, name))
                .values(health=health, health_reason=reason)
            )
            return int(result.rowcount) > 0

    async def set_rotated(self, source: str, name: str, at: float) -> bool:
        """A new value is in place: the age starts again and the credential is healthy."""
        async with self._database.begin() as connection:
            result = await connection.execute(
                update(_credentials)
                .where(*self._credential_where(source, name))
                .values(rotated_at=at, health="ok", health_reason=None)
            )
            return int(result.rowcount) > 0

    # -- helpers -------------------------------------------------------------------------------------------------

    def _secret(self, source: str, name: str) -> Any:
        return and_(_versions.c.tenant_id == self._tenant_id, _versions.c.source == source, _versions.c.name == name)

    def _credential_where(self, source: str, name: str) -> tuple[Any, ...]:
        return (
            _credentials.c.tenant_id == self._tenant_id,
            _credentials.c.source == source,
            _credentials.c.name == name,
        )


async def tenants_with_secrets(database: Database) -> list[str]:
    """Every tenant holding a secret version (KEK rotation is the platform's: it spans tenants)."""
    async with database.connect() as connection:
        rows = await connection.execute(select(_versions.c.tenant_id).distinct().order_by(_versions.c.tenant_id))
        return [str(tenant) for tenant in rows.scalars()]


def _stored_version(row: RowMapping) -> StoredVersion:
    return StoredVersion(
        source=row["source"],
        name=row["name"],
        version=int(row["version"]),
        ciphertext=bytes(row["ciphertext"]),
        wrapped_key=bytes(row["wrapped_key"]),
        kek_id=row["kek_id"],
        details=dict(row["details"] or {}),
        created_at=float(row["created_at"]),
    )


def _version_info(row: RowMapping) -> VersionInfo:
    return VersionInfo(
        source=row["source"],
        name=row["name"],
        version=int(row["version"]),
        details=dict(row["details"] or {}),
        created_at=float(row["created_at"]),
    )


def _credential(row: RowMapping) -> CredentialRecord:
    return CredentialRecord(
        ref=SecretRef(row["tenant_id"], row["source"], row["name"]),
        kind=CredentialKind(row["kind"]),
        owner=row["owner"],
        bindings=tuple(row["bindings"] or ()),
        user_id=row["user_id"],
        max_age=row["max_age"],
        rotation=dict(row["rotation"]) if row["rotation"] is not None else None,
        health="unhealthy" if row["health"] == "unhealthy" else "ok",
        health_reason=row["health_reason"],
        created_at=float(row["created_at"]),
        rotated_at=float(row["rotated_at"]),
    )
