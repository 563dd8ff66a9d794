"""`verify_records` against every single mutation of a randomly generated valid log: each is detected, and the
reported seq is the first affected record, defined per mutation:

- a byte of record i's body, hash or prev_hash flipped: i (its own hash or its link no longer holds);
- record i deleted (not the last one): i (the first missing position);
- records i < j swapped: i (the record now at position i does not link to record i - 1);
- the log truncated at t, below a signed checkpoint: t (the first record removed);
- records from i on rewritten with a consistent chain: the first record that no signed checkpoint whose root still
  matches vouches for, i.e. the size of the last checkpoint not beyond i (a root cannot say which leaf changed);
- checkpoint k altered or dropped: the first record not vouched for by the valid checkpoints before k;
- a body emptied: its seq, unless a signed tombstone says records below `purged_below` may be empty.

What no single-store verification can catch (a tail cut off after the last checkpoint, or the last checkpoint
dropped with it) is not generated: that needs checkpoints published elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, given
from hypothesis import strategies as st

from chamberlain.audit.checkpoints import AuditSigner, Checkpoint, CheckpointKind
from chamberlain.audit.merkle import root
from chamberlain.audit.records import genesis_hash, record_hash
from chamberlain.audit.verify import Row, Verification, verify_records

TENANT = "acme"
SIGNER = AuditSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
KEYS = {SIGNER.key_id: SIGNER.public_key}


@dataclass(frozen=True)
class Log:
    rows: list[Row]
    checkpoints: list[Checkpoint]

    def verify(self) -> Verification:
        return verify_records(TENANT, self.rows, self.checkpoints, KEYS)

    @property
    def size(self) -> int:
        return len(self.rows)

    def vouched_below(self, position: int) -> int:
        """How many records the checkpoints not beyond `position` vouch for."""
        return max((c.tree_size for c in self.checkpoints if c.tree_size <= position), default=0)


def chained(bodies: list[bytes | None], hashes_from: list[bytes] | None = None) -> list[Row]:
    """Rows linked from the genesis; an empty (purged) body keeps the hash given in `hashes_from`."""
    rows: list[Row] = []
    previous = genesis_hash(TENANT)
    for seq, body in enumerate(bodies):
        current = record_hash(previous, body) if body is not None else (hashes_from or [])[seq]
        rows.append((seq, body, previous, current))
        previous = current
    return rows


def signed(
    rows: list[Row],
    sizes: list[int],
    *,
    kind: CheckpointKind = "regular",
    purged_below: int | None = None,
    after: Checkpoint | None = None,
) -> list[Checkpoint]:
    """A chain of checkpoints over the first `size` records for each size, continuing `after`."""
    checkpoints = []
    previous = after
    for size in sizes:
        unsigned = Checkpoint(
            tenant=TENANT,
            number=0 if previous is None else previous.number + 1,
            tree_size=size,
            root_hash=root([row[3] for row in rows[:size]]),  # record hashes are leaf hashes
            time=1_700_000_000.0 + size,
            kind=kind,
            purged_below=purged_below,
            prev_signature=None if previous is None else previous.signature,
            key_id=SIGNER.key_id,
            signature=b"",
        )
        previous = dataclasses.replace(unsigned, signature=SIGNER.sign(unsigned.statement()))
        checkpoints.append(previous)
    return checkpoints


def body_of(seq: int, payload: bytes) -> bytes:
    return b'{"seq":%d,"payload":"%s"}' % (seq, payload.hex().encode())


@st.composite
def logs(draw: st.DrawFn, min_size: int = 2, min_checkpoints: int = 0) -> Log:
    size = draw(st.integers(min_size, 40))
    payloads = draw(st.lists(st.binary(max_size=24), min_size=size, max_size=size))
    rows = chained([body_of(seq, payload) for seq, payload in enumerate(payloads)])
    sizes = sorted(draw(st.sets(st.integers(1, size), min_size=min_checkpoints)))
    return Log(rows, signed(rows, sizes))


def flipped(value: bytes, data: st.DataObject) -> bytes:
    position = data.draw(st.integers(0, len(value) - 1))
    bit = data.draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128]))
    return value[:position] + bytes([value[position] ^ bit]) + value[position + 1 :]


def problem_seq(result: Verification) -> int | None:
    assert not result.ok, "the mutation was not detected"
    assert result.problem is not None
    return result.problem.seq


@given(logs())
def test_an_untouched_log_verifies(log: Log) -> None:
    result = log.verify()
    assert result.ok, result.problem
    assert result.records == log.size


@given(logs(), st.data(), st.sampled_from(["body", "prev_hash", "hash"]))
def test_a_flipped_byte_in_a_body_or_hash_names_its_record(log: Log, data: st.DataObject, column: str) -> None:
    seq = data.draw(st.integers(0, log.size - 1))
    _, body, previous, current = log.rows[seq]
    assert body is not None
    if column == "body":
        body = flipped(body, data)
    elif column == "prev_hash":
        previous = flipped(previous, data)
    else:
        current = flipped(current, data)
    rows = [*log.rows[:seq], (seq, body, previous, current), *log.rows[seq + 1 :]]
    assert problem_seq(dataclasses.replace(log, rows=rows).verify()) == seq


@given(logs(), st.data())
def test_a_deleted_record_is_named(log: Log, data: st.DataObject) -> None:
    seq = data.draw(st.integers(0, log.size - 2))  # deleting the last record is truncating the tail: below
    rows = [row for row in log.rows if row[0] != seq]
    result = dataclasses.replace(log, rows=rows).verify()
    assert problem_seq(result) == seq
    assert result.problem is not None
    assert f"record {seq} is missing" in result.problem.message


@given(logs(), st.data())
def test_two_swapped_records_are_named_by_the_first_position(log: Log, data: st.DataObject) -> None:
    first = data.draw(st.integers(0, log.size - 2))
    second = data.draw(st.integers(first + 1, log.size - 1))
    rows = list(log.rows)
    rows[first] = (first, *log.rows[second][1:])
    rows[second] = (second, *log.rows[first][1:])
    assert problem_seq(dataclasses.replace(log, rows=rows).verify()) == first


@given(logs(min_checkpoints=1), st.data())
def test_a_tail_truncated_below_a_checkpoint_names_the_first_record_removed(log: Log, data: st.DataObject) -> None:
    vouched = log.checkpoints[-1].tree_size
    cut = data.draw(st.integers(0, vouched - 1))
    result = dataclasses.replace(log, rows=log.rows[:cut]).verify()
    assert problem_seq(result) == cut
    assert result.problem is not None
    assert f"records from {cut} on were removed" in result.problem.message


@given(logs(min_checkpoints=1), st.data())
def test_a_consistently_rewritten_chain_is_caught_by_the_first_checkpoint_over_it(
    log: Log, data: st.DataObject
) -> None:
    seq = data.draw(st.integers(0, log.checkpoints[-1].tree_size - 1))  # a checkpoint covers it
    bodies: list[bytes | None] = [row[1] for row in log.rows]
    bodies[seq] = body_of(seq, b"forged")
    result = dataclasses.replace(log, rows=chained(bodies)).verify()
    assert problem_seq(result) == log.vouched_below(seq)


@given(logs(min_checkpoints=1), st.data(), st.sampled_from(["root_hash", "signature", "tree_size", "drop"]))
def test_an_altered_or_dropped_checkpoint_names_the_first_record_it_no_longer_vouches_for(
    log: Log, data: st.DataObject, change: str
) -> None:
    last = len(log.checkpoints) - 1
    # Dropping the last checkpoint leaves a valid shorter chain: only a copy published elsewhere shows it.
    assume(change != "drop" or last > 0)
    number = data.draw(st.integers(0, last - 1 if change == "drop" else last))
    checkpoints = list(log.checkpoints)
    target = checkpoints[number]
    if change == "drop":
        del checkpoints[number]
    elif change == "tree_size":
        checkpoints[number] = dataclasses.replace(target, tree_size=target.tree_size + 1)
    elif change == "root_hash":
        checkpoints[number] = dataclasses.replace(target, root_hash=flipped(target.root_hash, data))
    else:
        checkpoints[number] = dataclasses.replace(target, signature=flipped(target.signature, data))
    expected = log.checkpoints[number - 1].tree_size if number else 0
    assert problem_seq(dataclasses.replace(log, checkpoints=checkpoints).verify()) == expected


@given(logs(), st.data())
def test_a_checkpoint_signed_with_an_unknown_key_vouches_for_nothing(log: Log, data: st.DataObject) -> None:
    sizes = sorted(data.draw(st.sets(st.integers(1, log.size), min_size=1)))
    checkpoints = signed(log.rows, sizes)
    result = verify_records(TENANT, log.rows, checkpoints, {"another-key": SIGNER.public_key})
    assert problem_seq(result) == 0


# -- retention: purged bodies need a signed tombstone ----------------------------------------------------------------


@given(logs(), st.data())
def test_bodies_emptied_below_a_tombstone_verify_and_any_other_is_named(log: Log, data: st.DataObject) -> None:
    emptied = data.draw(st.sets(st.integers(0, log.size - 1), min_size=1))
    purged_below = data.draw(st.one_of(st.none(), st.integers(1, log.size)))
    hashes = [row[3] for row in log.rows]
    rows = chained([None if seq in emptied else row[1] for seq, row in enumerate(log.rows)], hashes)
    checkpoints = list(log.checkpoints)
    if purged_below is not None:
        previous = checkpoints[-1] if checkpoints else None
        checkpoints += signed(rows, [log.size], kind="tombstone", purged_below=purged_below, after=previous)
    result = verify_records(TENANT, rows, checkpoints, KEYS)
    unexplained = sorted(seq for seq in emptied if purged_below is None or seq >= purged_below)
    if not unexplained:
        assert result.ok, result.problem
        return
    assert problem_seq(result) == unexplained[0]
    assert result.problem is not None
    assert "emptied without a tombstone" in result.problem.message
