"""The RFC 6962 Merkle tree: known test vectors, agreement with the RFC's recursive definitions, and tampering."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chamberlain.audit.merkle import (
    EMPTY_ROOT,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# The test vectors of the Certificate Transparency implementations, as published in transparency-dev/merkle
# proof/verify_test.go (`leaves`, `roots`, `inclusionProofs`, `consistencyProofs`; the same tree as
# certificate-transparency-go's merkletree tests). Leaf indexes below are 0-based; that file numbers leaves from 1.
LEAVES = [
    bytes.fromhex(data)
    for data in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
LEAF_HASHES = [leaf_hash(data) for data in LEAVES]
ROOTS = [  # ROOTS[n - 1] is the head of the tree of the first n leaves
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
INCLUSION_VECTORS = [  # (leaf index, tree size, audit path)
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY_VECTORS = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hashes(hex_hashes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hex_hashes]


def _flip_bit(proof: Sequence[bytes], element: int, byte: int = 0, bit: int = 3) -> list[bytes]:
    tampered = list(proof)
    corrupted = bytearray(tampered[element])
    corrupted[byte] ^= 1 << bit
    tampered[element] = bytes(corrupted)
    return tampered


# --- The RFC 6962 §2.1 definitions, transcribed literally (recursive, slow): the oracle for the fast versions. ---


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _rfc_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _split(len(d))
    return node_hash(_rfc_mth(d[:k]), _rfc_mth(d[k:]))


def _rfc_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _split(len(d))
    if m < k:
        return [*_rfc_path(m, d[:k]), _rfc_mth(d[k:])]
    return [*_rfc_path(m - k, d[k:]), _rfc_mth(d[:k])]


def _rfc_subproof(m: int, d: Sequence[bytes], whole: bool) -> list[bytes]:
    if m == len(d):
        return [] if whole else [_rfc_mth(d)]
    k = _split(len(d))
    if m <= k:
        return [*_rfc_subproof(m, d[:k], whole), _rfc_mth(d[k:])]
    return [*_rfc_subproof(m - k, d[k:], False), _rfc_mth(d[:k])]


# --- Known vectors ---


def test_the_empty_tree_head_is_the_hash_of_nothing() -> None:
    assert root([]) == EMPTY_ROOT == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert TreeBuilder().root() == EMPTY_ROOT
    assert TreeBuilder().size == 0


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    # RFC 6962 §2.1: leaves are hashed with a 0x00 prefix and interior nodes with 0x01.
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"l" * 32, b"r" * 32) == hashlib.sha256(b"\x01" + b"l" * 32 + b"r" * 32).digest()
    assert leaf_hash(b"l" * 32 + b"r" * 32) != node_hash(b"l" * 32, b"r" * 32)


@pytest.mark.parametrize("size", range(1, 9))
def test_known_roots(size: int) -> None:
    assert root(LEAF_HASHES[:size]) == ROOTS[size - 1]
    builder = TreeBuilder()
    for leaf in LEAF_HASHES[:size]:
        builder.append(leaf)
    assert builder.size == size
    assert builder.root() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_known_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    proof = _hashes(path)
    assert inclusion_proof(LEAF_HASHES[:size], index) == proof
    assert verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size - 1])


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION_VECTORS if v[2]])
def test_known_inclusion_proofs_refuse_every_corruption(index: int, size: int, path: list[str]) -> None:
    proof, leaf, head = _hashes(path), LEAF_HASHES[index], ROOTS[size - 1]
    corruptions: list[tuple[bytes, int, int, list[bytes], bytes]] = [
        (leaf, index - 1, size, proof, head),
        (leaf, index + 1, size, proof, head),
        (leaf, index ^ 2, size, proof, head),
        (leaf, index, size * 2, proof, head),
        (leaf, index, size // 2, proof, head),
        (leaf_hash(b"WrongLeaf"), index, size, proof, head),
        (leaf, index, size, proof, EMPTY_ROOT),
        (leaf, index, size, proof, SOME_HASH),
        (leaf, index, size, [*proof, b""], head),
        (leaf, index, size, [*proof, head], head),
        (leaf, index, size, [b"", *proof], head),
        (leaf, index, size, [head, *proof], head),
        (leaf, index, size, proof[:-1], head),
        (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], head),
    ]
    corruptions += [(leaf, index, size, _flip_bit(proof, i), head) for i in range(len(proof))]
    for corrupted in corruptions:
        assert not verify_inclusion(*corrupted), corrupted


@pytest.mark.parametrize(("old_size", "new_size", "path"), CONSISTENCY_VECTORS)
def test_known_consistency_proofs(old_size: int, new_size: int, path: list[str]) -> None:
    proof = _hashes(path)
    assert consistency_proof(LEAF_HASHES[:new_size], old_size) == proof
    assert verify_consistency(old_size, new_size, ROOTS[old_size - 1], ROOTS[new_size - 1], proof)


@pytest.mark.parametrize(("old_size", "new_size", "path"), [v for v in CONSISTENCY_VECTORS if v[2]])
def test_known_consistency_proofs_refuse_every_corruption(old_size: int, new_size: int, path: list[str]) -> None:
    proof, old, new = _hashes(path), ROOTS[old_size - 1], ROOTS[new_size - 1]
    corruptions: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (old_size - 1, new_size, old, new, proof),
        (old_size + 1, new_size, old, new, proof),
        (old_size ^ 2, new_size, old, new, proof),
        (old_size, new_size * 2, old, new, proof),
        (old_size, new_size // 2, old, new, proof),
        (old_size, new_size, b"WrongRoot", new, proof),
        (old_size, new_size, old, b"WrongRoot", proof),
        (old_size, new_size, SOME_HASH, new, proof),
        (old_size, new_size, old, SOME_HASH, proof),
        (old_size, new_size, new, old, proof),
        (old_size, new_size, old, new, []),
        (old_size, new_size, old, new, [*proof, b""]),
        (old_size, new_size, old, new, [*proof, old]),
        (old_size, new_size, old, new, [*proof, new]),
        (old_size, new_size, old, new, [b"", *proof]),
        (old_size, new_size, old, new, [old, *proof]),
        (old_size, new_size, old, new, [new, *proof]),
        (old_size, new_size, old, new, [proof[0], *proof]),
        (old_size, new_size, old, new, proof[:-1]),
    ]
    corruptions += [(old_size, new_size, old, new, _flip_bit(proof, i, bit=4)) for i in range(len(proof))]
    for corrupted in corruptions:
        assert not verify_consistency(*corrupted), corrupted


# --- Edge cases and malformed input: verification answers False, never raises ---


def test_a_single_leaf_tree_has_the_leaf_as_head_and_an_empty_proof() -> None:
    leaf = leaf_hash(b"data")
    assert root([leaf]) == leaf
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [], SOME_HASH)
    assert not verify_inclusion(SOME_HASH, 0, 1, [], leaf)
    assert not verify_inclusion(b"", 0, 1, [], b"")


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 1), (8, 8), (-1, 8)])
def test_inclusion_outside_the_tree_is_refused(index: int, size: int) -> None:
    assert not verify_inclusion(SOME_HASH, index, size, [], SOME_HASH)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    if 0 <= index < 8 and size:
        # A real path at a valid position must not make an out-of-range claim acceptable.
        assert not verify_inclusion(LEAF_HASHES[0], index, size, inclusion_proof(LEAF_HASHES, 0), ROOTS[7])


PATH_TO_LEAF_0 = inclusion_proof(LEAF_HASHES, 0)


@pytest.mark.parametrize(
    ("leaf", "index", "size", "proof", "head"),
    [
        (LEAF_HASHES[0][:31], 0, 8, PATH_TO_LEAF_0, ROOTS[7]),  # short leaf hash
        (LEAF_HASHES[0], 0, 8, PATH_TO_LEAF_0, ROOTS[7][:31]),  # short root
        (LEAF_HASHES[0], 0, 8, PATH_TO_LEAF_0, ROOTS[7] + b"\x00"),  # long root
        (LEAF_HASHES[0], 0, 8, [PATH_TO_LEAF_0[0][:31], *PATH_TO_LEAF_0[1:]], ROOTS[7]),  # short element
        (LEAF_HASHES[0], 0, 8, [PATH_TO_LEAF_0[0].hex(), *PATH_TO_LEAF_0[1:]], ROOTS[7]),  # text element
        (LEAF_HASHES[0], 0, 8, b"".join(PATH_TO_LEAF_0), ROOTS[7]),  # bytes, not a list of hashes
        (LEAF_HASHES[0], "0", 8, PATH_TO_LEAF_0, ROOTS[7]),
        (LEAF_HASHES[0], 0, 8.0, PATH_TO_LEAF_0, ROOTS[7]),
        (LEAF_HASHES[0].hex(), 0, 8, PATH_TO_LEAF_0, ROOTS[7]),
        (None, 0, 8, PATH_TO_LEAF_0, ROOTS[7]),
    ],
)
def test_malformed_inclusion_input_is_refused_without_raising(
    leaf: bytes, index: int, size: int, proof: list[bytes], head: bytes
) -> None:
    assert verify_inclusion(LEAF_HASHES[0], 0, 8, PATH_TO_LEAF_0, ROOTS[7])
    assert not verify_inclusion(leaf, index, size, proof, head)


def test_consistency_with_the_same_size_needs_the_same_head_and_no_proof() -> None:
    assert verify_consistency(5, 5, ROOTS[4], ROOTS[4], [])
    assert not verify_consistency(5, 5, ROOTS[4], ROOTS[5], [])
    assert not verify_consistency(5, 5, ROOTS[4], ROOTS[4], [ROOTS[4]])
    assert consistency_proof(LEAF_HASHES[:5], 5) == []


def test_every_tree_extends_the_empty_tree_and_only_the_empty_tree_has_the_empty_head() -> None:
    assert consistency_proof(LEAF_HASHES, 0) == []
    assert verify_consistency(0, 8, EMPTY_ROOT, ROOTS[7], [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 8, ROOTS[0], ROOTS[7], [])
    assert not verify_consistency(0, 8, EMPTY_ROOT, ROOTS[7], [EMPTY_ROOT])
    assert not verify_consistency(0, 0, EMPTY_ROOT, ROOTS[0], [])


@pytest.mark.parametrize(
    ("old_size", "new_size"),
    [(1, 0), (2, 1), (9, 8), (-1, 8), (-1, -1), (3, 3.0), ("3", 8)],
)
def test_consistency_backwards_or_with_impossible_sizes_is_refused(old_size: int, new_size: int) -> None:
    assert not verify_consistency(old_size, new_size, ROOTS[2], ROOTS[7], consistency_proof(LEAF_HASHES, 3))
    assert not verify_consistency(old_size, new_size, ROOTS[2], ROOTS[2], [])


def test_malformed_consistency_input_is_refused_without_raising() -> None:
    proof = consistency_proof(LEAF_HASHES, 3)
    assert verify_consistency(3, 8, ROOTS[2], ROOTS[7], proof)
    assert not verify_consistency(3, 8, ROOTS[2][:31], ROOTS[7], proof)
    assert not verify_consistency(3, 8, ROOTS[2], ROOTS[7] + b"\x00", proof)
    assert not verify_consistency(3, 8, ROOTS[2], ROOTS[7], [proof[0][:31], *proof[1:]])
    assert not verify_consistency(3, 8, ROOTS[2], ROOTS[7], [p.hex() for p in proof])  # type: ignore[misc]
    assert not verify_consistency(3, 8, ROOTS[2], ROOTS[7], b"".join(proof))  # type: ignore[arg-type]


def test_proof_generation_refuses_positions_outside_the_tree() -> None:
    for index in (-1, 8):
        with pytest.raises(ValueError, match="outside"):
            inclusion_proof(LEAF_HASHES, index)
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof([], 0)
    for old_size in (-1, 9):
        with pytest.raises(ValueError, match="outside"):
            consistency_proof(LEAF_HASHES, old_size)


def test_tree_builder_refuses_a_leaf_that_is_not_a_hash() -> None:
    builder = TreeBuilder()
    with pytest.raises(ValueError, match="32 bytes"):
        builder.append(b"record")
    assert builder.size == 0


# --- Properties over random trees ---

# Distinct leaves: with duplicates, a path can truly prove a leaf at two positions (e.g. [a, a]).
trees = st.lists(st.binary(max_size=6), min_size=1, max_size=80, unique=True).map(
    lambda data: [leaf_hash(d) for d in data]
)


@given(st.lists(st.binary(max_size=4), max_size=140))
def test_root_and_tree_builder_agree_with_the_rfc_definition_for_every_prefix(data: list[bytes]) -> None:
    leaves = [leaf_hash(d) for d in data]
    builder = TreeBuilder()
    assert builder.root() == root([]) == _rfc_mth([])
    for size, leaf in enumerate(leaves, start=1):
        builder.append(leaf)
        assert builder.size == size
        assert builder.root() == root(leaves[:size]) == _rfc_mth(leaves[:size])


@settings(max_examples=150)
@given(trees, st.data())
def test_every_inclusion_proof_verifies_and_any_change_fails(leaves: list[bytes], data: st.DataObject) -> None:
    size, head = len(leaves), root(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(leaves, index)
    assert proof == _rfc_path(index, leaves)
    assert verify_inclusion(leaves[index], index, size, proof, head)

    for element in range(len(proof)):
        byte, bit = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7))
        assert not verify_inclusion(leaves[index], index, size, _flip_bit(proof, element, byte, bit), head)
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other index")
        assert not verify_inclusion(leaves[index], other, size, proof, head)
        assert not verify_inclusion(leaves[other], index, size, proof, head)
    if proof:
        assert not verify_inclusion(leaves[index], index, size, proof[:-1], head)
    assert not verify_inclusion(leaves[index], index, size, [*proof, head], head)


@settings(max_examples=150)
@given(trees, st.data())
def test_an_inclusion_proof_does_not_verify_against_a_tree_of_another_size(
    leaves: list[bytes], data: st.DataObject
) -> None:
    # The hashes do not commit to the tree size: a signed checkpoint binds a size to its head. So the attack to
    # refuse is a genuine head of another size, not a mismatched (size, head) pair that no checkpoint signs.
    size = data.draw(st.integers(1, len(leaves)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    other_size = data.draw(st.integers(index + 1, len(leaves)).filter(lambda s: s != size), label="other size")
    proof = inclusion_proof(leaves[:size], index)
    assert not verify_inclusion(leaves[index], index, other_size, proof, root(leaves[:other_size]))


@settings(max_examples=150)
@given(trees, st.data())
def test_every_consistency_proof_verifies_and_tampering_fails(leaves: list[bytes], data: st.DataObject) -> None:
    new_size = len(leaves)
    old_size = data.draw(st.integers(1, new_size), label="old size")
    old, new = root(leaves[:old_size]), root(leaves)
    proof = consistency_proof(leaves, old_size)
    assert proof == _rfc_subproof(old_size, leaves, True)
    assert verify_consistency(old_size, new_size, old, new, proof)
    if old_size == new_size:
        return

    for element in range(len(proof)):
        byte, bit = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7))
        assert not verify_consistency(old_size, new_size, old, new, _flip_bit(proof, element, byte, bit))
    assert not verify_consistency(old_size, new_size, old, new, proof[:-1])
    assert not verify_consistency(old_size, new_size, old, new, [*proof, new])
    assert not verify_consistency(old_size, new_size, new, old, proof)
    # A history rewritten anywhere in the old tree changes its head, which the proof then fails to reach.
    rewritten = data.draw(st.integers(0, old_size - 1), label="rewritten leaf")
    forged = [*leaves[:rewritten], leaf_hash(b"forged"), *leaves[rewritten + 1 :]]
    assert not verify_consistency(old_size, new_size, root(forged[:old_size]), new, proof)
    assert not verify_consistency(old_size, new_size, old, root(forged), proof)
    # A genuine head of another size is refused too (sizes are bound to heads by the signed checkpoint).
    other_old = data.draw(st.integers(1, new_size).filter(lambda s: s != old_size), label="other old size")
    assert not verify_consistency(other_old, new_size, root(leaves[:other_old]), new, proof)
    other_new = data.draw(st.integers(old_size + 1, new_size), label="other new size")
    if other_new != new_size:
        assert not verify_consistency(old_size, other_new, old, root(leaves[:other_new]), proof)


@given(
    st.binary(min_size=31, max_size=33),
    st.integers(-2, 70),
    st.integers(-2, 70),
    st.lists(st.binary(min_size=31, max_size=33), max_size=8),
    st.binary(min_size=31, max_size=33),
)
def test_verification_of_arbitrary_input_answers_without_raising(
    first: bytes, number: int, other_number: int, proof: list[bytes], second: bytes
) -> None:
    assert isinstance(verify_inclusion(first, number, other_number, proof, second), bool)
    assert isinstance(verify_consistency(number, other_number, first, second, proof), bool)
