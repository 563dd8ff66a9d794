"""Issue 7, acceptance 1: tampering with a real store, directly in SQL, is caught by `chamberlain audit verify`,
which names the first bad record; inclusion proofs check offline against the published key, on SQLite and
PostgreSQL.

Every tenant holds the same shape of log, 14 records with signed checkpoints over the first 4, 8 and 12 (records
12 and 13 are a tail no checkpoint covers yet), and each tampering gets a tenant of its own. "The first bad record"
is the first record whose own hash or whose link to its predecessor fails, or the first missing one; where a
consistent rewrite leaves every link intact, it is the first record no matching signed checkpoint vouches for
(a Merkle root cannot say which leaf changed); where a checkpoint itself is bad, the first record that no valid
checkpoint vouches for any more.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Table, delete, insert, select
from typer.testing import CliRunner, Result

from chamberlain.audit.checkpoints import AuditSigner, Checkpoint, checkpoint_row
from chamberlain.audit.proofs import check_proof_document
from chamberlain.audit.records import canonical_body, genesis_hash, record_hash
from chamberlain.cli.main import app
from chamberlain.store.database import Database
from chamberlain.store.schema import audit_checkpoints, audit_events
from tests.conftest import require_postgres
from tests.integration.test_audit_log import Store, one_line, sign_in
from tests.support.server import postgres_database

PHASES = (4, 4, 4, 2)  # records written before each checkpoint; no checkpoint after the last phase
RECORDS = sum(PHASES)
Rows = list[dict[str, Any]]
Apply = Callable[[Database, str, "Stores"], Awaitable[None]]


@dataclass(frozen=True)
class Stores:
    ours: Store
    other: Store  # another installation, with its own signing key, whose tenants have the same names


@dataclass(frozen=True)
class Tampering:
    name: str
    apply: Apply
    names: str  # how verify names the first bad record

    @property
    def tenant(self) -> str:
        return f"t-{self.name}"


# -- tampering, as someone with write access to the database (but not the master key) would --------------------------


async def rewrite(database: Database, table: Table, tenant: str, change: Callable[[Rows], Rows]) -> None:
    """Replaces the tenant's rows of `table` (in key order) by `change(rows)`, in one transaction."""
    async with database.begin() as connection:
        result = await connection.execute(
            select(table).where(table.c.tenant_id == tenant).order_by(*table.primary_key.columns)
        )
        rows = [dict(row._mapping) for row in result]
        await connection.execute(delete(table).where(table.c.tenant_id == tenant))
        changed = change(rows)
        if changed:
            await connection.execute(insert(table), changed)


async def rows_of(database: Database, tenant: str) -> Rows:
    async with database.connect() as connection:
        result = await connection.execute(
            select(audit_events).where(audit_events.c.tenant_id == tenant).order_by(audit_events.c.seq)
        )
        return [dict(row._mapping) for row in result]


def events(change: Callable[[Rows], Rows]) -> Apply:
    async def apply(database: Database, tenant: str, stores: Stores) -> None:
        await rewrite(database, audit_events, tenant, change)

    return apply


def checkpoints(change: Callable[[Rows], Rows]) -> Apply:
    async def apply(database: Database, tenant: str, stores: Stores) -> None:
        await rewrite(database, audit_checkpoints, tenant, change)

    return apply


def spliced(*, from_other_store: bool, start: int) -> Apply:
    """The tenant's records from `start` on replaced by another log's: another tenant's in this store (relabelled
    as this tenant's), or the same tenant's in another installation."""

    async def apply(database: Database, tenant: str, stores: Stores) -> None:
        if from_other_store:
            async with stores.other.database() as other:
                theirs = await rows_of(other, tenant)
        else:
            theirs = await rows_of(database, DONOR)
        # The copies need fresh ids in the event_id column, which is unique (the chain covers the body, not it).
        copies = [{**row, "tenant_id": tenant, "event_id": uuid.uuid4().hex} for row in theirs[start:]]
        await rewrite(database, audit_events, tenant, lambda ours: ours[:start] + copies)

    return apply


def changed(seq: int, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[Rows], Rows]:
    return lambda rows: [{**row, **change(row)} if row["seq"] == seq else row for row in rows]


def without(seq: int) -> Callable[[Rows], Rows]:
    return lambda rows: [row for row in rows if row["seq"] != seq]


def flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def failed(body: bytes) -> bytes:
    return body.replace(b'"outcome":"success"', b'"outcome":"failure"')


def renumbered(rows: Rows) -> Rows:
    return [{**row, "seq": seq} for seq, row in enumerate(rows)]


def rechained(rows: Rows, start: int) -> Rows:
    """Every link and hash from `start` on recomputed, so that the chain holds again."""
    result = rows[:start]
    previous = result[-1]["hash"] if result else genesis_hash(rows[0]["tenant_id"])
    for row in rows[start:]:
        result.append({**row, "prev_hash": previous, "hash": record_hash(previous, row["body"])})
        previous = result[-1]["hash"]
    return result


def forged(rows: Rows, position: int) -> Rows:
    """A record that never happened, inserted at `position` and linked to the record before it."""
    event = sign_in(rows[0]["tenant_id"], subject="forger")
    body = canonical_body(event.public_fields(), "detailed", None)
    previous = rows[position - 1]["hash"]
    row = {**rows[position], "event_id": event.id, "body": body, "prev_hash": previous}
    return renumbered([*rows[:position], {**row, "hash": record_hash(previous, body)}, *rows[position:]])


def swapped(first: int, second: int) -> Callable[[Rows], Rows]:
    def swap(rows: Rows) -> Rows:
        result = list(rows)
        result[first], result[second] = {**rows[second], "seq": first}, {**rows[first], "seq": second}
        return result

    return swap


def re_signed(number: int) -> Callable[[Rows], Rows]:
    """Checkpoint `number` signed again, unchanged, with a key that is not the store's."""

    def sign(row: dict[str, Any]) -> dict[str, Any]:
        fields = {name: row[name] for name in Checkpoint.__slots__ if name != "tenant"}
        unsigned = Checkpoint(**{**fields, "tenant": row["tenant_id"], "key_id": ATTACKER.key_id, "signature": b""})
        return checkpoint_row(replace(unsigned, signature=ATTACKER.sign(unsigned.statement())))

    return lambda rows: [sign(row) if row["number"] == number else row for row in rows]


ATTACKER = AuditSigner(Ed25519PrivateKey.generate())
DONOR = "donor"
UNTOUCHED = "untouched"
TAMPERINGS = [
    Tampering("body-changed", events(changed(5, lambda row: {"body": failed(row["body"])})), "record 5 was altered"),
    Tampering("hash-changed", events(changed(5, lambda row: {"hash": flip(row["hash"])})), "record 5 was altered"),
    Tampering(
        "link-changed", events(changed(5, lambda row: {"prev_hash": flip(row["prev_hash"])})), "record 5 does not link"
    ),
    # The altered record's own hash made to fit: the chain breaks at the next record's link to it.
    Tampering(
        "body-and-hash-changed",
        events(
            changed(
                5, lambda row: {"body": failed(row["body"]), "hash": record_hash(row["prev_hash"], failed(row["body"]))}
            )
        ),
        "record 6 does not link",
    ),
    Tampering("deleted", events(without(5)), "record 5 is missing"),
    Tampering("deleted-and-renumbered", events(lambda rows: renumbered(without(5)(rows))), "record 5 does not link"),
    # A forged record linked to its predecessor: the chain breaks at the next record, which does not link to it.
    Tampering("inserted", events(lambda rows: forged(rows, 5)), "record 6 does not link"),
    Tampering(
        "inserted-and-rechained",
        events(lambda rows: rechained(forged(rows, 5), 5)),
        "do not match signed checkpoint 1: the first record not vouched for is 4",
    ),
    Tampering("reordered", events(swapped(5, 6)), "record 5 does not link"),
    Tampering("tail-truncated", events(lambda rows: rows[:10]), "records from 10 on were removed"),
    Tampering("spliced-another-tenant", spliced(from_other_store=False, start=0), "record 0 does not link"),
    Tampering("spliced-another-store", spliced(from_other_store=True, start=7), "record 7 does not link"),
    Tampering(
        "replaced-by-another-store",
        spliced(from_other_store=True, start=0),
        "do not match signed checkpoint 0: the first record not vouched for is 0",
    ),
    Tampering(
        "checkpoint-re-signed",
        checkpoints(re_signed(1)),
        "checkpoint 1 has no valid signature: records from 4 on are not vouched for",
    ),
    Tampering(
        "checkpoint-root-changed",
        checkpoints(
            lambda rows: [{**row, "root_hash": flip(row["root_hash"])} if row["number"] == 1 else row for row in rows]
        ),
        "checkpoint 1 has no valid signature: records from 4 on are not vouched for",
    ),
    Tampering(
        "checkpoint-dropped",
        checkpoints(lambda rows: [row for row in rows if row["number"] != 1]),
        "checkpoint 1 is missing or misplaced: records from 4 on are not vouched for",
    ),
]
TENANTS = [UNTOUCHED, DONOR, *(tampering.tenant for tampering in TAMPERINGS)]


def with_logs(store: Store) -> Store:
    """Writes every tenant's log through the real writer, with `audit checkpoint` after each phase but the last."""
    for phase, records in enumerate(PHASES):
        store.write([sign_in(tenant, subject=f"user-{phase}") for _ in range(records) for tenant in TENANTS])
        if phase < len(PHASES) - 1:
            signed = store.cli("audit", "checkpoint")
            assert signed.exit_code == 0, signed.output
    return store


@pytest.fixture(scope="module")
def other_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return with_logs(Store.initialised(tmp_path_factory.mktemp("other-installation")))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stores(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, other_store: Store
) -> Iterator[Stores]:
    data_dir = tmp_path_factory.mktemp(f"audit-{request.param}")
    if request.param == "sqlite":
        yield Stores(with_logs(Store.initialised(data_dir)), other_store)
        return
    require_postgres()
    with postgres_database() as url:
        yield Stores(with_logs(Store.initialised(data_dir, url)), other_store)


def test_an_untouched_log_verifies(stores: Stores) -> None:
    verified = stores.ours.verify("--tenant", UNTOUCHED)
    assert verified.exit_code == 0, verified.output
    assert f"{UNTOUCHED}: ok ({RECORDS} records, 3 checkpoints)" in one_line(verified)


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=[tampering.name for tampering in TAMPERINGS])
def test_verify_names_the_first_bad_record(stores: Stores, tampering: Tampering) -> None:
    stores.ours.run(lambda database: tampering.apply(database, tampering.tenant, stores))
    verified = stores.ours.verify("--tenant", tampering.tenant)
    assert verified.exit_code == 1, verified.output
    assert f"{tampering.tenant}: FAILED" in one_line(verified)
    assert tampering.names in one_line(verified)
    assert "Traceback" not in verified.output


# -- inclusion proofs, checked without the database ----------------------------------------------------------------


def check_proof(proof: Path, public_key: str) -> Result:
    return CliRunner().invoke(app, ["audit", "check-proof", str(proof), "--public-key", public_key])


def published_key(store: Store) -> str:
    printed = re.search(r"ed25519 ([0-9a-f]{64})", store.cli("audit", "public-key").output)
    assert printed is not None
    return printed.group(1)


def meaning(document: Any) -> Any:
    """What a proof says, decoded: two documents that decode alike are the same proof (JSON spacing, base64
    padding bits and float digits beyond a double's precision carry nothing)."""
    try:
        return (
            document["event_id"],
            document["tenant"],
            int(document["seq"]),
            base64.b64decode(document["body"]),
            bytes.fromhex(document["prev_hash"]),
            bytes.fromhex(document["record_hash"]),
            [bytes.fromhex(node) for node in document["audit_path"]],
            Checkpoint.from_json(document["checkpoint"]),
            sorted(document),
            sorted(document["checkpoint"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def test_an_inclusion_proof_checks_offline_and_any_flipped_byte_breaks_it(stores: Stores, tmp_path: Path) -> None:
    store = stores.ours
    event = store.events(UNTOUCHED)[6]
    proof = tmp_path / "proof.json"
    written = store.cli("audit", "proof", event.event_id, "--output", str(proof))
    assert written.exit_code == 0, written.output
    key = published_key(store)

    checked = check_proof(proof, key)
    assert checked.exit_code == 0, checked.output
    assert f"valid: event {event.event_id} is record 6 of the signed log" in one_line(checked)

    another_key = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    against_another = check_proof(proof, another_key)
    assert against_another.exit_code == 1
    assert "signed with another key" in one_line(against_another)

    text = proof.read_bytes()
    original = meaning(json.loads(text))
    undetected = []
    for position in range(len(text)):
        tampered = text[:position] + bytes([text[position] ^ 1]) + text[position + 1 :]
        try:
            document = json.loads(tampered)
        except ValueError:
            continue  # not even JSON: check-proof refuses it
        if meaning(document) == original:
            continue
        if not isinstance(document, dict) or not check_proof_document(document, bytes.fromhex(key)):
            undetected.append(tampered[max(0, position - 20) : position + 20].decode(errors="replace"))
    assert not undetected, undetected[:3]

    # And through the command, once in each part of the proof.
    for field in ("body", "audit_path", "checkpoint", "event_id"):
        document = json.loads(text)
        document[field] = flipped_json_value(document[field])
        proof.write_text(json.dumps(document))
        assert check_proof(proof, key).exit_code == 1, field


def flipped_json_value(value: Any) -> Any:
    if isinstance(value, list):
        return [flipped_json_value(value[0]), *value[1:]]
    if isinstance(value, dict):
        return {**value, "root_hash": flipped_json_value(value["root_hash"])}
    return ("0" if value[0] != "0" else "1") + value[1:]


def test_no_proof_before_a_checkpoint_covers_the_event(stores: Stores) -> None:
    tail = stores.ours.events(UNTOUCHED)[-1]
    refused = stores.ours.cli("audit", "proof", tail.event_id)
    assert refused.exit_code == 1
    assert "no signed checkpoint covers this event yet" in one_line(refused)
