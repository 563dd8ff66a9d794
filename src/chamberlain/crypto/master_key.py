"""The master key: encrypts what the store must keep secret at rest (signing keys, TOTP seeds).

It lives outside the database, so a leaked database dump alone reveals no key: in `CHAMBERLAIN_MASTER_KEY`
(base64url, 32 bytes; what replicas share) or in `master.key` in the data directory (mode 0600).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENV_VARIABLE = "CHAMBERLAIN_MASTER_KEY"
FILE_NAME = "master.key"
_NONCE_BYTES = 12


class MasterKeyError(Exception):
    pass


class MasterKey:
    """AES-256-GCM with a fresh 96-bit nonce per message; the associated data binds a ciphertext to its row."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise MasterKeyError("the master key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, purpose: str) -> bytes:
        """A 256-bit subkey for one purpose (RFC 5869 HKDF), so no two uses ever share key material."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(self._key)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        try:
            return self._aead.decrypt(ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise MasterKeyError(
                "cannot decrypt with this master key: it is not the key the data was written with"
            ) from None


def load_master_key(data_dir: Path, environ: Mapping[str, str] | None = None, *, create: bool = False) -> MasterKey:
    environ = os.environ if environ is None else environ
    encoded = environ.get(ENV_VARIABLE)
    if encoded:
        return MasterKey(_decode(encoded, ENV_VARIABLE))
    path = data_dir / FILE_NAME
    if path.is_file():
        return MasterKey(_decode(path.read_text().strip(), str(path)))
    if not create:
        raise MasterKeyError(f"no master key: set {ENV_VARIABLE} or run 'chamberlain init' to create {path}")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.urlsafe_b64encode(key).decode().rstrip("=") + "\n")
    return MasterKey(key)


def _decode(encoded: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{where}: the master key is not valid base64url") from None
    if len(key) != 32:
        raise MasterKeyError(f"{where}: the master key must decode to 32 bytes, not {len(key)}")
    return key
