"""Signed checkpoints: every so often, the size and root of a tenant's Merkle tree, signed with Ed25519.

A checkpoint also carries the previous checkpoint's signature, so checkpoints form their own chain: dropping or
replacing one is noticed. Anyone with the public key (`chamberlain audit public-key`) can check a checkpoint, and
an inclusion proof against it, without the database. A tombstone checkpoint is written when retention purges old
events' bodies: their hashes stay, so the chain and the tree still verify, and the tombstone vouches for them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from chamberlain.audit.merkle import TreeBuilder
from chamberlain.crypto.master_key import MasterKey
from chamberlain.store.database import Database
from chamberlain.store.schema import audit_checkpoints, audit_events, audit_signing_keys

logger = logging.getLogger(__name__)
CheckpointKind = Literal["regular", "tombstone"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    tenant: str
    number: int
    tree_size: int
    root_hash: bytes
    time: float
    kind: CheckpointKind
    purged_below: int | None
    prev_signature: bytes | None
    key_id: str
    signature: bytes

    def statement(self) -> bytes:
        """The bytes the signature covers (canonical JSON)."""
        return statement_bytes(
            {
                "tenant": self.tenant,
                "number": self.number,
                "tree_size": self.tree_size,
                "root_hash": self.root_hash.hex(),
                "time": self.time,
                "kind": self.kind,
                "purged_below": self.purged_below,
                "prev_signature": base64.b64encode(self.prev_signature).decode() if self.prev_signature else None,
                "key_id": self.key_id,
            }
        )

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.statement())
        document["signature"] = base64.b64encode(self.signature).decode()
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Checkpoint:
        prev = document["prev_signature"]
        return cls(
            tenant=document["tenant"],
            number=int(document["number"]),
            tree_size=int(document["tree_size"]),
            root_hash=bytes.fromhex(document["root_hash"]),
            time=float(document["time"]),
            kind=document["kind"],
            purged_below=document["purged_below"],
            prev_signature=base64.b64decode(prev) if prev else None,
            key_id=document["key_id"],
            signature=base64.b64decode(document["signature"]),
        )


def statement_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def signature_valid(checkpoint: Checkpoint, public_keys: dict[str, bytes]) -> bool:
    public = public_keys.get(checkpoint.key_id)
    if public is None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(checkpoint.signature, checkpoint.statement())
    except (InvalidSignature, ValueError):
        return False
    return True


class AuditSigner:
    """The Ed25519 key that signs checkpoints; made once per store, kept encrypted under the master key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._private_key.sign(data)

    @classmethod
    async def load_or_create(cls, database: Database, master_key: MasterKey) -> AuditSigner:
        async with database.begin() as connection:
            row = (
                await connection.execute(
                    select(audit_signing_keys).order_by(audit_signing_keys.c.created_at.desc()).limit(1)
                )
            ).first()
            if row is not None:
                raw = master_key.decrypt(row.private_key, _key_ad(row.key_id))
                return cls(Ed25519PrivateKey.from_private_bytes(raw))
            signer = cls(Ed25519PrivateKey.generate())
            raw = signer._private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            await connection.execute(
                insert(audit_signing_keys).values(
                    key_id=signer.key_id,
                    public_key=signer.public_key,
                    private_key=master_key.encrypt(raw, _key_ad(signer.key_id)),
                    created_at=time.time(),
                )
            )
            return signer


async def public_keys(database: Database) -> dict[str, bytes]:
    async with database.connect() as connection:
        rows = await connection.execute(select(audit_signing_keys.c.key_id, audit_signing_keys.c.public_key))
        return {row.key_id: row.public_key for row in rows}


async def load_checkpoints(database: Database, tenant: str) -> list[Checkpoint]:
    async with database.connect() as connection:
        rows = await connection.execute(
            select(audit_checkpoints)
            .where(audit_checkpoints.c.tenant_id == tenant)
            .order_by(audit_checkpoints.c.number)
        )
        return [_checkpoint(row._mapping) for row in rows]


class Checkpointer:
    """Signs checkpoints for tenants, keeping one incremental Merkle tree per tenant in memory."""

    def __init__(self, database: Database, signer: AuditSigner) -> None:
        self._database = database
        self._signer = signer
        self._trees: dict[str, TreeBuilder] = {}

    async def checkpoint(self, tenant: str) -> Checkpoint | None:
        """Signs the tenant's current tree. None when nothing changed since the last checkpoint, or when another
        process signed the same position first."""
        signed = await self.prepare(tenant, kind="regular")
        if signed is None:
            return None
        try:
            async with self._database.begin() as connection:
                await connection.execute(insert(audit_checkpoints).values(**checkpoint_row(signed)))
        except IntegrityError:
            return None
        return signed

    async def prepare(self, tenant: str, *, kind: CheckpointKind, purged_below: int | None = None) -> Checkpoint | None:
        """The next checkpoint of the tenant's current tree, signed but not stored (the caller stores it, possibly
        in a transaction of its own). None for a regular checkpoint when nothing changed."""
        tree = await self._caught_up(tenant)
        previous = await self._last(tenant)
        if kind == "regular" and (tree.size == 0 or (previous is not None and previous.tree_size == tree.size)):
            return None
        unsigned = Checkpoint(
            tenant=tenant,
            number=0 if previous is None else previous.number + 1,
            tree_size=tree.size,
            root_hash=tree.root(),
            time=time.time(),
            kind=kind,
            purged_below=purged_below,
            prev_signature=None if previous is None else previous.signature,
            key_id=self._signer.key_id,
            signature=b"",
        )
        return Checkpoint(**{**_fields(unsigned), "signature": self._signer.sign(unsigned.statement())})

    async def run_forever(self, interval: float, tenants: Any) -> None:
        """Checkpoints every tenant with events, every `interval` seconds. `tenants` is an async callable."""
        while True:
            await asyncio.sleep(interval)
            try:
                for tenant in await tenants():
                    await self.checkpoint(tenant)
            except Exception:  # the store may blip; the next round catches up
                logger.exception("could not write an audit checkpoint")

    async def _caught_up(self, tenant: str) -> TreeBuilder:
        tree = self._trees.setdefault(tenant, TreeBuilder())
        async with self._database.connect() as connection:
            rows = await connection.execute(
                select(audit_events.c.hash)
                .where(audit_events.c.tenant_id == tenant, audit_events.c.seq >= tree.size)
                .order_by(audit_events.c.seq)
            )
            for (record_hash,) in rows:
                tree.append(record_hash)  # a record's hash is its leaf hash (records.py)
        return tree

    async def _last(self, tenant: str) -> Checkpoint | None:
        async with self._database.connect() as connection:
            row = (
                await connection.execute(
                    select(audit_checkpoints)
                    .where(audit_checkpoints.c.tenant_id == tenant)
                    .order_by(audit_checkpoints.c.number.desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else _checkpoint(row._mapping)


def _fields(checkpoint: Checkpoint) -> dict[str, Any]:
    return {name: getattr(checkpoint, name) for name in Checkpoint.__slots__}


def checkpoint_row(checkpoint: Checkpoint) -> dict[str, Any]:
    fields = _fields(checkpoint)
    fields["tenant_id"] = fields.pop("tenant")
    return fields


def _checkpoint(row: Any) -> Checkpoint:
    fields = dict(row)
    fields["tenant"] = fields.pop("tenant_id")
    return Checkpoint(**fields)


def _key_ad(key_id: str) -> bytes:
    return b"audit-signing-key\x00" + key_id.encode()
