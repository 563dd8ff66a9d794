"""The envelope format: associated data that names exactly one (tenant, source, name, version), AES-256-GCM under a
fresh data key, and every alteration refused."""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.vault.backend import SecretRef
from chamberlain.vault.envelope import CIPHERTEXT_FORMAT, associated_data, seal, unseal

NAME_ALPHABET = "abcAB019._-"
names = st.text(alphabet=NAME_ALPHABET, min_size=1, max_size=12).filter(lambda name: name[0] not in "._-")
tenants = st.text(max_size=12)
refs = st.builds(SecretRef, tenant=tenants, source=names, name=names)
versions = st.integers(min_value=1, max_value=10**9)


@given(first=refs, first_version=versions, second=refs, second_version=versions)
def test_associated_data_is_unambiguous(
    first: SecretRef, first_version: int, second: SecretRef, second_version: int
) -> None:
    """Two different (tenant, source, name, version) never encode alike, so a row cannot pass for another."""
    same = (first, first_version) == (second, second_version)
    assert (associated_data(first, first_version) == associated_data(second, second_version)) == same


def test_associated_data_separates_fields_that_concatenate_alike() -> None:
    pairs = [
        (SecretRef("t", "ab", "c"), SecretRef("t", "a", "bc")),
        (SecretRef("ta", "b", "c"), SecretRef("t", "ab", "c")),
        (SecretRef("t/a", "b", "c"), SecretRef("t", "a", "b")),
    ]
    for first, second in pairs:
        assert associated_data(first, 1) != associated_data(second, 1)
    assert associated_data(SecretRef("t", "a", "b"), 1) != associated_data(SecretRef("t", "a", "b"), 11)


@given(value=st.binary(max_size=4096), ref=refs, version=versions)
def test_a_sealed_value_opens_to_itself(value: bytes, ref: SecretRef, version: int) -> None:
    data_key = AESGCM.generate_key(bit_length=256)
    aad = associated_data(ref, version)
    sealed = seal(value, data_key, aad)
    assert sealed[0] == CIPHERTEXT_FORMAT
    assert len(sealed) == 1 + 12 + len(value) + 16
    assert unseal(sealed, data_key, aad) == value


@given(value=st.binary(min_size=1, max_size=64), data=st.data())
def test_every_altered_byte_is_refused(value: bytes, data: st.DataObject) -> None:
    data_key = AESGCM.generate_key(bit_length=256)
    aad = associated_data(SecretRef("t", "s", "n"), 1)
    sealed = bytearray(seal(value, data_key, aad))
    index = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    sealed[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(InvalidTag):
        unseal(bytes(sealed), data_key, aad)


def test_another_secrets_associated_data_or_key_is_refused() -> None:
    data_key = AESGCM.generate_key(bit_length=256)
    ref = SecretRef("tenant-a", "github", "token")
    sealed = seal(b"value", data_key, associated_data(ref, 3))
    for other in (
        associated_data(SecretRef("tenant-b", "github", "token"), 3),
        associated_data(SecretRef("tenant-a", "gitlab", "token"), 3),
        associated_data(SecretRef("tenant-a", "github", "token2"), 3),
        associated_data(ref, 2),
    ):
        with pytest.raises(InvalidTag):
            unseal(sealed, data_key, other)
    with pytest.raises(InvalidTag):
        unseal(sealed, AESGCM.generate_key(bit_length=256), associated_data(ref, 3))


@pytest.mark.parametrize("length", [0, 1, 13, 28])
def test_short_ciphertexts_are_refused(length: int) -> None:
    with pytest.raises(InvalidTag):
        unseal(os.urandom(length), AESGCM.generate_key(bit_length=256), b"")


def test_a_ciphertext_of_another_format_is_refused() -> None:
    data_key = AESGCM.generate_key(bit_length=256)
    sealed = seal(b"value", data_key, b"aad")
    with pytest.raises(InvalidTag):
        unseal(b"\x02" + sealed[1:], data_key, b"aad")


def test_each_seal_is_fresh() -> None:
    data_key = AESGCM.generate_key(bit_length=256)
    assert len({seal(b"same value", data_key, b"aad") for _ in range(20)}) == 20
