"""How an event becomes a record in the chain: canonical bytes, and hashes that link each record to the one before.

record hash = SHA-256(previous record's hash || canonical body); the first record of a tenant links to a genesis
hash derived from the tenant's id, so two tenants' logs cannot be spliced together unnoticed. The record hashes
are also the leaves of the tenant's RFC 6962 Merkle tree (leaf index = seq).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS_PREFIX = b"chamberlain-audit-genesis\x00"
# Canonical JSON is orjson with sorted keys: compact, UTF-8, and six times faster than the json module, whose
# encoding was the writer's largest cost (bench/audit_bench.py).
_CANONICAL = orjson.OPT_SORT_KEYS


def genesis_hash(tenant: str) -> bytes:
    return hashlib.sha256(GENESIS_PREFIX + tenant.encode()).digest()


def record_hash(prev_hash: bytes, body: bytes) -> bytes:
    """The record's RFC 6962 leaf hash, SHA-256(0x00 || prev_hash || body): one hash both links the chain and is the
    record's leaf in the Merkle tree (a third fewer hashes to write and verify than a chain hash and a leaf hash)."""
    return hashlib.sha256(b"\x00" + prev_hash + body).digest()


def canonical_body(public: dict[str, Any], level: str, personal_ciphertext: bytes | None) -> bytes:
    """The bytes the chain covers: sorted keys, no spaces, UTF-8 (RFC 8785's shape for the values we use).
    `public` is the caller's to give away: it gains the level and personal keys."""
    document = public
    document["level"] = level
    document["personal"] = base64.b64encode(personal_ciphertext).decode() if personal_ciphertext else None
    return orjson.dumps(document, option=_CANONICAL)


def parse_body(body: bytes) -> tuple[dict[str, Any], str, bytes | None]:
    """The inverse of canonical_body: (public fields, level, personal ciphertext)."""
    document: dict[str, Any] = orjson.loads(body)
    level = document.pop("level")
    personal = document.pop("personal")
    return document, level, base64.b64decode(personal) if personal else None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    tenant: str
    seq: int
    event_id: str
    time: float
    action: str
    outcome: str
    classification: str
    subject: str | None
    level: str | None  # None once purged
    public: dict[str, Any]  # the event's public fields ({} once purged)
    personal: dict[str, str] | None  # None when shredded, purged, or not asked for
    prev_hash: bytes
    hash: bytes
    purged: bool
