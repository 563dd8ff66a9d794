"""Backups of the whole store: one encrypted file, portable between SQLite and PostgreSQL.

The file is
    MAGIC || uint32 header length (big-endian) || header (JSON) || sealed segments
The header is readable without the key (format version, schema revision, when it was made, each table's columns
and row count, how the key is derived) and is bound as associated data to every segment, so altering it makes the
file fail authentication. The payload is JSON lines, one row each (`[table, [values...]]`, tables in foreign-key
order), with bytes as base64 and JSON columns as JSON: every column's kind is in the header, so a value comes back
with the type it had on whichever backend it is restored to.

The payload is sealed with AES-256-GCM in segments of SEGMENT_BYTES (the STREAM construction of Hoang, Reyhanitabar,
Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015, as age
and Tink use it): the nonce is the segment's number and a flag marking the last one, so segments cannot be
reordered, dropped or cut off at the end without failing authentication, and neither side holds the whole store in
memory (one GCM message is also capped at 2^31 bytes by the library). The key is fresh for every file (a random
salt), so counter nonces never repeat under one key. It is derived from the master key (HKDF, purpose "backup") or
from a passphrase (scrypt, RFC 7914), 64 bytes of which the second half is stored as a check value: a wrong key is
told apart from a damaged file.

Secrets that the store keeps encrypted (signing keys, TOTP seeds, server credentials, vault data keys) are copied
as stored: using them after a restore needs the master key (and vault KEK) they were encrypted under.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import hmac
import json
import os
import secrets
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, Literal

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    inspect,
    select,
    sql,
)
from sqlalchemy import Connection as SyncConnection
from sqlalchemy.types import TypeEngine

from chamberlain import __version__
from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import MIGRATIONS_DIR, Database, alembic_config

FORMAT_VERSION = 1
MAGIC = b"chamberlain-backup\n"
SEGMENT_BYTES = 1 << 20
_TAG_BYTES = 16
_MAX_HEADER_BYTES = 1 << 20
_SALT_BYTES = 32
_VERSION_TABLE = "alembic_version"
_BATCH = 1000
# scrypt's cost for new backups: 128 * N * r = 128 MiB of memory, about half a second. RFC 7914 §2 leaves the
# choice to the application; cryptography's documentation suggests N=2^14 for interactive logins, and a backup
# file, once taken, can be attacked offline for as long as it exists.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 17, 8, 1
_SCRYPT_MAX_MEMORY = 1 << 30  # what a file may ask of the reader: more is a damaged or hostile header
MIN_PASSPHRASE_CHARACTERS = 12

Kind = Literal["str", "int", "float", "bool", "bytes", "json"]
# How each kind goes into the payload and back, and which SQLAlchemy type writes it: isinstance order matters
# (a BigInteger is an Integer; nothing else overlaps).
_KINDS: tuple[tuple[Kind, type[TypeEngine[Any]]], ...] = (
    ("json", JSON),
    ("bool", Boolean),
    ("bytes", LargeBinary),
    ("float", Float),
    ("int", Integer),
    ("str", String),
)


class BackupError(Exception):
    """A backup cannot be written or restored; the message is one line for the operator."""


def _b64_in(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("not valid base64") from None


Base64 = Annotated[
    bytes, PlainValidator(_b64_in), PlainSerializer(lambda value: base64.b64encode(value).decode(), return_type=str)
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MasterKeyWrap(_Model):
    kind: Literal["master-key"] = "master-key"
    salt: Base64
    check: Base64


class PassphraseWrap(_Model):
    kind: Literal["passphrase"] = "passphrase"
    kdf: Literal["scrypt"] = "scrypt"
    n: int
    r: int
    p: int
    salt: Base64
    check: Base64


class TableSummary(_Model):
    name: str
    rows: int = Field(ge=0)
    columns: tuple[tuple[str, Kind], ...]


class BackupHeader(_Model):
    format: int
    revision: str  # the store's Alembic revision when the backup was made
    created_at: str  # ISO 8601, UTC
    chamberlain: str  # the version that made it
    tables: tuple[TableSummary, ...]
    key: MasterKeyWrap | PassphraseWrap = Field(discriminator="kind")

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)


@dataclass(frozen=True, slots=True)
class MasterKeySource:
    master_key: MasterKey


@dataclass(frozen=True, slots=True)
class PassphraseSource:
    passphrase: str


KeySource = MasterKeySource | PassphraseSource


@dataclass(frozen=True, slots=True)
class Restored:
    header: BackupHeader
    replaced: bool  # the store had rows, which the backup's replaced
    upgraded_to: str | None  # the revision the restored rows were migrated to, when the backup was older


# -- backup -----------------------------------------------------------------------------------------------------


async def dump(database: Database, path: Path, source: KeySource, *, force: bool = False) -> BackupHeader:
    """Writes every table of the store to `path` from one consistent snapshot. The file appears whole, mode 0600,
    or not at all; an existing file is refused unless `force`."""
    if isinstance(source, PassphraseSource) and len(source.passphrase) < MIN_PASSPHRASE_CHARACTERS:
        raise BackupError(f"the passphrase must be at least {MIN_PASSPHRASE_CHARACTERS} characters")

    def work(sync: SyncConnection) -> BackupHeader:
        _begin_snapshot(sync)
        revision = MigrationContext.configure(sync).get_current_revision()
        if revision is None:
            raise BackupError("the store is not initialised: there is nothing to back up")
        reflected = MetaData()
        reflected.reflect(sync)
        tables = [table for table in reflected.sorted_tables if table.name != _VERSION_TABLE]
        summaries = tuple(
            TableSummary(
                name=table.name,
                rows=sync.scalar(select(func.count()).select_from(table)) or 0,
                columns=tuple((column.name, _kind_of(table, column)) for column in table.columns),
            )
            for table in tables
        )
        wrap, key = _new_key(source)
        header = BackupHeader(
            format=FORMAT_VERSION,
            revision=revision,
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            chamberlain=__version__,
            tables=summaries,
            key=wrap,
        )
        prologue = _prologue(header.model_dump_json().encode())
        with _new_file(path, force) as handle:
            handle.write(prologue)
            sealer = _Sealer(handle, key, prologue)
            for table, summary in zip(tables, summaries, strict=True):
                kinds = [kind for _, kind in summary.columns]
                # In primary-key order, streamed (yield_per: a server-side cursor on PostgreSQL) so that a long
                # audit log never sits in memory whole.
                statement = select(table).order_by(*table.primary_key.columns).execution_options(yield_per=_BATCH)
                for partition in sync.execute(statement).partitions():
                    sealer.write(b"".join(_encode_row(table.name, row, kinds) for row in partition))
            sealer.close()
        return header

    return await database.run_sync(work)


def _begin_snapshot(sync: SyncConnection) -> None:
    """Every read that follows sees the store as of one moment, while writers carry on."""
    if sync.dialect.name == "postgresql":
        # PostgreSQL: a REPEATABLE READ transaction reads from the snapshot taken at its first statement
        # (https://www.postgresql.org/docs/current/transaction-iso.html#XACT-REPEATABLE-READ).
        sync.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    else:
        # SQLite: Python's sqlite3 begins transactions only before writes; an explicit one keeps the WAL read
        # snapshot of its first read until it ends (https://sqlite.org/wal.html#concurrency).
        sync.exec_driver_sql("BEGIN")


def _kind_of(table: Table, column: Column[Any]) -> Kind:
    for kind, generic in _KINDS:
        if isinstance(column.type, generic):
            return kind
    raise BackupError(f"column {table.name}.{column.name} has a type backups do not carry: {column.type}")


def _encode_row(table: str, row: Iterable[Any], kinds: list[Kind]) -> bytes:
    values = [
        base64.b64encode(value).decode() if kind == "bytes" and value is not None else value
        for value, kind in zip(row, kinds, strict=True)
    ]
    return json.dumps([table, values], separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@contextlib.contextmanager
def _new_file(path: Path, force: bool) -> Iterator[IO[bytes]]:
    """A file written beside `path` and renamed over it once complete, so a failed backup leaves nothing behind.
    Without `force` the name is claimed first (O_EXCL): an existing file is refused before any work is done."""
    if not force:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise BackupError(f"{path} already exists: pass --force to replace it") from None
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(descriptor, 0o600)  # exactly: a umask may only have narrowed it
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        if not force:
            path.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Makes the rename durable (fsync(2): syncing a file does not sync the directory entry that names it)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# -- restore ----------------------------------------------------------------------------------------------------


def read_header(path: Path) -> BackupHeader:
    """The header of a backup, checked for format but not yet authenticated (that needs the key)."""
    with path.open("rb") as handle:
        return _read_prologue(handle, path)[0]


async def restore(database: Database, path: Path, source: KeySource, *, force: bool = False) -> Restored:
    """Replaces every row of the store with the backup's, in one transaction, and migrates them when the backup
    is from an older schema. A store with rows is refused unless `force`; a backup from a newer schema always is."""
    with path.open("rb") as handle:
        header, prologue = _read_prologue(handle, path)
        key = _key_for(header, source)
        lineage = _known_revisions()
        if header.revision not in lineage:
            raise BackupError(
                f"the backup is at schema revision {header.revision}, newer than this Chamberlain knows "
                f"(its newest is {lineage[-1]}): restore it with the version that made it ({header.chamberlain})"
            )
        rows = _decoded_rows(_payload_lines(handle, key, prologue, path), header, path)

        def work(sync: SyncConnection) -> Restored:
            if sync.dialect.name == "sqlite":
                # One transaction for the schema changes as well: Python's sqlite3 would otherwise run DDL outside
                # one. IMMEDIATE takes the write lock now rather than failing to upgrade a read lock later.
                sync.exec_driver_sql("BEGIN IMMEDIATE")
            current = MigrationContext.configure(sync).get_current_revision()
            if current is not None and current not in lineage:
                raise BackupError(f"the store is at schema revision {current}, which this Chamberlain does not know")
            replaced = _empty_the_store(sync, force)
            config = alembic_config(sync)
            if current is None or lineage.index(current) < lineage.index(header.revision):
                command.upgrade(config, header.revision)
            elif current != header.revision:
                # Its rows are gone already: this only reshapes empty tables to the backup's schema.
                command.downgrade(config, header.revision)
            _insert(sync, header, rows, path)
            upgraded_to = None
            if header.revision != lineage[-1]:
                command.upgrade(config, "head")
                upgraded_to = lineage[-1]
            if sync.dialect.name == "postgresql":
                _advance_sequences(sync)
            return Restored(header, replaced, upgraded_to)

        return await database.run_sync(work)


def _known_revisions() -> list[str]:
    """This code's migrations, oldest first (they form one line)."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    return [revision.revision for revision in script.walk_revisions()][::-1]


def _read_prologue(handle: IO[bytes], path: Path) -> tuple[BackupHeader, bytes]:
    start = handle.read(len(MAGIC) + 4)
    if not start.startswith(MAGIC[: len(start)]) or not start:
        raise BackupError(f"{path} is not a Chamberlain backup")
    if len(start) < len(MAGIC) + 4:
        raise BackupError(f"{path} is truncated: it ends inside its header")
    (length,) = struct.unpack(">I", start[len(MAGIC) :])
    if length > _MAX_HEADER_BYTES:
        raise BackupError(f"{path} is corrupt: its header claims {length} bytes")
    raw = handle.read(length)
    if len(raw) < length:
        raise BackupError(f"{path} is truncated: it ends inside its header")
    try:
        document = json.loads(raw)
    except ValueError:
        raise BackupError(f"{path} is corrupt: its header is not JSON") from None
    version = document.get("format") if isinstance(document, dict) else None
    if version != FORMAT_VERSION:
        raise BackupError(
            f"{path} is in backup format {version!r}; this Chamberlain reads format {FORMAT_VERSION} "
            f"(made by Chamberlain {document.get('chamberlain', '?') if isinstance(document, dict) else '?'})"
        )
    try:
        header = BackupHeader.model_validate(document)
    except ValidationError as problem:
        where = ".".join(str(part) for part in problem.errors()[0]["loc"])
        raise BackupError(f"{path} is corrupt: its header is not valid at {where}") from None
    return header, start + raw


def _prologue(header: bytes) -> bytes:
    return MAGIC + struct.pack(">I", len(header)) + header


def _empty_the_store(sync: SyncConnection, force: bool) -> bool:
    """Deletes every row (refused without `force`); True when there were any."""
    reflected = MetaData()
    reflected.reflect(sync)
    tables = [table for table in reflected.sorted_tables if table.name != _VERSION_TABLE]
    occupied = [table.name for table in tables if sync.scalar(select(1).select_from(table).limit(1)) is not None]
    if not occupied:
        return False
    if not force:
        raise BackupError(
            f"the store is not empty (it has rows in {', '.join(occupied)}): restoring replaces every row; "
            "pass --force to do so"
        )
    for table in reversed(tables):  # children before the rows they reference
        sync.execute(table.delete())
    return True


def _insert(sync: SyncConnection, header: BackupHeader, rows: Iterator[tuple[str, dict[str, Any]]], path: Path) -> None:
    existing = inspect(sync)
    writers: dict[str, Table] = {}
    for summary in header.tables:
        names = {name for name, _ in summary.columns}
        if (
            not existing.has_table(summary.name)
            or {column["name"] for column in existing.get_columns(summary.name)} != names
        ):
            raise BackupError(
                f"{path}: table {summary.name} does not match schema revision {header.revision} of this Chamberlain"
            )
        writers[summary.name] = Table(
            summary.name, MetaData(), *(Column(name, _WRITE_TYPES[kind]) for name, kind in summary.columns)
        )
    batch: list[dict[str, Any]] = []
    table_name = ""
    for name, values in rows:
        if name != table_name or len(batch) >= _BATCH:
            if batch:
                sync.execute(writers[table_name].insert(), batch)
            batch, table_name = [], name
        batch.append(values)
    if batch:
        sync.execute(writers[table_name].insert(), batch)


# How a restored value is written: JSON None is SQL NULL (every nullable JSON column in the schema is so declared).
_WRITE_TYPES: dict[Kind, TypeEngine[Any]] = {
    "str": String(),
    "int": BigInteger(),
    "float": Float(),
    "bool": Boolean(),
    "bytes": LargeBinary(),
    "json": JSON(none_as_null=True),
}


def _decoded_rows(lines: Iterator[bytes], header: BackupHeader, path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The payload's rows as column -> value, checked against the header: every table in its order, each with the
    number of rows it announces. A mismatch here means a writer's bug or a forged file that still authenticates."""
    expected = iter(header.tables)
    summary: TableSummary | None = None
    seen = 0
    for line in lines:
        try:
            name, values = json.loads(line)
        except ValueError:
            raise _mismatch(path) from None
        if not isinstance(name, str) or not isinstance(values, list):
            raise _mismatch(path)
        while summary is None or (name != summary.name and seen == summary.rows):
            summary, seen = next(expected, None), 0
            if summary is None:
                raise _mismatch(path)
        if name != summary.name or seen == summary.rows or len(values) != len(summary.columns):
            raise _mismatch(path)
        seen += 1
        try:
            row = {column: _decode(value, kind) for (column, kind), value in zip(summary.columns, values, strict=True)}
        except (TypeError, ValueError):  # binascii.Error is a ValueError
            raise _mismatch(path) from None
        yield name, row
    if (summary is not None and seen != summary.rows) or any(rest.rows for rest in expected):
        raise _mismatch(path)


def _mismatch(path: Path) -> BackupError:
    return BackupError(f"{path} is corrupt: its rows do not match its header")


def _decode(value: Any, kind: Kind) -> Any:
    if value is None or kind == "json":
        return value
    if kind == "bytes":
        return base64.b64decode(value, validate=True)
    if kind == "float":
        return float(value)  # a whole number in JSON; the backend wants a float
    expected = {"str": str, "int": int, "bool": bool}[kind]
    if not isinstance(value, expected) or (kind == "int" and isinstance(value, bool)):
        raise TypeError(kind)
    return value


def _advance_sequences(sync: SyncConnection) -> None:
    """Rows were inserted with their ids, which does not move PostgreSQL's serial sequences: without this the
    next row would be given an id that is already taken."""
    inspector = inspect(sync)
    for name in inspector.get_table_names():
        for key in inspector.get_pk_constraint(name)["constrained_columns"]:
            sequence = sync.scalar(select(func.pg_get_serial_sequence(name, key)))
            if sequence is not None:
                highest = (
                    select(func.coalesce(func.max(sql.column(key)), 0)).select_from(sql.table(name)).scalar_subquery()
                )
                sync.execute(select(func.setval(sequence, highest.scalar_subquery() + 1, False)))


# -- keys and sealing -------------------------------------------------------------------------------------------


def _new_key(source: KeySource) -> tuple[MasterKeyWrap | PassphraseWrap, bytes]:
    salt = secrets.token_bytes(_SALT_BYTES)
    if isinstance(source, MasterKeySource):
        key, check = _split(_from_master_key(source.master_key, salt))
        return MasterKeyWrap(salt=salt, check=check), key
    key, check = _split(_from_passphrase(source.passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P))
    return PassphraseWrap(n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, salt=salt, check=check), key


def _key_for(header: BackupHeader, source: KeySource) -> bytes:
    wrap = header.key
    if isinstance(wrap, MasterKeyWrap):
        if not isinstance(source, MasterKeySource):
            raise BackupError("the backup was encrypted under a master key, not a passphrase: omit --passphrase-stdin")
        material = _from_master_key(source.master_key, wrap.salt)
    else:
        if not isinstance(source, PassphraseSource):
            raise BackupError("the backup was encrypted with a passphrase: pass --passphrase-stdin")
        if not _scrypt_cost_acceptable(wrap):
            raise BackupError("the backup's header asks for scrypt parameters out of range: it is corrupt")
        material = _from_passphrase(source.passphrase, wrap.salt, wrap.n, wrap.r, wrap.p)
    key, check = _split(material)
    if not hmac.compare_digest(check, wrap.check):
        raise BackupError("the backup cannot be decrypted with this key")
    return key


def _from_master_key(master_key: MasterKey, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=b"chamberlain backup v1").derive(
        master_key.derive("backup")
    )


def _from_passphrase(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.encode())


def _scrypt_cost_acceptable(wrap: PassphraseWrap) -> bool:
    # RFC 7914 §2: N a power of two greater than 1; memory is 128 * r * N bytes.
    power_of_two = wrap.n > 1 and wrap.n & (wrap.n - 1) == 0
    return power_of_two and 1 <= wrap.r <= 64 and 1 <= wrap.p <= 16 and 128 * wrap.r * wrap.n <= _SCRYPT_MAX_MEMORY


def _split(material: bytes) -> tuple[bytes, bytes]:
    """The encryption key, and a check value that reveals nothing of it (another half of the KDF's output)."""
    return material[:32], material[32:]


def _nonce(counter: int, last: bool) -> bytes:
    # 88-bit segment counter || 1-byte last-segment flag = GCM's 96-bit nonce.
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class _Sealer:
    """Buffers the payload and writes it as sealed segments; only the last segment may be short."""

    def __init__(self, handle: IO[bytes], key: bytes, associated_data: bytes) -> None:
        self._handle = handle
        self._aead = AESGCM(key)
        self._associated_data = associated_data
        self._buffer = bytearray()
        self._counter = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        # Strictly more than a segment: the last segment (sealed by close) must never be empty unless all is.
        while len(self._buffer) > SEGMENT_BYTES:
            self._seal(bytes(self._buffer[:SEGMENT_BYTES]), last=False)
            del self._buffer[:SEGMENT_BYTES]

    def close(self) -> None:
        self._seal(bytes(self._buffer), last=True)

    def _seal(self, chunk: bytes, *, last: bool) -> None:
        self._handle.write(self._aead.encrypt(_nonce(self._counter, last), chunk, self._associated_data))
        self._counter += 1


def _payload_lines(handle: IO[bytes], key: bytes, associated_data: bytes, path: Path) -> Iterator[bytes]:
    """The payload's lines, each segment authenticated before any of its bytes is used."""
    aead = AESGCM(key)
    pending = b""
    counter = 0
    sealed = handle.read(SEGMENT_BYTES + _TAG_BYTES)
    while True:
        following = handle.read(SEGMENT_BYTES + _TAG_BYTES)
        last = not following
        try:
            plain = aead.decrypt(_nonce(counter, last), sealed, associated_data)
        except InvalidTag:
            raise BackupError(f"{path} is truncated or was altered: it fails authentication") from None
        lines = (pending + plain).split(b"\n")
        pending = lines.pop()
        yield from lines
        if last:
            break
        sealed, counter = following, counter + 1
    if pending:
        raise BackupError(f"{path} is corrupt: its last row is incomplete")
