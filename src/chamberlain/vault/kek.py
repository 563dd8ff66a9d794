"""Key-encryption keys held by this process: a 256-bit key that wraps each secret's data key with AES-256-GCM.

The key comes from a file (mode 0600), an environment variable, the OS keyring (through a loader the caller
supplies), or by default from the master key (HKDF, label "vault-kek"). A KEK is named by a fingerprint, never by
anything that reveals it: "local:" and 16 hex digits of HMAC-SHA-256(key, a fixed label), stored beside every data
key it wraps so that rotation knows which to rewrap and reading knows which KEK to ask.

A `KekRing` holds the current KEK (wrapping new data keys) and older ones (only unwrapping, until `rewrap` has moved
every data key to the current one).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import importlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chamberlain.crypto.master_key import MasterKey
from chamberlain.vault.backend import KeyEncryptionKey, SecretUnreadable, VaultError
from chamberlain.vault.settings import KekSource, VaultSettings

KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAP_FORMAT = b"\x01"  # a leading format byte: a later wrapping scheme can be told apart from this one
_KEY_ID_LABEL = b"chamberlain vault kek id v1"
DEFAULT_MASTER_KEY_LABEL = "vault-kek"

KeyringGet = Callable[[str, str], str | None]  # keyring.get_password(service, username)


class KekUnavailable(VaultError):
    """The key-encryption key cannot be loaded: missing, malformed, or its file is readable by others."""


class LocalKek:
    """AES-256-GCM key wrap with a random 96-bit nonce (NIST SP 800-38D §8.2.2: random nonces are safe for far
    more messages than a vault wraps under one key) and the secret's associated data, so a wrapped key copied to
    another secret, tenant or version does not unwrap."""

    __slots__ = ("_aead", "_key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KekUnavailable(f"a key-encryption key must be {KEY_BYTES} bytes (256 bits), not {len(key)}")
        self._aead = AESGCM(key)
        self._key_id = "local:" + hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"LocalKek(key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        return self._key_id

    async def wrap(self, data_key: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _WRAP_FORMAT + nonce + self._aead.encrypt(nonce, data_key, associated_data)

    async def unwrap(self, wrapped: bytes, associated_data: bytes) -> bytes:
        if len(wrapped) < 1 + _NONCE_BYTES + _TAG_BYTES or wrapped[:1] != _WRAP_FORMAT:
            raise SecretUnreadable(f"the wrapped data key is not in the format of key-encryption key {self._key_id}")
        try:
            return self._aead.decrypt(wrapped[1 : 1 + _NONCE_BYTES], wrapped[1 + _NONCE_BYTES :], associated_data)
        except InvalidTag:
            raise SecretUnreadable(
                f"the data key does not unwrap under key-encryption key {self._key_id}: it was altered, belongs to "
                "another secret, or was wrapped by another key"
            ) from None

    # -- loading -------------------------------------------------------------------------------------------------

    @classmethod
    def generate(cls) -> LocalKek:
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def from_master_key(cls, master_key: MasterKey, label: str = DEFAULT_MASTER_KEY_LABEL) -> LocalKek:
        """The default: no new key to keep, and a new label gives a new KEK (rotation without a new file)."""
        return cls(master_key.derive(label))

    @classmethod
    def from_environment(cls, variable: str, environ: Mapping[str, str] | None = None) -> LocalKek:
        environ = os.environ if environ is None else environ
        encoded = environ.get(variable)
        if not encoded:
            raise KekUnavailable(f"environment variable {variable} holds no key-encryption key")
        return cls(decode_key(encoded, f"environment variable {variable}"))

    @classmethod
    def from_file(cls, path: Path) -> LocalKek:
        """Refuses a file that other users can read or write, as ssh does with private keys: the KEK decrypts
        every data key, so a world-readable copy is a leak waiting to happen."""
        try:
            with open(path, "rb") as handle:  # one descriptor for the check and the read: nothing swaps the file
                mode = os.fstat(handle.fileno()).st_mode
                if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise KekUnavailable(
                        f"{path}: the key-encryption key file is accessible to other users "
                        f"(mode {stat.S_IMODE(mode):04o}): run 'chmod 600 {path}'"
                    )
                encoded = handle.read().decode("ascii", "replace").strip()
        except FileNotFoundError:
            raise KekUnavailable(f"{path}: no key-encryption key file") from None
        return cls(decode_key(encoded, str(path)))

    @classmethod
    def create_file(cls, path: Path) -> LocalKek:
        """A new random KEK written to `path` (created 0600, never overwritten)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        kek_bytes = AESGCM.generate_key(bit_length=256)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KekUnavailable(f"{path} already exists: a key file is never overwritten") from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(encode_key(kek_bytes) + "\n")
        return cls(kek_bytes)

    @classmethod
    def from_loader(cls, load: Callable[[], str | bytes | None], where: str) -> LocalKek:
        """A key from anywhere else (the OS keyring): `load` returns base64url text, or the raw 32 bytes."""
        try:
            loaded = load()
        except VaultError:
            raise
        except Exception as problem:  # a keyring backend's own error: its type says enough, its text may not be ours
            raise KekUnavailable(f"{where}: cannot load the key-encryption key ({type(problem).__name__})") from None
        if loaded is None or loaded in ("", b""):
            raise KekUnavailable(f"{where}: no key-encryption key is stored there")
        if isinstance(loaded, bytes) and len(loaded) == KEY_BYTES:
            return cls(loaded)
        text = loaded.decode("ascii", "replace") if isinstance(loaded, bytes) else loaded
        return cls(decode_key(text.strip(), where))


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def decode_key(encoded: str, where: str) -> bytes:
    """base64url of 32 bytes (padding optional). The message names where it came from, never what it holds."""
    try:
        # Strict: the lenient decoder skips characters outside the alphabet, so a garbled key could still decode.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise KekUnavailable(f"{where}: the key-encryption key is not valid base64url") from None
    if len(key) != KEY_BYTES:
        raise KekUnavailable(f"{where}: the key-encryption key must decode to {KEY_BYTES} bytes, not {len(key)}")
    return key


class KekRing:
    """The current KEK and older ones by key id. Only the current one wraps; any of them unwraps what it wrapped."""

    def __init__(self, current: KeyEncryptionKey, previous: Iterable[KeyEncryptionKey] = ()) -> None:
        self._current = current
        self._by_id: dict[str, KeyEncryptionKey] = {kek.key_id: kek for kek in previous}
        self._by_id[current.key_id] = current

    def __repr__(self) -> str:
        return f"KekRing(current={self._current.key_id!r}, key_ids={sorted(self._by_id)!r})"

    @property
    def current(self) -> KeyEncryptionKey:
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    def get(self, key_id: str) -> KeyEncryptionKey | None:
        return self._by_id.get(key_id)

    def with_current(self, current: KeyEncryptionKey) -> KekRing:
        """This ring with `current` as the wrapping key and every key it holds now (the old current too) kept for
        unwrapping: the ring a rotation to `current` runs with."""
        return KekRing(current, [kek for kek in self._by_id.values() if kek.key_id != current.key_id])


def load_kek(
    source: KekSource,
    *,
    data_dir: Path,
    master_key: MasterKey | None,
    environ: Mapping[str, str] | None = None,
    keyring_get: KeyringGet | None = None,
) -> LocalKek:
    """The KEK a `vault.kek` (or `vault.previous_keks`) entry names."""
    if source.type == "master_key":
        if master_key is None:
            raise KekUnavailable("the vault's key-encryption key is derived from the master key, which is not loaded")
        return LocalKek.from_master_key(master_key, source.label)
    if source.type == "env":
        return LocalKek.from_environment(source.variable, environ)
    if source.type == "file":
        assert source.path is not None  # the settings model requires it
        return LocalKek.from_file(source.path if source.path.is_absolute() else data_dir / source.path)
    get = keyring_get or _keyring_get_password()
    return LocalKek.from_loader(lambda: get(source.service, source.username), source.describe())


def load_kek_ring(
    settings: VaultSettings,
    *,
    data_dir: Path,
    master_key: MasterKey | None,
    environ: Mapping[str, str] | None = None,
    keyring_get: KeyringGet | None = None,
) -> KekRing:
    def load(source: KekSource) -> LocalKek:
        return load_kek(source, data_dir=data_dir, master_key=master_key, environ=environ, keyring_get=keyring_get)

    return KekRing(load(settings.kek), [load(source) for source in settings.previous_keks])


def _keyring_get_password() -> KeyringGet:
    """`keyring.get_password`, imported only when a keyring KEK is configured (the package is optional)."""
    with contextlib.suppress(ImportError):
        module = importlib.import_module("keyring")
        get: KeyringGet = module.get_password
        return get

    def missing(service: str, username: str) -> str | None:
        raise KekUnavailable("a keyring KEK is configured but the 'keyring' package is not installed")

    return missing
