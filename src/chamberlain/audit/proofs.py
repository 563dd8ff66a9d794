"""Inclusion proofs: evidence that one event is in the log, checkable by anyone with the audit public key.

A proof carries the record (body and previous hash, so its hash can be recomputed), its RFC 6962 audit path, and a
signed checkpoint whose tree contains it. Checking needs no database: recompute the record hash, walk the path to
the checkpoint's root (RFC 9162 §2.1.3.2), and check the checkpoint's Ed25519 signature against a public key
obtained independently (never the one a proof might carry).
"""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select

from chamberlain.audit.checkpoints import Checkpoint, key_id_of, load_checkpoints, signature_valid
from chamberlain.audit.merkle import inclusion_proof, verify_inclusion
from chamberlain.audit.records import parse_body
from chamberlain.audit.records import record_hash as recompute_record_hash
from chamberlain.store.database import Database
from chamberlain.store.schema import audit_events


class ProofUnavailable(Exception):
    pass


async def inclusion_proof_document(database: Database, event_id: str) -> dict[str, Any]:
    async with database.connect() as connection:
        row = (await connection.execute(select(audit_events).where(audit_events.c.event_id == event_id))).first()
    if row is None:
        raise ProofUnavailable(f"no audit event has the id {event_id!r}")
    checkpoints = [c for c in await load_checkpoints(database, row.tenant_id) if c.tree_size > row.seq]
    if not checkpoints:
        raise ProofUnavailable("no signed checkpoint covers this event yet: run 'chamberlain audit checkpoint'")
    checkpoint = checkpoints[-1]
    async with database.connect() as connection:
        hashes = await connection.execute(
            select(audit_events.c.hash)
            .where(audit_events.c.tenant_id == row.tenant_id, audit_events.c.seq < checkpoint.tree_size)
            .order_by(audit_events.c.seq)
        )
        leaves = [record_hash for (record_hash,) in hashes]  # record hashes are the leaf hashes
    return {
        "event_id": event_id,
        "tenant": row.tenant_id,
        "seq": row.seq,
        "body": base64.b64encode(row.body).decode() if row.body is not None else None,
        "prev_hash": row.prev_hash.hex(),
        "record_hash": row.hash.hex(),
        "audit_path": [node.hex() for node in inclusion_proof(leaves, row.seq)],
        "checkpoint": checkpoint.to_json(),
    }


def check_proof_document(document: dict[str, Any], public_key: bytes) -> list[str]:
    """What is wrong with a proof (empty when it holds), checked against this public key only."""
    try:
        checkpoint = Checkpoint.from_json(document["checkpoint"])
        event_id = str(document["event_id"])
        seq = int(document["seq"])
        record = bytes.fromhex(document["record_hash"])
        previous = bytes.fromhex(document["prev_hash"])
        path = [bytes.fromhex(node) for node in document["audit_path"]]
        body = base64.b64decode(document["body"]) if document.get("body") else None
    except (KeyError, TypeError, ValueError):
        return ["the proof is malformed"]
    problems = []
    if checkpoint.key_id != key_id_of(public_key):
        problems.append("the checkpoint was signed with another key than the one given")
    elif not signature_valid(checkpoint, {checkpoint.key_id: public_key}):
        problems.append("the checkpoint's signature is not valid")
    # The event id and tenant the proof names are claims until the hashed body says so: without this check, a valid
    # proof for one event could be relabelled as a proof for another.
    if body is None:
        problems.append("the proof carries no record body (purged?), so it cannot show which event the record is")
    elif recompute_record_hash(previous, body) != record:
        problems.append("the record's body does not match its hash")
    elif _names(body) != (event_id, document.get("tenant")):
        problems.append("the record is not the event the proof names")
    if checkpoint.tenant != document.get("tenant"):
        problems.append("the checkpoint belongs to another tenant")
    if not verify_inclusion(record, seq, checkpoint.tree_size, path, checkpoint.root_hash):
        problems.append("the audit path does not lead to the checkpoint's root")
    return problems


def _names(body: bytes) -> tuple[object, object]:
    """The (event id, tenant) a record's body names."""
    try:
        public, _, _ = parse_body(body)
    except (ValueError, KeyError, TypeError, AttributeError):  # not a record body at all
        return None, None
    return public.get("id"), public.get("tenant")
