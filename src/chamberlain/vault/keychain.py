"""The OS keychain through `keyring` (macOS Keychain, Windows Credential Manager, Secret Service, KWallet), for the
desktop CLI's own secrets: the `chamberlain login` refresh token, and a local key-encryption key.

Entries live under the service "chamberlain:{issuer}", one account name per secret, so two gateways' tokens never
mix. Backends that keep secrets in plain text (keyrings.alt's PlaintextKeyring and its kind) or keep nothing at all
(keyring's fail and null backends) are refused by class unless the caller explicitly allows them, since a refresh
token written there is readable by anything that can read the user's files. Encrypted file backends
(keyrings.cryptfile's CryptFileKeyring, keyrings.alt's EncryptedKeyring) count as encrypted.

`keyring` is synchronous and may wait on the user (a keychain unlock prompt): async callers run these methods in
a worker thread. Values never appear in exceptions, reprs or logs.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets

import keyring
import keyring.errors
from keyring.backend import KeyringBackend
from keyring.backends.chainer import ChainerBackend

from chamberlain.vault.backend import BackendUnavailable, SecretNotFound, SecretUnreadable, check_name

logger = logging.getLogger(__name__)

SERVICE = "chamberlain"
ALLOW_FLAG = "--allow-insecure-keychain"
KEK_ENTRY = "vault-kek"
KEK_BYTES = 32
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")

# Backends known to keep secrets in the clear or not at all, by qualified class name (a subclass counts too), so
# the check needs none of them installed.
_INSECURE: dict[str, str] = {
    "keyring.backends.fail.Keyring": "there is no OS keychain (keyring found no usable backend)",
    "keyring.backends.null.Keyring": "it discards every secret (keyring's null backend)",
    "keyrings.alt.file.PlaintextKeyring": "it stores secrets in a plain-text file",
    "keyrings.alt.pyfs.PlaintextKeyring": "it stores secrets in a plain-text file",
    "keyrings.cryptfile.file.PlaintextKeyring": "it stores secrets in a plain-text file",
}
# Class names that announce the same of backends not listed above (third-party "insecure" or "plaintext" ones).
_INSECURE_WORDS = ("plaintext", "insecure", "obfuscat", "unencrypted")


class InsecureKeychain(BackendUnavailable):
    """The active keyring backend keeps secrets in plain text (or nowhere), and it was not explicitly allowed."""


def backend_name(backend: KeyringBackend) -> str:
    kind = type(backend)
    return f"{kind.__module__}.{kind.__qualname__}"


def _effective(backend: KeyringBackend) -> KeyringBackend:
    """The backend that really holds the entries. keyring's chainer reads from every backend it chains (a plain-text
    one included) and writes to the first: use that first one directly, so nothing is read from the others."""
    if isinstance(backend, ChainerBackend):
        chained = list(backend.backends)
        if chained:
            return _effective(chained[0])
    inner = getattr(backend, "_keyring", None)  # keyrings.alt's MultipartKeyringWrapper stores in the one it wraps
    if type(backend).__name__ == "MultipartKeyringWrapper" and isinstance(inner, KeyringBackend):
        return _effective(inner)
    return backend


def insecurity(backend: KeyringBackend) -> str | None:
    """Why `backend` must not hold secrets, or None when it encrypts them (or the OS keychain does)."""
    if isinstance(backend, ChainerBackend) and not list(backend.backends):
        return "there is no OS keychain (keyring found no backend to chain)"
    for kind in type(backend).__mro__:
        reason = _INSECURE.get(f"{kind.__module__}.{kind.__qualname__}")
        if reason is not None:
            return reason
    name = type(backend).__qualname__.lower()
    if any(word in name for word in _INSECURE_WORDS):
        return "its class says it does not encrypt secrets"
    return None


class KeychainStore:
    """Named secrets of one Chamberlain issuer in the OS keychain.

    Refuses (InsecureKeychain) a plain-text or absent keychain unless `allow_insecure`: the CLI passes it from
    --allow-insecure-keychain, never by default.
    """

    def __init__(self, issuer: str, *, allow_insecure: bool = False, backend: KeyringBackend | None = None) -> None:
        if not issuer.startswith(("https://", "http://")) or any(ord(c) < 0x21 for c in issuer):
            raise ValueError(f"invalid issuer {issuer!r}: an http(s) URL")
        self.issuer = issuer.rstrip("/")
        self.service = f"{SERVICE}:{self.issuer}"
        self._backend = _effective(backend if backend is not None else keyring.get_keyring())
        self.backend_name = backend_name(self._backend)
        reason = insecurity(self._backend)
        if reason is not None:
            if not allow_insecure:
                raise InsecureKeychain(
                    f"refusing the keyring backend {self.backend_name}: {reason}. Set up an OS keychain (macOS "
                    "Keychain, Windows Credential Manager, or Secret Service with GNOME Keyring or KWallet), or an "
                    "encrypted one (keyrings.cryptfile), and select it with PYTHON_KEYRING_BACKEND; or accept this "
                    f"one explicitly with {ALLOW_FLAG}"
                )
            logger.warning("using the keyring backend %s although %s (explicitly allowed)", self.backend_name, reason)

    def __repr__(self) -> str:
        return f"KeychainStore({self.service!r}, backend={self.backend_name!r})"

    def get(self, name: str) -> str | None:
        check_name(name, "keychain entry name")
        try:
            return self._backend.get_password(self.service, name)
        except (keyring.errors.KeyringError, ValueError, OSError, RuntimeError, EOFError) as problem:
            failure = self._failure("read", name, problem)
        raise failure

    def set(self, name: str, value: str) -> None:
        check_name(name, "keychain entry name")
        try:
            self._backend.set_password(self.service, name, value)
            return
        except (keyring.errors.KeyringError, ValueError, OSError, RuntimeError, EOFError) as problem:
            failure = self._failure("store", name, problem)
        raise failure

    def delete(self, name: str) -> bool:
        """Removes the entry; False when there was none."""
        if self.get(name) is None:
            return False
        try:
            self._backend.delete_password(self.service, name)
            return True
        except keyring.errors.PasswordDeleteError:
            return False  # gone meanwhile
        except (keyring.errors.KeyringError, ValueError, OSError, RuntimeError, EOFError) as problem:
            failure = self._failure("delete", name, problem)
        raise failure

    def _failure(self, what: str, name: str, problem: Exception) -> BackendUnavailable:
        # The backend's own message is not reused: some echo what they were given.
        why = (
            "it asks for its password and no terminal answered"  # keyrings.cryptfile under a non-interactive caller
            if isinstance(problem, EOFError)
            else type(problem).__name__
        )
        return BackendUnavailable(
            f"the keychain ({self.backend_name}) could not {what} {name!r} of {self.service} ({why})"
        )


def load_kek_from_keychain(store: KeychainStore, name: str = KEK_ENTRY, *, create: bool = False) -> bytes:
    """A 32-byte key-encryption key kept in the keychain as unpadded base64url (RFC 4648 §5), for LocalKek.

    With `create`, a missing key is generated (256 random bits) and stored; the stored entry is read back, so a
    keychain that silently drops writes is caught here rather than when the data it wrapped cannot be read.
    """
    encoded = store.get(name)
    if encoded is None:
        if not create:
            raise SecretNotFound(
                f"no key-encryption key {name!r} in the keychain ({store.backend_name}) for {store.service}"
            )
        key = secrets.token_bytes(KEK_BYTES)
        store.set(name, base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii"))
        encoded = store.get(name)
        if encoded is None:
            raise BackendUnavailable(f"the keychain ({store.backend_name}) did not keep the new key {name!r}")
        # Another process may have created the key at the same moment: the stored one wins, for both.
    return _decode_kek(encoded, name)


def _decode_kek(encoded: str, name: str) -> bytes:
    text = encoded.strip()
    # urlsafe_b64decode alone skips characters outside the alphabet: check the alphabet first.
    if not _BASE64URL.fullmatch(text):
        raise SecretUnreadable(f"the keychain entry {name!r} is not base64url")
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SecretUnreadable(f"the keychain entry {name!r} is not base64url") from None
    if len(key) != KEK_BYTES:
        raise SecretUnreadable(f"the keychain entry {name!r} is not a {KEK_BYTES}-byte key")
    return key
