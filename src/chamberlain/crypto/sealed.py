"""Small JSON payloads sealed for a round trip through a browser: an OAuth `state`, a sign-in in progress.

AES-256-GCM under a key derived from the master key for one purpose (RFC 5869), with associated data naming the
purpose and the tenant: a sealed value is unreadable, cannot be altered, and opens for nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chamberlain.crypto.master_key import MasterKey

_VERSION = b"\x01"
_NONCE_BYTES = 12
_TAG_BYTES = 16


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Sealer:
    def __init__(self, master_key: MasterKey, purpose: str, tenant: str, *, max_length: int = 4096) -> None:
        self._aead = AESGCM(master_key.derive(purpose))
        self._associated = f"chamberlain {purpose}\x00{tenant}".encode()
        self._max_length = max_length

    def seal(self, payload: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plaintext = json.dumps(payload, separators=(",", ":")).encode()
        return b64url(_VERSION + nonce + self._aead.encrypt(nonce, plaintext, self._associated))

    def open(self, sealed: str) -> dict[str, Any] | None:
        """The payload, or None for anything not sealed here for this purpose and tenant."""
        if not sealed or len(sealed) > self._max_length:
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        except (binascii.Error, ValueError):
            return None
        if raw[:1] != _VERSION or len(raw) < 1 + _NONCE_BYTES + _TAG_BYTES:
            return None
        nonce, ciphertext = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        try:
            payload = json.loads(self._aead.decrypt(nonce, ciphertext, self._associated))
        except (InvalidTag, ValueError):
            return None
        return payload if isinstance(payload, dict) else None
