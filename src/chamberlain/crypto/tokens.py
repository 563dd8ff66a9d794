"""Opaque secrets (codes, refresh tokens, client secrets, session ids) and how they are stored.

Each is 256 bits from the OS CSPRNG, so a single SHA-256 digest is enough to store it: nobody can brute-force
a 256-bit preimage, and a slow password hash would only cost every token request milliseconds for nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret() -> str:
    """32 random bytes, base64url without padding (43 characters)."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def digest_matches(secret: str, expected: bytes) -> bool:
    return hmac.compare_digest(digest(secret), expected)
