"""Key-encryption keys: AES-256-GCM key wrap bound to its associated data, fingerprint ids that reveal nothing, and
loading from the master key, a 0600 file, the environment or a keyring, with errors that never quote a key."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from chamberlain.crypto.master_key import MasterKey
from chamberlain.vault.backend import SecretUnreadable
from chamberlain.vault.kek import (
    KekRing,
    KekUnavailable,
    LocalKek,
    decode_key,
    encode_key,
    load_kek,
    load_kek_ring,
)
from chamberlain.vault.settings import DAY, CredentialKind, KekSource, VaultSettings

KEY = bytes(range(32))
KEK = LocalKek(KEY)


def wrap(kek: LocalKek, data_key: bytes, aad: bytes) -> bytes:
    return asyncio.run(kek.wrap(data_key, aad))


def unwrap(kek: LocalKek, wrapped: bytes, aad: bytes) -> bytes:
    return asyncio.run(kek.unwrap(wrapped, aad))


# -- wrapping ------------------------------------------------------------------------------------------------------


@given(data_key=st.binary(min_size=32, max_size=32), aad=st.binary(max_size=200))
def test_a_wrapped_key_unwraps_to_itself(data_key: bytes, aad: bytes) -> None:
    assert unwrap(KEK, wrap(KEK, data_key, aad), aad) == data_key


@given(data_key=st.binary(min_size=32, max_size=32), aad=st.binary(max_size=64), other=st.binary(max_size=64))
def test_other_associated_data_does_not_unwrap(data_key: bytes, aad: bytes, other: bytes) -> None:
    if other == aad:
        return
    with pytest.raises(SecretUnreadable, match=re.escape(KEK.key_id)):
        unwrap(KEK, wrap(KEK, data_key, aad), other)


def test_every_altered_byte_is_refused() -> None:
    data_key, aad = os.urandom(32), b"tenant/source/name/1"
    wrapped = wrap(KEK, data_key, aad)
    for index in range(len(wrapped)):
        for flip in (0x01, 0x80):
            altered = bytearray(wrapped)
            altered[index] ^= flip
            with pytest.raises(SecretUnreadable):
                unwrap(KEK, bytes(altered), aad)


@pytest.mark.parametrize("cut", [0, 1, 12, 28, -1])
def test_truncated_or_extended_wrapped_keys_are_refused(cut: int) -> None:
    wrapped = wrap(KEK, os.urandom(32), b"aad")
    with pytest.raises(SecretUnreadable):
        unwrap(KEK, wrapped[:cut], b"aad")
    with pytest.raises(SecretUnreadable):
        unwrap(KEK, wrapped + b"\x00", b"aad")


def test_another_kek_does_not_unwrap() -> None:
    wrapped = wrap(KEK, os.urandom(32), b"aad")
    with pytest.raises(SecretUnreadable, match="does not unwrap"):
        unwrap(LocalKek.generate(), wrapped, b"aad")


def test_each_wrap_uses_a_fresh_nonce() -> None:
    data_key = os.urandom(32)
    wrapped = {wrap(KEK, data_key, b"aad") for _ in range(50)}
    assert len(wrapped) == 50
    assert len({item[1:13] for item in wrapped}) == 50


def test_the_key_id_is_a_fingerprint_that_reveals_nothing() -> None:
    assert re.fullmatch(r"local:[0-9a-f]{16}", KEK.key_id)
    assert LocalKek(KEY).key_id == KEK.key_id  # stable: it is stored beside every data key
    assert LocalKek.generate().key_id != KEK.key_id
    for shown in (KEK.key_id, repr(KEK), repr(KekRing(KEK))):
        for form in (KEY.hex(), encode_key(KEY), base64.b64encode(KEY).decode()):
            assert form not in shown
            assert form[:8] not in shown


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_only_256_bit_keys_are_accepted(length: int) -> None:
    with pytest.raises(KekUnavailable, match="32 bytes"):
        LocalKek(os.urandom(length))


# -- loading -------------------------------------------------------------------------------------------------------


def test_the_default_kek_is_derived_from_the_master_key_and_labels_separate_keks() -> None:
    master = MasterKey(os.urandom(32))
    default = load_kek(KekSource(), data_dir=Path("."), master_key=master)
    assert default.key_id == LocalKek(master.derive("vault-kek")).key_id
    assert default.key_id != LocalKek(master.derive("something else")).key_id
    second = load_kek(KekSource(label="vault-kek-2"), data_dir=Path("."), master_key=master)
    assert second.key_id != default.key_id
    with pytest.raises(KekUnavailable, match="master key"):
        load_kek(KekSource(), data_dir=Path("."), master_key=None)


def test_a_key_file_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "vault.kek"
    created = LocalKek.create_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert LocalKek.from_file(path).key_id == created.key_id
    content = path.read_bytes()
    with pytest.raises(KekUnavailable, match="never overwritten"):
        LocalKek.create_file(path)
    assert path.read_bytes() == content


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_a_key_file_other_users_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "vault.kek"
    path.write_text(encode_key(KEY) + "\n")
    path.chmod(mode)
    with pytest.raises(KekUnavailable, match=f"mode {mode:04o}.*chmod 600") as refused:
        LocalKek.from_file(path)
    assert encode_key(KEY) not in str(refused.value)


def test_file_errors_name_the_file_and_never_its_content(tmp_path: Path) -> None:
    missing = tmp_path / "absent.kek"
    with pytest.raises(KekUnavailable, match="no key-encryption key file"):
        LocalKek.from_file(missing)
    short = tmp_path / "short.kek"
    secret_text = encode_key(os.urandom(31))
    short.write_text(secret_text)
    short.chmod(0o600)
    with pytest.raises(KekUnavailable, match="must decode to 32 bytes, not 31") as refused:
        LocalKek.from_file(short)
    assert secret_text not in str(refused.value)
    garbage = tmp_path / "garbage.kek"
    garbage.write_text("not base64 at all !!!")
    garbage.chmod(0o600)
    with pytest.raises(KekUnavailable, match="not valid base64url") as refused:
        LocalKek.from_file(garbage)
    assert "not base64 at all" not in str(refused.value)


def test_a_relative_key_file_is_in_the_data_dir(tmp_path: Path) -> None:
    created = LocalKek.create_file(tmp_path / "vault.kek")
    loaded = load_kek(KekSource(type="file", path=Path("vault.kek")), data_dir=tmp_path, master_key=None)
    assert loaded.key_id == created.key_id


def test_a_key_from_the_environment() -> None:
    environ = {"MY_KEK": encode_key(KEY)}
    loaded = load_kek(KekSource(type="env", variable="MY_KEK"), data_dir=Path("."), master_key=None, environ=environ)
    assert loaded.key_id == KEK.key_id
    with pytest.raises(KekUnavailable, match="environment variable MY_KEK holds no"):
        LocalKek.from_environment("MY_KEK", {})
    with pytest.raises(KekUnavailable, match="must decode to 32 bytes"):
        LocalKek.from_environment("MY_KEK", {"MY_KEK": encode_key(b"short")})


def test_a_key_from_a_keyring_loader() -> None:
    asked: list[tuple[str, str]] = []

    def get_password(service: str, username: str) -> str | None:
        asked.append((service, username))
        return encode_key(KEY)

    source = KekSource(type="keyring", service="svc", username="kek")
    loaded = load_kek(source, data_dir=Path("."), master_key=None, keyring_get=get_password)
    assert loaded.key_id == KEK.key_id
    assert asked == [("svc", "kek")]
    assert LocalKek.from_loader(lambda: KEY, "raw bytes").key_id == KEK.key_id
    with pytest.raises(KekUnavailable, match="no key-encryption key is stored"):
        load_kek(source, data_dir=Path("."), master_key=None, keyring_get=lambda service, username: None)


def test_a_failing_keyring_is_named_by_its_error_type_only() -> None:
    def broken() -> str:
        raise RuntimeError(f"backend said {encode_key(KEY)}")

    with pytest.raises(KekUnavailable, match=r"keyring entry .*\(RuntimeError\)") as refused:
        LocalKek.from_loader(broken, "OS keyring entry chamberlain/vault-kek")
    assert encode_key(KEY) not in str(refused.value)


def test_decode_key_accepts_padding_or_none() -> None:
    padded = base64.urlsafe_b64encode(KEY).decode()
    assert decode_key(padded, "here") == KEY
    assert decode_key(padded.rstrip("="), "here") == KEY


# -- the ring ------------------------------------------------------------------------------------------------------


def test_the_ring_wraps_with_the_current_kek_and_finds_older_ones_by_id() -> None:
    old, new = LocalKek.generate(), LocalKek.generate()
    ring = KekRing(new, [old])
    assert ring.current is new
    assert ring.get(old.key_id) is old
    assert ring.get(new.key_id) is new
    assert ring.get("local:0000000000000000") is None
    assert ring.key_ids == {old.key_id, new.key_id}
    newer = LocalKek.generate()
    rotated = ring.with_current(newer)
    assert rotated.current is newer
    assert rotated.key_ids == {old.key_id, new.key_id, newer.key_id}
    # The current key is never also held as "previous" under the same id.
    assert KekRing(new, [new, old]).key_ids == {old.key_id, new.key_id}


def test_the_ring_follows_the_settings(tmp_path: Path) -> None:
    master = MasterKey(os.urandom(32))
    previous = LocalKek.create_file(tmp_path / "old.kek")
    settings = VaultSettings(
        kek=KekSource(type="master_key", label="vault-kek-2"),
        previous_keks=(KekSource(type="file", path=Path("old.kek")), KekSource()),
    )
    ring = load_kek_ring(settings, data_dir=tmp_path, master_key=master)
    assert ring.current.key_id == LocalKek(master.derive("vault-kek-2")).key_id
    assert ring.get(previous.key_id) is not None
    assert ring.get(LocalKek(master.derive("vault-kek")).key_id) is not None


# -- settings ------------------------------------------------------------------------------------------------------


def test_max_ages_keep_the_defaults_of_kinds_not_given() -> None:
    settings = VaultSettings.model_validate({"max_age_days": {"api_key": 30}})
    assert settings.max_age_for(CredentialKind.API_KEY) == 30 * DAY
    assert settings.max_age_for(CredentialKind.PASSWORD) == 90 * DAY
    assert settings.max_age_for(CredentialKind.REFRESH_TOKEN) is None
    unlimited = VaultSettings.model_validate({"max_age_days": {"password": None}})
    assert unlimited.max_age_for(CredentialKind.PASSWORD) is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kek": {"type": "file"}}, "needs `path`"),
        ({"kek": {"type": "env", "variable": "NOT-A-NAME"}}, "environment variable name"),
        ({"kek": {"type": "kms"}}, "master_key"),
        ({"max_age_days": {"api_key": 0}}, "between 1 and 36500"),
        ({"max_age_days": {"unknown": 3}}, "api_key"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_vault_settings_refuse_mistakes(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VaultSettings.model_validate(values)
