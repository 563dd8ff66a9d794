"""Verifying a tenant's audit log: the chain, the Merkle tree and the signed checkpoints, naming the first bad record.

What each tampering looks like here:
- a record's body changed: its hash no longer equals SHA-256(prev_hash || body);
- a record deleted, inserted or moved: a gap in seq, or a record that does not link to the one before;
- the tail truncated: a signed checkpoint covers more records than remain;
- another log spliced in: its first record links to another tenant's genesis or another chain;
- the whole chain rewritten consistently: the signed roots no longer match;
- a checkpoint replaced or dropped: its signature, or the chain of previous signatures, breaks.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from chamberlain.audit.checkpoints import Checkpoint, load_checkpoints, signature_valid
from chamberlain.audit.merkle import TreeBuilder, leaf_hash
from chamberlain.audit.records import genesis_hash
from chamberlain.store.database import Database, fetch_rows
from chamberlain.store.schema import audit_events

Row = tuple[int, bytes | None, bytes, bytes]  # seq, body (None once purged), prev_hash, hash
_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    seq: int | None = None  # the first bad record, where one can be named
    checkpoint: int | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    tenant: str
    records: int
    checkpoints: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_checkpoint_chain(
    tenant: str, checkpoints: list[Checkpoint], public_keys: dict[str, bytes]
) -> Problem | None:
    previous: Checkpoint | None = None
    for expected_number, checkpoint in enumerate(checkpoints):
        if checkpoint.number != expected_number or checkpoint.tenant != tenant:
            return Problem(f"checkpoint {expected_number} is missing or misplaced", checkpoint=expected_number)
        if not signature_valid(checkpoint, public_keys):
            return Problem(f"checkpoint {checkpoint.number} has no valid signature", checkpoint=checkpoint.number)
        if previous is not None:
            if checkpoint.prev_signature != previous.signature:
                return Problem(
                    f"checkpoint {checkpoint.number} does not link to checkpoint {previous.number}",
                    checkpoint=checkpoint.number,
                )
            if checkpoint.tree_size < previous.tree_size:
                return Problem(f"checkpoint {checkpoint.number} shrinks the tree", checkpoint=checkpoint.number)
        elif checkpoint.prev_signature is not None:
            return Problem("the first checkpoint links to a predecessor", checkpoint=checkpoint.number)
        previous = checkpoint
    return None


def verify_records(
    tenant: str, rows: Iterable[Row], checkpoints: list[Checkpoint], public_keys: dict[str, bytes]
) -> Verification:
    """Checks every record in seq order against the chain, then the tree against each signed checkpoint."""
    # A broken checkpoint chain spoils that checkpoint and every later one, not the records: check the records
    # against the checkpoints before the break, then name the first record that no valid checkpoint vouches for.
    chain_problem = verify_checkpoint_chain(tenant, checkpoints, public_keys)
    trusted = checkpoints if chain_problem is None else checkpoints[: chain_problem.checkpoint]
    at_size: dict[int, list[Checkpoint]] = {}
    for checkpoint in trusted:
        at_size.setdefault(checkpoint.tree_size, []).append(checkpoint)
    purged_below = max((c.purged_below or 0 for c in trusted if c.kind == "tombstone"), default=0)
    vouched = 0  # records covered by a checkpoint whose root matched
    expected_previous = genesis_hash(tenant)
    tree = TreeBuilder()
    sha256 = hashlib.sha256
    count = 0

    def failed(problem: Problem) -> Verification:
        return Verification(tenant, count, len(checkpoints), problem)

    for seq, body, previous, record in rows:
        if seq != count:
            return failed(Problem(f"record {count} is missing", seq=count))
        if previous != expected_previous:
            return failed(Problem(f"record {seq} does not link to the record before it", seq=seq))
        if body is None:
            if seq >= purged_below:
                return failed(Problem(f"record {seq} was emptied without a tombstone", seq=seq))
        elif sha256(previous + body).digest() != record:
            return failed(Problem(f"record {seq} was altered", seq=seq))
        tree.append(leaf_hash(record))
        expected_previous = record
        count += 1
        for checkpoint in at_size.get(count, ()):
            if tree.root() != checkpoint.root_hash:
                message = (
                    f"records {vouched}..{count - 1} do not match signed checkpoint {checkpoint.number}: "
                    f"the first record not vouched for is {vouched}"
                )
                return failed(Problem(message, seq=vouched, checkpoint=checkpoint.number))
            vouched = count
    for checkpoint in trusted:
        if checkpoint.tree_size > count:
            message = (
                f"the log ends after {count} records but checkpoint {checkpoint.number} vouches for "
                f"{checkpoint.tree_size}: records from {count} on were removed"
            )
            return failed(Problem(message, seq=count, checkpoint=checkpoint.number))
    if chain_problem is not None:
        unvouched = trusted[-1].tree_size if trusted else 0
        message = f"{chain_problem.message}: records from {unvouched} on are not vouched for by a valid checkpoint"
        return failed(Problem(message, seq=unvouched, checkpoint=chain_problem.checkpoint))
    return Verification(tenant, count, len(checkpoints), None)


async def verify_tenant(database: Database, tenant: str, public_keys: dict[str, bytes]) -> Verification:
    checkpoints = await load_checkpoints(database, tenant)
    rows = [row async for row in stored_rows(database, tenant)]
    return verify_records(tenant, rows, checkpoints, public_keys)


_READ_CHUNK = (
    f"SELECT seq, body, prev_hash, hash FROM {audit_events.name} "  # noqa: S608 - the schema's own names
    "WHERE tenant_id = ? AND seq >= ? ORDER BY seq LIMIT ?"
)


async def stored_rows(database: Database, tenant: str) -> AsyncIterator[Row]:
    """The tenant's records in seq order, read in chunks with the bare driver (SQLAlchemy rows cost more to build
    than verifying them) so that a long log does not sit in memory at once."""
    next_seq = 0
    while True:
        async with database.connect() as connection:
            chunk = await fetch_rows(connection, _READ_CHUNK, (tenant, next_seq, _CHUNK))
        for row in chunk:
            yield row
        if len(chunk) < _CHUNK:
            return
        next_seq = chunk[-1][0] + 1
