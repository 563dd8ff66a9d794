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

import asyncio
import dataclasses
import hashlib
import itertools
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from sqlalchemy import func, select

from chamberlain.audit.checkpoints import Checkpoint, load_checkpoints, signature_valid
from chamberlain.audit.merkle import TreeBuilder, frontier_root, root
from chamberlain.audit.records import genesis_hash
from chamberlain.store.database import Database, RawReader, fetch_rows, open_raw_reader
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


@dataclass(frozen=True, slots=True)
class Segment:
    """The chain checked over a run of consecutive records: what the tree needs, and the first problem in it."""

    start: int
    first_seq: int | None  # the seq of the run's first record (None: the run is empty)
    first_previous: bytes | None  # the prev_hash of the run's first record
    last_hash: bytes | None
    leaves: list[bytes]  # RFC 6962 leaf hashes of the records before the first problem
    problem: Problem | None


def check_chain(rows: Iterable[Row], start: int, previous: bytes | None, purged_below: int) -> Segment:
    """Checks records numbered from `start`: no gaps, each linked to the one before, each body matching its hash
    (an emptied body only below a tombstone). With `previous` None the first link is left to the caller, which
    knows the record before the run (runs are checked in parallel)."""
    sha256 = hashlib.sha256  # record hashes are RFC 6962 leaf hashes: SHA-256(0x00 || prev_hash || body)
    leaves: list[bytes] = []
    append = leaves.append
    expected = start
    first_seq: int | None = None
    first_previous: bytes | None = None
    last = previous
    for seq, body, linked, record in rows:
        if first_seq is None:
            first_seq, first_previous = seq, linked
        problem = None
        if seq != expected:
            problem = Problem(f"record {expected} is missing", seq=expected)
        elif last is not None and linked != last:
            problem = Problem(f"record {seq} does not link to the record before it", seq=seq)
        elif body is None:
            if seq >= purged_below:
                problem = Problem(f"record {seq} was emptied without a tombstone", seq=seq)
        else:
            try:
                altered = sha256(b"\x00" + linked + body).digest() != record
            except TypeError:  # a column turned into text or a number: altered too
                altered = True
            if altered:
                problem = Problem(f"record {seq} was altered", seq=seq)
        if problem is not None:
            return Segment(start, first_seq, first_previous, last, leaves, problem)
        append(record)  # a record's hash is its leaf hash (records.py)
        last = record
        expected += 1
    return Segment(start, first_seq, first_previous, last, leaves, None)


def verify_records(
    tenant: str, rows: Iterable[Row], checkpoints: list[Checkpoint], public_keys: dict[str, bytes]
) -> Verification:
    """Checks every record in seq order against the chain, then the tree against each signed checkpoint."""
    trusted, chain_problem = _trusted_checkpoints(tenant, checkpoints, public_keys)
    segment = check_chain(rows, 0, genesis_hash(tenant), _purged_below(trusted))
    return _verify_tree(
        tenant,
        len(segment.leaves),
        _incremental_roots(segment.leaves),
        segment.problem,
        checkpoints,
        trusted,
        chain_problem,
    )


def _trusted_checkpoints(
    tenant: str, checkpoints: list[Checkpoint], public_keys: dict[str, bytes]
) -> tuple[list[Checkpoint], Problem | None]:
    # A broken checkpoint chain spoils that checkpoint and every later one, not the records: the records are checked
    # against the checkpoints before the break, and the first record no valid checkpoint vouches for is named.
    chain_problem = verify_checkpoint_chain(tenant, checkpoints, public_keys)
    trusted = checkpoints if chain_problem is None else checkpoints[: chain_problem.checkpoint]
    return trusted, chain_problem


def _purged_below(trusted: list[Checkpoint]) -> int:
    return max((c.purged_below or 0 for c in trusted if c.kind == "tombstone"), default=0)


def _incremental_roots(leaves: list[bytes]) -> Callable[[int], bytes]:
    """Tree heads of growing prefixes of `leaves` (asked for in ascending sizes)."""
    tree = TreeBuilder()

    def root_at(size: int) -> bytes:
        for leaf in leaves[tree.size : size]:
            tree.append(leaf)
        return tree.root()

    return root_at


def _verify_tree(
    tenant: str,
    count: int,
    root_at: Callable[[int], bytes],
    record_problem: Problem | None,
    checkpoints: list[Checkpoint],
    trusted: list[Checkpoint],
    chain_problem: Problem | None,
) -> Verification:
    """The tree over the records before the first bad one, against the trusted checkpoints, in record order: a
    checkpoint that covers only good records and does not match is the first problem."""
    at_size: dict[int, list[Checkpoint]] = {}
    for checkpoint in trusted:
        at_size.setdefault(checkpoint.tree_size, []).append(checkpoint)

    def failed(problem: Problem) -> Verification:
        return Verification(tenant, count, len(checkpoints), problem)

    vouched = 0  # records covered by a checkpoint whose root matched
    for size in sorted(size for size in at_size if size <= count):
        root = root_at(size)
        for checkpoint in at_size[size]:
            if root != checkpoint.root_hash:
                message = (
                    f"records {vouched}..{size - 1} do not match signed checkpoint {checkpoint.number}: "
                    f"the first record not vouched for is {vouched}"
                )
                return failed(Problem(message, seq=vouched, checkpoint=checkpoint.number))
        vouched = size
    if record_problem is not None:
        return failed(record_problem)
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


async def verify_tenant(
    database: Database, tenant: str, public_keys: dict[str, bytes], *, workers: int | None = None
) -> Verification:
    """Verifies a tenant's log in the store. A long log is checked in blocks by `workers` processes (default: one
    per CPU): hashing is CPU-bound and the GIL would serialise threads."""
    checkpoints = await load_checkpoints(database, tenant)
    workers = workers or os.cpu_count() or 1
    size = await _record_count(database, tenant)
    if workers < 2 or size < PARALLEL_FROM:
        return verify_records(tenant, [row async for row in stored_rows(database, tenant)], checkpoints, public_keys)
    trusted, chain_problem = _trusted_checkpoints(tenant, checkpoints, public_keys)
    sizes = sorted({checkpoint.tree_size for checkpoint in trusted})
    count, roots, problem = await _check_blocks(database, tenant, size, workers, _purged_below(trusted), sizes)
    return _verify_tree(tenant, count, roots.__getitem__, problem, checkpoints, trusted, chain_problem)


@dataclass(frozen=True, slots=True)
class _Block:
    """One block of records checked in a worker: its chain, and the tree pieces the parent needs."""

    segment: Segment  # its leaves dropped: the block's tree is summarised by the fields below
    count: int  # records before the block's first problem
    root: bytes | None  # the block's root when all its records are good
    frontiers: dict[int, tuple[bytes, ...]]  # checkpoint size -> the block's frontier up to it


async def _check_blocks(
    database: Database, tenant: str, size: int, workers: int, purged_below: int, sizes: list[int]
) -> tuple[int, dict[int, bytes], Problem | None]:
    """Checks the chain and builds the tree in blocks of BLOCK records (a power of two, so every full block is a
    complete subtree), in worker processes; then joins them in record order: the seams between blocks, and each
    checkpoint's tree head from the full blocks before it and the frontier inside its own block."""
    bounds = [*range(0, size, BLOCK), size]
    tasks = [(low, high, [s for s in sizes if low < s <= high]) for low, high in itertools.pairwise(bounds)]
    url = database.url.render_as_string(hide_password=False)
    loop = asyncio.get_running_loop()
    # fork: the workers start in milliseconds with everything already imported (spawn would re-import for a second).
    # Each worker takes every n-th block, so the work stays even, over one connection of its own.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        shares = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _blocks_in_worker, url, tenant, tasks[first::workers], purged_below)
                for first in range(workers)
            )
        )
    blocks = [shares[index % workers][index // workers] for index in range(len(tasks))]
    full = TreeBuilder()  # over the roots of the full blocks so far: each a complete subtree of BLOCK leaves
    roots: dict[int, bytes] = {}
    expected = genesis_hash(tenant)
    count = 0
    for block, high in zip(blocks, bounds[1:], strict=True):
        segment = block.segment
        # In record order, as one pass would meet them: a missing first record, then its link, then the rest.
        if segment.first_seq is not None and segment.first_seq != segment.start:
            return count, roots, segment.problem
        if segment.first_previous is not None and segment.first_previous != expected:
            return count, roots, Problem(f"record {count} does not link to the record before it", seq=count)
        for checkpoint_size, frontier in block.frontiers.items():
            roots[checkpoint_size] = frontier_root(full.frontier + frontier)
        count += block.count
        if segment.problem is not None:
            return count, roots, segment.problem
        if count < high:  # the block's last records are missing
            return count, roots, Problem(f"record {count} is missing", seq=count)
        if block.root is not None and high - segment.start == BLOCK:
            full.append(block.root)
        expected = segment.last_hash or expected
    return count, roots, None


_BlockTask = tuple[int, int, list[int]]  # first record, end, checkpoint sizes inside


def _blocks_in_worker(url: str, tenant: str, tasks: list[_BlockTask], purged_below: int) -> list[_Block]:
    # The worker was forked from a running event loop; Python 3.12 clears the inherited loop itself, 3.11 does not.
    asyncio.events._set_running_loop(None)
    return asyncio.run(_read_and_check(url, tenant, tasks, purged_below))


async def _read_and_check(url: str, tenant: str, tasks: list[_BlockTask], purged_below: int) -> list[_Block]:
    reader = await open_raw_reader(url)
    try:
        return [await _check_block(reader, tenant, task, purged_below) for task in tasks]
    finally:
        await reader.close()


async def _check_block(reader: RawReader, tenant: str, task: _BlockTask, purged_below: int) -> _Block:
    low, high, sizes = task
    rows = await reader.fetch(_READ_RANGE, (tenant, low, high, high - low))
    segment = check_chain(rows, low, None, purged_below)
    leaves = segment.leaves
    frontiers: dict[int, tuple[bytes, ...]] = {}
    if sizes:  # checkpoints inside the block: grow the tree leaf by leaf to take its frontier at each
        tree = TreeBuilder()
        for checkpoint_size in sizes:
            for leaf in leaves[tree.size : checkpoint_size - low]:
                tree.append(leaf)
            if tree.size == checkpoint_size - low:
                frontiers[checkpoint_size] = tree.frontier
    complete = segment.problem is None and len(leaves) == high - low
    summary = dataclasses.replace(segment, leaves=[])  # the leaves stay here: only the tree's pieces travel back
    # A full block's root is built level by level: cheaper per node than growing it leaf by leaf.
    return _Block(summary, len(leaves), root(leaves) if complete else None, frontiers)


async def _record_count(database: Database, tenant: str) -> int:
    async with database.connect() as connection:
        highest = await connection.scalar(
            select(func.max(audit_events.c.seq)).where(audit_events.c.tenant_id == tenant)
        )
    return 0 if highest is None else int(highest) + 1


PARALLEL_FROM = 100_000  # records: below this, starting workers costs more than it saves
BLOCK = 1 << 14  # records per worker task: a power of two, so that every full block is a complete subtree
_READ_RANGE = (
    f"SELECT seq, body, prev_hash, hash FROM {audit_events.name} "  # noqa: S608 - the schema's own names
    "WHERE tenant_id = ? AND seq >= ? AND seq < ? ORDER BY seq LIMIT ?"
)
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
