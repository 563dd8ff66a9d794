"""The keychain store on real keyring backends: keyrings.cryptfile's CryptFileKeyring (encrypted, a file in tmp_path)
as the active backend, keyrings.alt's PlaintextKeyring to show the refusal and the explicit allow, and keyring's own
fail and null backends."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null
from keyring.backends.chainer import ChainerBackend
from keyrings.alt.file import EncryptedKeyring, PlaintextKeyring
from keyrings.cryptfile.cryptfile import CryptFileKeyring
from keyrings.cryptfile.file import PlaintextKeyring as CryptfilePlaintextKeyring

from chamberlain.vault.backend import BackendUnavailable, SecretNotFound, SecretUnreadable
from chamberlain.vault.keychain import (
    InsecureKeychain,
    KeychainStore,
    insecurity,
    load_kek_from_keychain,
)
from tests.support.canary import watch

ISSUER = "https://gateway.example.com"
TOKEN = "refresh-canary-7f3c1b9e2d"
watch(TOKEN)  # searched for in everything the run logs and prints


def _cryptfile(path: Path, password: str = "test password") -> CryptFileKeyring:
    ring = CryptFileKeyring()
    ring.file_path = str(path)
    # Argon2id at the library's defaults (t=15, 64 MiB) costs 1.5 s per operation; the scheme is the same cheaper.
    ring.time_cost = 2
    ring.memory_cost = 2**12
    ring.keyring_key = password  # unlocks, or creates the file with its password check
    return ring


@pytest.fixture
def active() -> Iterator[None]:
    """Restores whatever backend was active before the test set its own."""
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def cryptfile(tmp_path: Path, active: None) -> CryptFileKeyring:
    ring = _cryptfile(tmp_path / "cryptfile.cfg")
    keyring.set_keyring(ring)
    return ring


@pytest.fixture
def plaintext(tmp_path: Path, active: None) -> PlaintextKeyring:
    ring = PlaintextKeyring()
    ring.file_path = str(tmp_path / "plaintext.cfg")
    keyring.set_keyring(ring)
    return ring


def test_set_get_delete_in_an_encrypted_keychain(cryptfile: CryptFileKeyring) -> None:
    store = KeychainStore(ISSUER)
    assert store.backend_name == "keyrings.cryptfile.cryptfile.CryptFileKeyring"
    assert store.service == "chamberlain:https://gateway.example.com"
    assert store.get("refresh-token") is None
    store.set("refresh-token", TOKEN)
    assert store.get("refresh-token") == TOKEN
    assert keyring.get_password("chamberlain:https://gateway.example.com", "refresh-token") == TOKEN
    on_disk = Path(cryptfile.file_path).read_text()
    assert TOKEN not in on_disk
    assert base64.b64encode(TOKEN.encode()).decode()[:16] not in on_disk
    store.set("refresh-token", TOKEN + "-2")
    assert store.get("refresh-token") == TOKEN + "-2"
    assert store.delete("refresh-token") is True
    assert store.get("refresh-token") is None
    assert store.delete("refresh-token") is False


def test_each_issuer_has_its_own_entries(cryptfile: CryptFileKeyring) -> None:
    KeychainStore(ISSUER).set("refresh-token", TOKEN)
    other = KeychainStore("https://other.example.com/")
    assert other.service == "chamberlain:https://other.example.com"
    assert other.get("refresh-token") is None
    assert KeychainStore(ISSUER + "/").get("refresh-token") == TOKEN


def test_a_tampered_entry_is_an_error_without_the_value(cryptfile: CryptFileKeyring, tmp_path: Path) -> None:
    store = KeychainStore(ISSUER)
    store.set("refresh-token", TOKEN)
    path = Path(cryptfile.file_path)
    text = path.read_text()
    section = text.index("[chamberlain")
    # Flip one base64 character of the entry's encrypted payload: AES-GCM's tag no longer verifies.
    position = text.index("eyJ", section) + 40
    flipped = "A" if text[position] != "A" else "B"
    path.write_text(text[:position] + flipped + text[position + 1 :])
    reopened = _cryptfile(path)
    with pytest.raises(BackendUnavailable, match="could not read 'refresh-token'") as failed:
        KeychainStore(ISSUER, backend=reopened).get("refresh-token")
    assert TOKEN not in str(failed.value)
    assert failed.value.__cause__ is None
    assert failed.value.__context__ is None


def test_the_encrypted_file_needs_its_password(cryptfile: CryptFileKeyring) -> None:
    KeychainStore(ISSUER).set("refresh-token", TOKEN)
    with pytest.raises(ValueError, match=r"MAC check failed|Incorrect Password"):
        _cryptfile(Path(cryptfile.file_path), "another password")


def test_a_locked_encrypted_file_without_a_terminal_is_a_clear_error(
    tmp_path: Path, active: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keyrings.cryptfile asks for its password with getpass; run by Claude Code (apiKeyHelper) there is no terminal
    and getpass raises EOFError, which must become the store's own error."""
    keyring.set_keyring(_cryptfile(tmp_path / "locked.cfg"))  # an entry written with the password, then the file
    KeychainStore(ISSUER).set("refresh-token", TOKEN)  # opened again without it
    locked = CryptFileKeyring()
    locked.file_path = str(tmp_path / "locked.cfg")
    keyring.set_keyring(locked)

    def no_terminal(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", no_terminal)
    with pytest.raises(BackendUnavailable, match="no terminal answered"):
        KeychainStore(ISSUER).get("refresh-token")


def test_a_plaintext_keychain_is_refused_by_default(plaintext: PlaintextKeyring) -> None:
    with pytest.raises(InsecureKeychain) as refused:
        KeychainStore(ISSUER)
    message = str(refused.value)
    assert "keyrings.alt.file.PlaintextKeyring" in message
    assert "plain-text" in message
    assert "--allow-insecure-keychain" in message
    assert not Path(plaintext.file_path).exists()  # nothing was written on the way to refusing


def test_a_plaintext_keychain_works_when_explicitly_allowed(
    plaintext: PlaintextKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    store = KeychainStore(ISSUER, allow_insecure=True)
    store.set("refresh-token", TOKEN)
    assert store.get("refresh-token") == TOKEN
    # Why it is refused otherwise: the token sits in the file, merely base64-encoded.
    assert base64.b64encode(TOKEN.encode()).decode() in Path(plaintext.file_path).read_text()
    assert "explicitly allowed" in caplog.text
    assert TOKEN not in caplog.text


class _ThirdPartyPlaintext(PlaintextKeyring):
    pass


class InsecureNotesKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        pass

    def delete_password(self, service: str, username: str) -> None:
        pass


@pytest.mark.parametrize(
    "backend",
    [
        fail.Keyring(),
        null.Keyring(),
        PlaintextKeyring(),
        CryptfilePlaintextKeyring(),
        _ThirdPartyPlaintext(),
        InsecureNotesKeyring(),
    ],
    ids=lambda backend: type(backend).__name__,
)
def test_insecure_backends_are_recognised_by_class(backend: KeyringBackend) -> None:
    assert insecurity(backend) is not None
    with pytest.raises(InsecureKeychain, match=type(backend).__qualname__):
        KeychainStore(ISSUER, backend=backend)


def test_encrypted_backends_are_accepted(tmp_path: Path) -> None:
    assert insecurity(_cryptfile(tmp_path / "c.cfg")) is None
    assert insecurity(EncryptedKeyring()) is None


def test_a_chain_is_judged_by_the_backend_it_writes_to(tmp_path: Path) -> None:
    encrypted, clear = _cryptfile(tmp_path / "c.cfg"), PlaintextKeyring()
    clear.file_path = str(tmp_path / "p.cfg")

    class EncryptedFirst(ChainerBackend):
        backends: ClassVar[list[KeyringBackend]] = [encrypted, clear]

    class PlaintextFirst(ChainerBackend):
        backends: ClassVar[list[KeyringBackend]] = [clear, encrypted]

    class Empty(ChainerBackend):
        backends: ClassVar[list[KeyringBackend]] = []

    store = KeychainStore(ISSUER, backend=EncryptedFirst())
    assert store.backend_name.endswith("CryptFileKeyring")
    # The chain would fall back to reading the plain-text file; the store reads only the encrypted one.
    clear.set_password(store.service, "refresh-token", "planted in the plain-text file")
    assert store.get("refresh-token") is None
    with pytest.raises(InsecureKeychain, match="PlaintextKeyring"):
        KeychainStore(ISSUER, backend=PlaintextFirst())
    with pytest.raises(InsecureKeychain, match="no OS keychain"):
        KeychainStore(ISSUER, backend=Empty())


def test_an_absent_keychain_allowed_anyway_fails_clearly() -> None:
    store = KeychainStore(ISSUER, allow_insecure=True, backend=fail.Keyring())
    with pytest.raises(BackendUnavailable, match="could not store 'refresh-token'") as failed:
        store.set("refresh-token", TOKEN)
    assert TOKEN not in str(failed.value)
    with pytest.raises(BackendUnavailable, match="could not read"):
        store.get("refresh-token")


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a b", "é"])
def test_entry_names_are_checked(cryptfile: CryptFileKeyring, name: str) -> None:
    with pytest.raises(ValueError, match="invalid keychain entry name"):
        KeychainStore(ISSUER).set(name, TOKEN)


@pytest.mark.parametrize("issuer", ["gateway.example.com", "https://a b", "https://a\nb", ""])
def test_issuers_are_checked(cryptfile: CryptFileKeyring, issuer: str) -> None:
    with pytest.raises(ValueError, match="invalid issuer"):
        KeychainStore(issuer)


# --- the key-encryption key ----------------------------------------------------------------------------------------


def test_the_kek_is_created_on_first_use_when_asked(cryptfile: CryptFileKeyring) -> None:
    store = KeychainStore(ISSUER)
    with pytest.raises(SecretNotFound, match="vault-kek"):
        load_kek_from_keychain(store)
    key = load_kek_from_keychain(store, create=True)
    assert len(key) == 32
    stored = store.get("vault-kek")
    assert stored is not None
    assert len(stored) == 43  # unpadded base64url of 32 bytes
    assert "=" not in stored
    assert base64.urlsafe_b64decode(stored + "=") == key
    assert load_kek_from_keychain(store) == key
    assert load_kek_from_keychain(store, create=True) == key  # never replaced once there
    assert load_kek_from_keychain(KeychainStore(ISSUER), "vault-kek") == key


def test_a_padded_kek_is_read_too(cryptfile: CryptFileKeyring) -> None:
    store = KeychainStore(ISSUER)
    store.set("kek", base64.urlsafe_b64encode(b"k" * 32).decode())
    assert load_kek_from_keychain(store, "kek") == b"k" * 32


@pytest.mark.parametrize(
    "stored",
    [
        base64.urlsafe_b64encode(b"short").decode(),
        base64.urlsafe_b64encode(b"k" * 33).decode(),
        "!!" + base64.urlsafe_b64encode(b"k" * 32).decode(),
        base64.b64encode(b"\xfb" * 32).decode(),  # standard alphabet ('+', '/'), not base64url
        "",
    ],
)
def test_a_malformed_kek_is_refused(cryptfile: CryptFileKeyring, stored: str) -> None:
    store = KeychainStore(ISSUER)
    store.set("kek", stored)
    with pytest.raises(SecretUnreadable, match="'kek'"):
        load_kek_from_keychain(store, "kek")


def test_a_keychain_that_keeps_nothing_cannot_hold_a_kek() -> None:
    store = KeychainStore(ISSUER, allow_insecure=True, backend=null.Keyring())
    with pytest.raises(BackendUnavailable, match="did not keep"):
        load_kek_from_keychain(store, create=True)
